package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Snapshot format (version 1), streamed so that no snapshot is ever held
// in memory whole:
//
//	magic    "HERALDS1"
//	group    uvarint (the group it was taken from; informational)
//	records  { uvarint len(key) > 0, key without the group prefix,
//	           uvarint len(value), value }*
//	end      uvarint 0
//	count    uvarint number of records
//	crc      4 bytes big endian: CRC-32C of everything before it
var snapshotMagic = []byte("HERALDS1")

const (
	maxSnapshotKey   = MaxRoomBytes + MaxKeyBytes + 64
	maxSnapshotValue = MaxPayloadBytes + 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot wraps every problem with a snapshot's bytes.
var ErrBadSnapshot = errors.New("bad snapshot")

// Snapshot captures a consistent read view of the group's keys and returns
// at once; Persist streams it. Apply may run while Persist does.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if err := f.refuseApply(); err != nil {
		return nil, fmt.Errorf("fsm: snapshot group %d: %w", f.group, err)
	}
	if err := f.Damaged(); err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &snapshot{txn: f.db.NewTransaction(false), keys: f.keys, group: f.group, note: f.noteCorrupt}, nil
}

type snapshot struct {
	txn   *badger.Txn
	keys  keyspace
	group uint64
	// note records corruption met while streaming as the FSM's damage.
	note func(error) error
}

// Persist writes the snapshot to sink and closes it, or cancels it on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.writeTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot of group %d: %w", s.group, err)
	}
	return sink.Close()
}

// Release ends the read view.
func (s *snapshot) Release() { s.txn.Discard() }

func (s *snapshot) writeTo(w io.Writer) error {
	sw, err := newSnapshotWriter(w, s.group)
	if err != nil {
		return err
	}
	prefix := s.keys.prefix
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := s.txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		if err := sw.field(item.Key()[len(prefix):]); err != nil {
			return err
		}
		// Every record is checked as it goes out: a snapshot is how a
		// replica's data reaches the others, and damage must stop here.
		err := item.Value(func(v []byte) error {
			if err := s.keys.checkRecord(item.Key(), v); err != nil {
				return corrupt("snapshot", item.KeyCopy(nil), err)
			}
			return sw.field(v)
		})
		if err != nil {
			return s.note(storageErr(item.KeyCopy(nil), err))
		}
		sw.count++
	}
	return sw.finish()
}

// snapshotWriter writes the snapshot format; call field twice per record
// (key, value), count each record, then finish.
type snapshotWriter struct {
	w       io.Writer
	bw      *bufio.Writer
	crc     hash.Hash32
	count   uint64
	scratch []byte
}

func newSnapshotWriter(w io.Writer, group uint64) (*snapshotWriter, error) {
	crc := crc32.New(castagnoli)
	sw := &snapshotWriter{w: w, crc: crc, bw: bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)}
	if _, err := sw.bw.Write(snapshotMagic); err != nil {
		return nil, err
	}
	_, err := sw.bw.Write(binary.AppendUvarint(nil, group))
	return sw, err
}

func (sw *snapshotWriter) field(b []byte) error {
	sw.scratch = binary.AppendUvarint(sw.scratch[:0], uint64(len(b)))
	if _, err := sw.bw.Write(sw.scratch); err != nil {
		return err
	}
	_, err := sw.bw.Write(b)
	return err
}

func (sw *snapshotWriter) finish() error {
	if _, err := sw.bw.Write(binary.AppendUvarint([]byte{0}, sw.count)); err != nil {
		return err
	}
	if err := sw.bw.Flush(); err != nil {
		return err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(nil, sw.crc.Sum32()))
	return err
}

// Restore replaces the group's state with a snapshot's. It first marks the
// group as restoring (outside the group's keys), so a crash or a bad
// snapshot leaves a state that says it needs a restore instead of a
// half-written one; a later successful Restore clears the mark.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	if err := f.restore(rc); err != nil {
		f.needsRestore.Store(true)
		f.resetMemory()
		return fmt.Errorf("fsm: restore group %d: %w", f.group, err)
	}
	if err := f.forgetCuts(); err != nil {
		return err
	}
	f.failed = nil
	f.damaged.Store(nil)
	return nil
}

func (f *FSM) restore(r io.Reader) error {
	mark := restoreMarkKey(f.group)
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Set(mark, []byte{1}) }); err != nil {
		return err
	}
	f.needsRestore.Store(true)
	f.resetMemory()
	if err := f.clearGroup(); err != nil {
		return err
	}
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	if err := readSnapshot(r, func(k, v []byte) error {
		key := append(bytes.Clone(f.keys.prefix), k...)
		if err := f.keys.checkRecord(key, v); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		return wb.Set(key, upgradeRecord(key, v))
	}); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Delete(mark) }); err != nil {
		return err
	}
	return f.load()
}

// resetMemory drops the in-memory state (the stored state is being
// replaced). Subscribers are ended with ErrLagged: the state jumps past
// events they will never be sent, so they re-read history.
func (f *FSM) resetMemory() {
	f.mu.Lock()
	f.subs.closeAll(ErrLagged)
	f.rooms = make(map[string]*room)
	f.nodes = make(map[string]map[memberRef]struct{})
	f.mu.Unlock()
	f.dirty = make(map[string]struct{})
	f.graves = make(map[string]graveRef)
	f.applied = appliedState{}
	f.appliedIndex.Store(0)
}

// clearGroup deletes every key of the group, in write batches, so other
// groups on the store keep writing meanwhile.
func (f *FSM) clearGroup() error {
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	err := f.db.View(func(txn *badger.Txn) error {
		return scanPrefix(txn, f.keys.prefix, false, func(k, _ []byte) error {
			return wb.Delete(bytes.Clone(k))
		})
	})
	if err != nil {
		return err
	}
	return wb.Flush()
}

// readSnapshot parses a snapshot stream, calling fn for every record (key
// without the group prefix). fn's arguments are fresh slices it may keep.
// Any malformed input yields an error wrapping ErrBadSnapshot.
func readSnapshot(r io.Reader, fn func(k, v []byte) error) error {
	cr := &crcReader{r: bufio.NewReaderSize(r, 64<<10), crc: crc32.New(castagnoli)}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadSnapshot}, args...)...)
	}
	magic := make([]byte, len(snapshotMagic))
	if err := cr.readFull(magic); err != nil {
		return bad("reading header: %v", err)
	}
	if !bytes.Equal(magic, snapshotMagic) {
		return bad("header %q is not a Herald state snapshot (want %q)", magic, snapshotMagic)
	}
	if _, err := binary.ReadUvarint(cr); err != nil {
		return bad("reading group: %v", err)
	}
	var count uint64
	for {
		klen, err := binary.ReadUvarint(cr)
		if err != nil {
			return bad("record %d: reading key length: %v", count, err)
		}
		if klen == 0 {
			break
		}
		if klen > maxSnapshotKey {
			return bad("record %d: key of %d bytes exceeds %d", count, klen, maxSnapshotKey)
		}
		k := make([]byte, klen)
		if err := cr.readFull(k); err != nil {
			return bad("record %d: reading key: %v", count, err)
		}
		vlen, err := binary.ReadUvarint(cr)
		if err != nil {
			return bad("record %d: reading value length: %v", count, err)
		}
		if vlen > maxSnapshotValue {
			return bad("record %d: value of %d bytes exceeds %d", count, vlen, maxSnapshotValue)
		}
		v := make([]byte, vlen)
		if err := cr.readFull(v); err != nil {
			return bad("record %d: reading value: %v", count, err)
		}
		if err := fn(k, v); err != nil {
			return err
		}
		count++
	}
	n, err := binary.ReadUvarint(cr)
	if err != nil {
		return bad("reading record count: %v", err)
	}
	if n != count {
		return bad("trailer counts %d records, stream had %d", n, count)
	}
	want := cr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return bad("reading checksum: %v", err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return bad("checksum %08x does not match content %08x", got, want)
	}
	if _, err := cr.r.ReadByte(); err != io.EOF {
		return bad("unexpected bytes after the checksum")
	}
	return nil
}

// crcReader checksums exactly the bytes consumed, not bufio's read-ahead.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	one [1]byte
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.one[0] = b
		c.crc.Write(c.one[:])
	}
	return b, err
}

func (c *crcReader) readFull(p []byte) error {
	if _, err := io.ReadFull(c.r, p); err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	c.crc.Write(p)
	return nil
}
