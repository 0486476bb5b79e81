package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/internal/wire"
)

// The wal backend keeps the raft logs and stable values of every group on
// a node in one append-only log: segment files written by one goroutine,
// which turns the writes of all groups waiting at that moment into one
// write(2) and one fdatasync. An entry is found through an in-memory index
// of where it lies and read back with one pread. Nothing is inserted into
// an LSM tree and nothing is memory-mapped, so a write costs its encoding,
// a copy into the page cache and its share of one sync (badger's DB.Sync
// is two msyncs, one of them of a value log Herald never writes).
//
// A segment, wal-<sequence in hex>.log, is a sequence of records:
//
//	uint32 LE  length of the body (1 .. maxWALRecord)
//	uint32 LE  CRC-32C of the body
//	body:      byte kind, uvarint group, then by kind:
//	  walCreate      nothing: the group exists (Group on a new group)
//	  walEntry       uvarint index, the entry as encodeLog writes it
//	                 (with its own checksum, verified on every read)
//	  walDelete      uvarint lo, uvarint hi
//	  walStable      uvarint len(key), key, then the value to the end
//	  walDrop        nothing: the group and all its data are gone
//	  walCheckpoint  (group 0) uvarint count, then per group: uvarint id,
//	                 uvarint count, per value: uvarint len, key, uvarint
//	                 len, value
//
// Every segment begins with a checkpoint: the groups and their stable
// values at that moment. A segment is removed, oldest first, once no entry
// of the index lies in it; the checkpoint of the next one still says what
// its stable records and creates said. Beyond walKeepSegments segments, the
// entries still live in the oldest one are written again at the end, so a
// group raft never compacts cannot hold the log's disk for good. The
// directory is synced after every create and every removal, so removals
// are durable in order.
//
// Open replays every segment in order and syncs each (a killed process can
// leave a write readable in the page cache but not on disk, and what Open
// reads, raft builds on). A record that fails its length or checksum at
// the end of the newest segment (it reaches the end of the file, only
// zeros follow it, or a whole sector of it is zero: see cutOff) is a write
// that a crash cut off before its sync, so it was never acknowledged: it
// is cut away. Anywhere else it is damage, and Open refuses with the file
// and the offset.

const (
	walCreate byte = iota + 1
	walEntry
	walDelete
	walStable
	walDrop
	walCheckpoint
)

const (
	walHeaderLen = 8
	// maxWALRecord bounds one record: an entry larger than a peer frame
	// (64 MiB) could not be replicated anyway.
	maxWALRecord = 64 << 20
	walDirName   = "raft-wal"
	// walKeepSegments is how many segments the log may hold before the
	// oldest one's live entries are written again at the end.
	walKeepSegments = 4
)

// walOp is one change a caller asks for.
type walOp struct {
	kind   byte
	group  uint64
	index  uint64 // walEntry
	lo, hi uint64 // walDelete
	key    []byte // walStable
	val    []byte // walEntry: the encoded entry; walStable: the value
}

type walReq struct {
	ops  []walOp
	done chan error
}

type walSegment struct {
	seq  uint64
	path string
	f    *os.File
	size int64 // bytes of whole records
	live int   // index entries that lie in this segment
	// end is where the last entry in the index ends: every byte before it
	// is written and synced. Guarded by walBackend.mu.
	end uint32
}

// maxWALSegmentBytes bounds a segment file, so that an offset in it fits
// 32 bits (walLoc). A write goes to a segment whose records stay within
// Config.WALSegmentSize (at most maxWALSegmentSize), or to a new segment
// after its checkpoint, and is itself at most maxWALSegmentSize, so no
// segment reaches this.
const maxWALSegmentBytes = math.MaxUint32

// walLoc is where an entry's encoding lies: n bytes at off in seg. A
// segment stays below maxWALSegmentBytes, so offsets fit 32 bits.
type walLoc struct {
	seg *walSegment
	off uint32
	n   uint32
}

type walGroup struct {
	entries walIndex
	stable  map[string][]byte
}

func newWALGroup() *walGroup {
	return &walGroup{stable: make(map[string][]byte)}
}

type walBackend struct {
	dir     string
	log     *slog.Logger
	onSync  func(time.Duration)
	segSize int64

	reqs    chan *walReq
	stopped chan struct{}
	// sendMu is held for reading while sending on reqs, so Close can close
	// it under the write lock; it guards closing.
	sendMu  sync.RWMutex
	closing bool

	// omu guards open and closed and serialises Group, CloseGroup,
	// DropGroup and Close.
	omu    sync.Mutex
	closed bool
	open   map[uint64]*walStore

	// mu guards groups and each group's index and values. Only the writer
	// goroutine changes them (and Open, before it starts); readers hold mu
	// for reading while they read a segment, so no segment is closed under
	// them.
	mu     sync.RWMutex
	groups map[uint64]*walGroup

	// Owned by the writer goroutine.
	segs []*walSegment // oldest first; the last one is written
	werr error         // sticky: after a failed write or sync nothing more is acknowledged
	// relocating is set while relocateOldest writes, so that write does
	// not start another.
	relocating bool
	buf        []byte
	pos        []walLoc
}

func openWAL(cfg Config) (*walBackend, error) {
	dir := filepath.Join(cfg.Dir, walDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logstore: create %s: %w", dir, err)
	}
	// The directory's own entry, in case this open created it.
	if err := syncDir(cfg.Dir); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	b := &walBackend{
		dir:     dir,
		log:     cfg.Logger,
		onSync:  cfg.OnSync,
		segSize: cfg.WALSegmentSize,
		reqs:    make(chan *walReq, 1024),
		stopped: make(chan struct{}),
		open:    make(map[uint64]*walStore),
		groups:  make(map[uint64]*walGroup),
	}
	if err := b.replay(); err != nil {
		b.closeFiles()
		return nil, err
	}
	// Writes go to a new segment: the newest one on disk may end where a
	// crash cut it, and a fresh checkpoint lets the old ones go sooner.
	if err := b.rotate(); err != nil {
		b.closeFiles()
		return nil, err
	}
	b.removeDead()
	go b.run()
	return b, nil
}

// segmentNames returns the segment files in dir, oldest first.
func segmentNames(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "wal-") || !strings.HasSuffix(name, ".log") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "wal-"), ".log"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("segment file name %s: %w", name, err)
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

func (b *walBackend) segmentPath(seq uint64) string {
	return filepath.Join(b.dir, fmt.Sprintf("wal-%016x.log", seq))
}

// replay rebuilds the index from every segment on disk.
func (b *walBackend) replay() error {
	seqs, err := segmentNames(b.dir)
	if err != nil {
		return fmt.Errorf("logstore: list %s: %w", b.dir, err)
	}
	for i, seq := range seqs {
		seg := &walSegment{seq: seq, path: b.segmentPath(seq)}
		if seg.f, err = os.OpenFile(seg.path, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("logstore: open %s: %w", seg.path, err)
		}
		b.segs = append(b.segs, seg)
		// The size is checked before the file is read in: a stray huge
		// file must be refused, not loaded.
		st, err := seg.f.Stat()
		if err != nil {
			return fmt.Errorf("logstore: stat %s: %w", seg.path, err)
		}
		if st.Size() > maxWALSegmentBytes {
			return fmt.Errorf("logstore: %w: segment %s holds %d bytes, more than a segment may (%d)", ErrCorrupt, seg.path, st.Size(), maxWALSegmentBytes)
		}
		data, err := io.ReadAll(io.LimitReader(seg.f, maxWALSegmentBytes+1))
		if err != nil {
			return fmt.Errorf("logstore: read %s: %w", seg.path, err)
		}
		if len(data) > maxWALSegmentBytes {
			return fmt.Errorf("logstore: %w: segment %s holds more than a segment may (%d bytes)", ErrCorrupt, seg.path, maxWALSegmentBytes)
		}
		var off int64
		for off < int64(len(data)) {
			op, n, entryAt, perr := parseWALRecord(data[off:])
			if perr != nil {
				if i == len(seqs)-1 && cutOff(data[off:], off) {
					b.log.Warn("raft log: cutting away a write a crash left unfinished",
						"segment", seg.path, "offset", off, "bytes", int64(len(data))-off, "err", perr)
					if err := seg.f.Truncate(off); err != nil {
						return fmt.Errorf("logstore: cut the unfinished tail of %s: %w", seg.path, err)
					}
					break
				}
				return fmt.Errorf("logstore: %w: segment %s is damaged at offset %d: %v", ErrCorrupt, seg.path, off, perr)
			}
			b.apply(&op, walLoc{seg: seg, off: uint32(off) + uint32(entryAt), n: uint32(len(op.val))})
			off += int64(n)
		}
		seg.size = off
		// What was read may be only in the page cache: a process killed
		// between its write and its sync leaves the write readable but
		// not durable. Raft builds on everything read here (it may answer
		// for an entry a killed predecessor never acknowledged), so it
		// must outlive a power loss too, and before anything is written
		// after it.
		if err := unix.Fdatasync(int(seg.f.Fd())); err != nil {
			return fmt.Errorf("logstore: sync %s: %w", seg.path, err)
		}
	}
	return nil
}

// cutOff reports whether rest, which starts at file offset off with a
// record that does not parse, is the unsynced tail of an interrupted write
// rather than damage: the record runs to or past the end of the file,
// nothing but zeros follows, or a whole disk sector inside the record is
// zero (a write the disk did not finish; synced records never hold one,
// since every record's checksum was good when it was synced).
//
// A torn write leaves bytes unwritten, which read as zeros, so a length
// it tore is the written length with bits cleared, never set. A length
// above maxWALRecord, or one that gives a record passing its checksum
// once one of its bits is cleared, is therefore damage to a written
// length: taken for a torn tail, it would cut away every synced record
// after it, and the newest segment holds all written since the start.
func cutOff(rest []byte, off int64) bool {
	if len(rest) < walHeaderLen {
		return true
	}
	n := int64(binary.LittleEndian.Uint32(rest))
	if n > maxWALRecord || lengthHasAnExtraBit(rest) {
		return false
	}
	if walHeaderLen+n >= int64(len(rest)) {
		return true
	}
	if len(bytes.TrimLeft(rest, "\x00")) == 0 {
		return true
	}
	const sector = 512
	rec := rest[:walHeaderLen+n]
	for i := (sector - off%sector) % sector; i+sector <= int64(len(rec)); i += sector {
		if len(bytes.TrimLeft(rec[i:i+sector], "\x00")) == 0 {
			return true
		}
	}
	return false
}

// lengthHasAnExtraBit reports whether the record at the start of p passes
// its checksum with one bit of its length cleared.
func lengthHasAnExtraBit(p []byte) bool {
	n := binary.LittleEndian.Uint32(p)
	sum := binary.LittleEndian.Uint32(p[4:])
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if n&bit == 0 {
			continue
		}
		m := int64(n &^ bit)
		if m > 0 && walHeaderLen+m <= int64(len(p)) && crc32.Checksum(p[walHeaderLen:walHeaderLen+m], castagnoli) == sum {
			return true
		}
	}
	return false
}

// parseWALRecord decodes the record at the start of p. It returns the op
// (val aliasing p), the record's length and, for an entry, where its
// encoding starts within the record.
func parseWALRecord(p []byte) (op walOp, n, entryAt int, err error) {
	if len(p) < walHeaderLen {
		return op, 0, 0, errors.New("record header cut short")
	}
	size := binary.LittleEndian.Uint32(p)
	if size == 0 || size > maxWALRecord {
		return op, 0, 0, fmt.Errorf("record length %d out of range", size)
	}
	if int64(len(p)) < walHeaderLen+int64(size) {
		return op, 0, 0, fmt.Errorf("record of %d bytes cut short at %d", size, len(p)-walHeaderLen)
	}
	body := p[walHeaderLen : walHeaderLen+size]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(p[4:]); got != want {
		return op, 0, 0, fmt.Errorf("record checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	d := wire.Reader{Buf: body}
	rest := func() []byte { b := d.Buf; d.Buf = nil; return b }
	op.kind = d.Byte()
	op.group = d.Uvarint()
	switch op.kind {
	case walCreate, walDrop:
	case walEntry:
		op.index = d.Uvarint()
		entryAt = walHeaderLen + len(body) - len(d.Buf)
		op.val = rest()
	case walDelete:
		op.lo, op.hi = d.Uvarint(), d.Uvarint()
	case walStable:
		op.key = d.Bytes(maxWALRecord)
		op.val = bytes.Clone(rest())
	case walCheckpoint:
		// Kept whole for apply, once it is known to decode: a record
		// that passed its checksum but does not is refused like damage,
		// rather than half applied.
		op.val = rest()
		if err := decodeCheckpoint(op.val, nil); err != nil {
			return op, 0, 0, fmt.Errorf("checkpoint record: %v", err)
		}
	default:
		return op, 0, 0, fmt.Errorf("unknown record kind %d", op.kind)
	}
	if err := d.Done(); err != nil {
		return op, 0, 0, fmt.Errorf("record of kind %d: %v", op.kind, err)
	}
	return op, walHeaderLen + int(size), entryAt, nil
}

// appendWALRecord appends op's record to dst and returns, for an entry,
// where its encoding starts within the record.
func appendWALRecord(dst []byte, op *walOp) ([]byte, int) {
	start := len(dst)
	dst = append(dst, make([]byte, walHeaderLen)...)
	dst = append(dst, op.kind)
	dst = binary.AppendUvarint(dst, op.group)
	entryAt := 0
	switch op.kind {
	case walEntry:
		dst = binary.AppendUvarint(dst, op.index)
		entryAt = len(dst) - start
		dst = append(dst, op.val...)
	case walDelete:
		dst = binary.AppendUvarint(dst, op.lo)
		dst = binary.AppendUvarint(dst, op.hi)
	case walStable:
		dst = wire.AppendBytes(dst, op.key)
		dst = append(dst, op.val...)
	case walCheckpoint:
		dst = append(dst, op.val...)
	}
	body := dst[start+walHeaderLen:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst, entryAt
}

// apply changes the index for one record; at is where an entry lies. The
// caller holds mu for writing (or is Open, before anyone else runs).
func (b *walBackend) apply(op *walOp, at walLoc) {
	g := b.groups[op.group]
	switch op.kind {
	case walCreate:
		if g == nil {
			b.groups[op.group] = newWALGroup()
		}
	case walEntry:
		if g == nil {
			g = newWALGroup()
			b.groups[op.group] = g
		}
		if old, replaced := g.entries.set(op.index, at); replaced {
			old.seg.live--
		}
		at.seg.live++
		at.seg.end = max(at.seg.end, at.off+at.n)
	case walDelete:
		if g != nil {
			g.deleteRange(op.lo, op.hi)
		}
	case walStable:
		if g == nil {
			g = newWALGroup()
			b.groups[op.group] = g
		}
		g.stable[string(op.key)] = op.val
	case walDrop:
		if g != nil {
			g.deleteRange(0, ^uint64(0))
			delete(b.groups, op.group)
		}
	case walCheckpoint:
		b.applyCheckpoint(op.val)
	}
}

func (g *walGroup) deleteRange(lo, hi uint64) {
	g.entries.deleteRange(lo, hi, func(loc walLoc) { loc.seg.live-- })
}

// encodeCheckpoint describes every group and its stable values.
func (b *walBackend) encodeCheckpoint() []byte {
	ids := make([]uint64, 0, len(b.groups))
	for id := range b.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		g := b.groups[id]
		out = binary.AppendUvarint(out, id)
		out = binary.AppendUvarint(out, uint64(len(g.stable)))
		keys := make([]string, 0, len(g.stable))
		for k := range g.stable {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = wire.AppendString(out, k)
			out = wire.AppendBytes(out, g.stable[k])
		}
	}
	return out
}

// applyCheckpoint makes the groups and their stable values what the
// checkpoint says; entries of the groups it names stay. parseWALRecord
// checked that p decodes.
func (b *walBackend) applyCheckpoint(p []byte) {
	named := make(map[uint64]bool)
	_ = decodeCheckpoint(p, func(id uint64, stable map[string][]byte) {
		g := b.groups[id]
		if g == nil {
			g = newWALGroup()
			b.groups[id] = g
		}
		named[id] = true
		g.stable = stable
	})
	for id, g := range b.groups {
		if !named[id] {
			g.deleteRange(0, ^uint64(0))
			delete(b.groups, id)
		}
	}
}

// decodeCheckpoint decodes a checkpoint written by encodeCheckpoint and,
// unless each is nil, hands it every group with its stable values.
func decodeCheckpoint(p []byte, each func(id uint64, stable map[string][]byte)) error {
	d := wire.Reader{Buf: p}
	for n := d.Count(); n > 0 && d.Err() == nil; n-- {
		id := d.Uvarint()
		stable := make(map[string][]byte)
		for k := d.Count(); k > 0 && d.Err() == nil; k-- {
			key := d.String(maxWALRecord)
			stable[key] = bytes.Clone(d.Bytes(maxWALRecord))
		}
		if d.Err() == nil && each != nil {
			each(id, stable)
		}
	}
	return d.Done()
}

// rotate starts a new segment beginning with a checkpoint, durable with
// its directory entry before anything is written after it. Writer only.
func (b *walBackend) rotate() error {
	var seq uint64 = 1
	if n := len(b.segs); n > 0 {
		seq = b.segs[n-1].seq + 1
	}
	seg := &walSegment{seq: seq, path: b.segmentPath(seq)}
	f, err := os.OpenFile(seg.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("logstore: create %s: %w", seg.path, err)
	}
	seg.f = f
	rec, _ := appendWALRecord(nil, &walOp{kind: walCheckpoint, val: b.encodeCheckpoint()})
	if _, err := f.WriteAt(rec, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("logstore: write %s: %w", seg.path, err)
	}
	if err := b.syncFile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("logstore: sync %s: %w", seg.path, err)
	}
	if err := syncDir(b.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("logstore: %w", err)
	}
	seg.size = int64(len(rec))
	b.mu.Lock()
	b.segs = append(b.segs, seg)
	b.mu.Unlock()
	return nil
}

// removeDead removes the oldest segments while no entry lies in them.
// Writer only.
func (b *walBackend) removeDead() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.segs) > 1 && b.segs[0].live == 0 {
		seg := b.segs[0]
		if err := os.Remove(seg.path); err != nil {
			b.log.Error("raft log: cannot remove an unused segment; it stays", "segment", seg.path, "err", err)
			return
		}
		if err := syncDir(b.dir); err != nil {
			b.log.Error("raft log: cannot sync the log directory after removing a segment", "err", err)
		}
		_ = seg.f.Close()
		b.segs = b.segs[1:]
	}
}

func (b *walBackend) syncFile(f *os.File) error {
	if plantedNoSync != nil && plantedNoSync() {
		return nil
	}
	if b.onSync == nil {
		return unix.Fdatasync(int(f.Fd()))
	}
	start := time.Now()
	err := unix.Fdatasync(int(f.Fd()))
	b.onSync(time.Since(start))
	return err
}

// run is the writer: it merges the requests waiting into one write and one
// sync, then applies them to the index and releases their callers.
func (b *walBackend) run() {
	defer close(b.stopped)
	batch := make([]*walReq, 0, 64)
	for r := range b.reqs {
		batch = append(batch[:0], r)
		// As the badger committer does: let the writers that are ready
		// queue their writes first, so one sync covers them.
		runtime.Gosched()
	drain:
		for len(batch) < maxMerged {
			select {
			case r, ok := <-b.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := b.write(batch)
		for _, r := range batch {
			r.done <- err
		}
		clear(batch)
	}
}

func (b *walBackend) write(batch []*walReq) error {
	if b.werr != nil {
		return b.werr
	}
	out, pos := b.buf[:0], b.pos[:0]
	for _, r := range batch {
		for i := range r.ops {
			start := len(out)
			var at int
			out, at = appendWALRecord(out, &r.ops[i])
			pos = append(pos, walLoc{off: uint32(start + at), n: uint32(len(r.ops[i].val))})
		}
	}
	b.buf, b.pos = out, pos
	if len(out) > maxWALSegmentSize {
		// Not sticky: nothing was written, and the next batch may fit.
		return fmt.Errorf("logstore: a write of %d bytes is larger than a segment may be (%d)", len(out), maxWALSegmentSize)
	}
	seg := b.segs[len(b.segs)-1]
	if seg.size+int64(len(out)) > b.segSize && seg.size > 0 {
		if err := b.rotate(); err != nil {
			b.werr = err
			b.log.Error("raft log store cannot start a segment; refusing further writes", "err", err)
			return err
		}
		seg = b.segs[len(b.segs)-1]
	}
	base := seg.size
	if _, err := seg.f.WriteAt(out, base); err != nil {
		b.werr = fmt.Errorf("logstore: write %s: %w", seg.path, err)
	} else if err := b.syncFile(seg.f); err != nil {
		b.werr = fmt.Errorf("logstore: sync %s: %w", seg.path, err)
	}
	if b.werr != nil {
		b.log.Error("raft log store write failed; refusing further writes", "err", b.werr)
		return b.werr
	}
	seg.size += int64(len(out))
	b.mu.Lock()
	k := 0
	for _, r := range batch {
		for i := range r.ops {
			at := pos[k]
			at.seg, at.off = seg, uint32(base)+at.off
			b.apply(&r.ops[i], at)
			k++
		}
	}
	b.mu.Unlock()
	if !b.relocating && len(b.segs) > walKeepSegments && b.segs[0].live > 0 {
		b.relocating = true
		if err := b.relocateOldest(); err != nil {
			b.log.Error("raft log: cannot move the oldest segment's entries forward; it stays", "err", err)
		}
		b.relocating = false
	}
	if len(b.segs) > 1 && b.segs[0].live == 0 {
		b.removeDead()
	}
	if cap(b.buf) > 4<<20 {
		b.buf = nil // a rare huge batch should not pin its buffer
	}
	return nil
}

// relocateOldest writes the entries still live in the oldest segment
// again, at the end of the log, so the segment can go. Without it one
// group that raft never compacts (an idle group takes no snapshots) would
// hold its oldest segment, and with it every later one, for good. Replay
// finds the copies after the originals, so they win. Writer only.
func (b *walBackend) relocateOldest() error {
	old := b.segs[0]
	var ops []walOp
	for id, g := range b.groups {
		var err error
		g.entries.each(func(index uint64, loc walLoc) {
			if loc.seg != old || err != nil {
				return
			}
			enc := make([]byte, loc.n)
			if _, err = old.f.ReadAt(enc, int64(loc.off)); err != nil {
				err = fmt.Errorf("logstore: read %s: %w", old.path, err)
				return
			}
			ops = append(ops, walOp{kind: walEntry, group: id, index: index, val: enc})
		})
		if err != nil {
			return err
		}
	}
	// Entries in index order, so a segment that is read back holds each
	// group's run in order, as the originals were.
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].group != ops[j].group {
			return ops[i].group < ops[j].group
		}
		return ops[i].index < ops[j].index
	})
	return b.write([]*walReq{{ops: ops}})
}

// submit queues ops and waits until they are durable and in the index.
func (b *walBackend) submit(ops ...walOp) error {
	r := &walReq{ops: ops, done: make(chan error, 1)}
	b.sendMu.RLock()
	if b.closing {
		b.sendMu.RUnlock()
		return ErrClosed
	}
	b.reqs <- r
	b.sendMu.RUnlock()
	return <-r.done
}

func (b *walBackend) closeFiles() {
	for _, seg := range b.segs {
		_ = seg.f.Close()
	}
	b.segs = nil
}

func (b *walBackend) Group(id uint64) (Store, error) {
	b.omu.Lock()
	defer b.omu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if _, ok := b.open[id]; ok {
		return nil, fmt.Errorf("logstore: group %d is already open", id)
	}
	b.mu.RLock()
	_, exists := b.groups[id]
	b.mu.RUnlock()
	if !exists {
		if err := b.submit(walOp{kind: walCreate, group: id}); err != nil {
			return nil, fmt.Errorf("logstore: group %d: create: %w", id, err)
		}
	}
	s := &walStore{b: b, id: id}
	b.open[id] = s
	return s, nil
}

func (b *walBackend) CloseGroup(id uint64) error {
	b.omu.Lock()
	defer b.omu.Unlock()
	if s, ok := b.open[id]; ok {
		s.close()
		delete(b.open, id)
	}
	return nil
}

func (b *walBackend) DropGroup(id uint64) error {
	b.omu.Lock()
	defer b.omu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if s, ok := b.open[id]; ok {
		s.close()
		delete(b.open, id)
	}
	b.mu.RLock()
	_, exists := b.groups[id]
	b.mu.RUnlock()
	if !exists {
		return nil
	}
	if err := b.submit(walOp{kind: walDrop, group: id}); err != nil {
		return fmt.Errorf("logstore: group %d: drop: %w", id, err)
	}
	return nil
}

func (b *walBackend) Groups() ([]uint64, error) {
	b.omu.Lock()
	closed := b.closed
	b.omu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	ids := make([]uint64, 0, len(b.groups))
	for id := range b.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

func (b *walBackend) Close() error {
	b.omu.Lock()
	defer b.omu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for id, s := range b.open {
		s.close()
		delete(b.open, id)
	}
	b.sendMu.Lock()
	b.closing = true
	close(b.reqs)
	b.sendMu.Unlock()
	<-b.stopped
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, seg := range b.segs {
		if err := seg.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("logstore: close %s: %w", seg.path, err))
		}
	}
	b.segs = nil
	return errors.Join(errs...)
}

// walStore is one group's view of the node's log.
type walStore struct {
	b  *walBackend // set at construction, read-only after
	id uint64

	// Every call passes the gate, so close can wait for calls in progress.
	callGate

	// ahead is the last block read ahead (readEntry); its bytes never
	// change once read.
	aheadMu sync.Mutex
	ahead   walBlock
}

// walReadAhead is how much past an entry a read brings in. raft, at start,
// and the replica's checks read a group's log in order, as does a leader
// sending a follower entries it lacks, so the next entries are likely next;
// one pread then serves many.
const walReadAhead = 32 << 10

// walBlock is bytes of a segment from off on.
type walBlock struct {
	seg  *walSegment
	off  uint32
	data []byte
}

// readEntry returns a copy of the encoding at loc, from the block read
// ahead or from the file. end is loc.seg.end, read with it. The caller
// holds walBackend.mu for reading, which keeps the segment open.
func (s *walStore) readEntry(loc walLoc, end uint32) ([]byte, error) {
	s.aheadMu.Lock()
	blk := s.ahead
	s.aheadMu.Unlock()
	if blk.seg == loc.seg && loc.off >= blk.off && uint64(loc.off)+uint64(loc.n) <= uint64(blk.off)+uint64(len(blk.data)) {
		at := loc.off - blk.off
		return append([]byte(nil), blk.data[at:at+loc.n]...), nil
	}
	n := loc.n
	if end > loc.off+loc.n {
		n = max(n, min(walReadAhead, end-loc.off))
	}
	data := make([]byte, n)
	if _, err := loc.seg.f.ReadAt(data, int64(loc.off)); err != nil {
		return nil, err
	}
	if n == loc.n {
		return data, nil
	}
	s.aheadMu.Lock()
	s.ahead = walBlock{seg: loc.seg, off: loc.off, data: data}
	s.aheadMu.Unlock()
	return append([]byte(nil), data[:loc.n]...), nil
}

// bounds returns the group's first and last index.
func (s *walStore) bounds() (first, last uint64) {
	s.b.mu.RLock()
	defer s.b.mu.RUnlock()
	if g := s.b.groups[s.id]; g != nil {
		return g.entries.bounds()
	}
	return 0, 0
}

func (s *walStore) FirstIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	first, _ := s.bounds()
	return first, nil
}

func (s *walStore) LastIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	_, last := s.bounds()
	return last, nil
}

func (s *walStore) GetLog(index uint64, out *raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	s.b.mu.RLock()
	g := s.b.groups[s.id]
	var loc walLoc
	ok := false
	if g != nil {
		loc, ok = g.entries.get(index)
	}
	if !ok {
		s.b.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	buf, err := s.readEntry(loc, loc.seg.end)
	s.b.mu.RUnlock()
	if err == nil {
		err = decodeLog(buf, out)
		if err == nil && out.Index != index {
			err = fmt.Errorf("%w: index %d found where %d belongs", errCorruptLog, out.Index, index)
		}
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.id, index, err)
	}
	return nil
}

func (s *walStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

func (s *walStore) StoreLogs(logs []*raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if len(logs) == 0 {
		return nil
	}
	ops := make([]walOp, len(logs))
	for i, l := range logs {
		enc := encodeLog(make([]byte, 0, encodedLogSize(l)), l)
		if len(enc) > maxWALRecord-64 {
			return fmt.Errorf("logstore: group %d: entry %d of %d bytes exceeds the log's record limit (%d)", s.id, l.Index, len(enc), maxWALRecord-64)
		}
		ops[i] = walOp{kind: walEntry, group: s.id, index: l.Index, val: enc}
	}
	if err := s.b.submit(ops...); err != nil {
		return fmt.Errorf("logstore: group %d: store logs %d..%d: %w", s.id, logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

func (s *walStore) DeleteRange(lo, hi uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if lo > hi {
		return nil
	}
	if first, last := s.bounds(); first == 0 || hi < first || lo > last {
		return nil
	}
	if err := s.b.submit(walOp{kind: walDelete, group: s.id, lo: lo, hi: hi}); err != nil {
		return fmt.Errorf("logstore: group %d: delete range %d..%d: %w", s.id, lo, hi, err)
	}
	return nil
}

func (s *walStore) Set(key, val []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.b.submit(walOp{kind: walStable, group: s.id, key: key, val: bytes.Clone(val)}); err != nil {
		return fmt.Errorf("logstore: group %d: set %q: %w", s.id, key, err)
	}
	return nil
}

func (s *walStore) Get(key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	s.b.mu.RLock()
	defer s.b.mu.RUnlock()
	if g := s.b.groups[s.id]; g != nil {
		if v, ok := g.stable[string(key)]; ok {
			return bytes.Clone(v), nil
		}
	}
	return nil, ErrKeyNotFound
}

func (s *walStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

func (s *walStore) GetUint64(key []byte) (uint64, error) {
	val, err := s.Get(key)
	return decodeUint64(s.id, key, val, err)
}
