package logstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/sstcheck"
	"github.com/heraldhq/herald/internal/wire"
)

// badgerBackend keeps every group in one badger DB; all writes go through
// its committer.
type badgerBackend struct {
	db  *badger.DB
	dir string
	log *slog.Logger
	c   *committer
	// cuts records the table blocks found corrupt at open and cut out,
	// and the groups that lost entries to them.
	cuts *sstcheck.Ledger

	mu     sync.Mutex // guards closed and open, serialises Group/DropGroup/Close
	closed bool
	open   map[uint64]*badgerStore
}

func openBadger(opts Config) (*badgerBackend, error) {
	dir := filepath.Join(opts.Dir, kindDirs[KindBadger])
	memtable, cache := opts.BadgerMemTableSize, opts.BadgerBlockCacheSize
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{opts.Logger}).
		// Durability comes from the committer's DB.Sync per batch.
		WithSyncWrites(false).
		// There is a single writer; conflict tracking is pure overhead.
		WithDetectConflicts(false).
		WithMemTableSize(memtable).
		// One active memtable plus two waiting for flush bounds memtable
		// memory to about 3x MemTableSize.
		WithNumMemtables(3).
		WithBlockCacheSize(cache).
		WithNumCompactors(2).
		// Values stay below ValueThreshold (see maxInlineValue), so the
		// value log only holds an empty file; keep its preallocation small.
		// The size also caps a memtable's WAL, so match the memtable.
		WithValueLogFileSize(memtable).
		WithValueThreshold(1 << 20).
		// Check each table block's checksum as it is read (badger does
		// not by default), not whole tables at open: a bad block then
		// damages the group whose entries it holds, not the node.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
	// What badger replays is made durable first, and logs a power loss
	// left empty are removed: raft must not build on entries a power loss
	// then takes back, and the node must still open (sstcheck.PrepareLogs).
	if err := sstcheck.PrepareLogs(dir); err != nil {
		return nil, fmt.Errorf("logstore: badger at %s: %w", dir, err)
	}
	// Badger reads around a bad block without a word (an entry in it reads
	// as missing, an iterator stops at it) and a compaction drops it and
	// the rest of its table. Every block is checked before the DB opens,
	// and bad ones are cut out and recorded; their groups are damaged
	// (Damaged) until dropped.
	cuts, found, err := sstcheck.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("logstore: check badger at %s: %w", dir, err)
	}
	for _, c := range found {
		opts.Logger.Error("raft log store: a table block is corrupt; cut out, the groups whose entries it held are damaged until repaired",
			"table", c.Table, "block", c.Block, "err", c.Err)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("logstore: open badger at %s: %w", dir, err)
	}
	b := &badgerBackend{
		db:   db,
		dir:  dir,
		log:  opts.Logger,
		c:    newCommitter(db, opts.Logger, opts.OnSync),
		cuts: cuts,
		open: make(map[uint64]*badgerStore),
	}
	if err := b.recoverIntents(); err != nil {
		b.c.stop()
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

// recoverIntents finishes multi-transaction writes interrupted by a crash.
func (b *badgerBackend) recoverIntents() error {
	type pending struct {
		key, val []byte
	}
	var intents []pending
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsIntent}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			intents = append(intents, pending{it.Item().KeyCopy(nil), v})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("logstore: scan intents in %s: %w", b.dir, err)
	}
	for _, in := range intents {
		group, err := keyGroup(in.key)
		if err != nil {
			return err
		}
		kind, lo, hi, err := decodeIntent(in.val)
		if err != nil {
			return fmt.Errorf("logstore: group %d: %w", group, err)
		}
		r := &request{intentKey: in.key, intent: in.val, forceIntent: true}
		err = b.db.View(func(txn *badger.Txn) error {
			if kind == intentDropGroup {
				return addGroupDeletes(txn, r, group)
			}
			return addLogDeletes(txn, r, group, lo, hi)
		})
		if err == nil {
			err = b.c.submit(r)
		}
		if err != nil {
			return fmt.Errorf("logstore: group %d: finish interrupted write: %w", group, err)
		}
		b.log.Warn("finished interrupted raft log write", "group", group, "kind", kind, "lo", lo, "hi", hi)
	}
	return nil
}

// addLogDeletes adds deletes of group's log entries lo..hi (and their
// chunks) to r.
func addLogDeletes(txn *badger.Txn, r *request, group, lo, hi uint64) error {
	for _, ns := range []byte{nsLog, nsChunk} {
		prefix := groupPrefix(ns, group)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		start := binary.BigEndian.AppendUint64(prefix, lo)
		for it.Seek(start); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			idx, err := keyIndex(k)
			if err != nil {
				it.Close()
				return err
			}
			if idx > hi {
				break
			}
			r.del(k)
		}
		it.Close()
	}
	return nil
}

// addGroupDeletes adds deletes of every key of group except its intent.
func addGroupDeletes(txn *badger.Txn, r *request, group uint64) error {
	for _, ns := range []byte{nsLog, nsChunk, nsStable, nsGroup} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: groupPrefix(ns, group)})
		for it.Rewind(); it.Valid(); it.Next() {
			r.del(it.Item().KeyCopy(nil))
		}
		it.Close()
	}
	return nil
}

func (b *badgerBackend) Group(id uint64) (Store, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if _, ok := b.open[id]; ok {
		return nil, fmt.Errorf("logstore: group %d is already open", id)
	}
	if why := b.cuts.Damaged(id, groupPrefixes(id)...); why != "" {
		return nil, fmt.Errorf("logstore: group %d: %w: %s", id, ErrCorrupt, why)
	}
	s := &badgerStore{b: b, id: id}
	exists := false
	err := b.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(groupPrefix(nsGroup, id))
		if err == nil {
			exists = true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		s.first, s.last, err = logBounds(txn, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: open in %s: %w", id, b.dir, err)
	}
	if !exists {
		r := &request{}
		r.set(groupPrefix(nsGroup, id), nil)
		if err := b.c.submit(r); err != nil {
			return nil, fmt.Errorf("logstore: group %d: create: %w", id, err)
		}
	}
	b.open[id] = s
	return s, nil
}

// logBounds finds the first and last log index of group, 0 if empty.
func logBounds(txn *badger.Txn, group uint64) (first, last uint64, err error) {
	prefix := groupPrefix(nsLog, group)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	it.Rewind()
	if !it.Valid() {
		it.Close()
		return 0, 0, nil
	}
	first, err = keyIndex(it.Item().Key())
	it.Close()
	if err != nil {
		return 0, 0, err
	}
	it = txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	it.Seek(logKey(group, math.MaxUint64))
	if !it.Valid() {
		return 0, 0, fmt.Errorf("logstore: group %d: log vanished while reading bounds", group)
	}
	last, err = keyIndex(it.Item().Key())
	return first, last, err
}

func (b *badgerBackend) CloseGroup(id uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.open[id]; ok {
		s.close()
		delete(b.open, id)
	}
	return nil
}

func (b *badgerBackend) DropGroup(id uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if s, ok := b.open[id]; ok {
		s.close()
		delete(b.open, id)
	}
	r := &request{
		intentKey:   groupPrefix(nsIntent, id),
		intent:      encodeIntent(intentDropGroup, 0, 0),
		forceIntent: true,
	}
	err := b.db.View(func(txn *badger.Txn) error { return addGroupDeletes(txn, r, id) })
	if err == nil && len(r.ops) > 0 {
		err = b.c.submit(r)
	}
	if err == nil {
		// The deletes are durable (the committer syncs each batch), so
		// the cut blocks no longer damage the group.
		err = b.cuts.Dropped(id, groupPrefixes(id)...)
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: drop: %w", id, err)
	}
	return nil
}

// Damaged returns why group's log or stable values lost data to table
// blocks that were corrupt at open and cut out, or "". The group cannot
// be opened until DropGroup clears it.
func (b *badgerBackend) Damaged(group uint64) string {
	return b.cuts.Damaged(group, groupPrefixes(group)...)
}

func (b *badgerBackend) Groups() ([]uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	var ids []uint64
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsGroup}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id, err := keyGroup(it.Item().Key())
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("logstore: list groups in %s: %w", b.dir, err)
	}
	return ids, nil
}

func (b *badgerBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for id, s := range b.open {
		s.close()
		delete(b.open, id)
	}
	b.c.stop()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("logstore: close badger at %s: %w", b.dir, err)
	}
	return nil
}

// badgerStore is one group's view of the shared DB.
type badgerStore struct {
	b  *badgerBackend // b and id are set at construction, read-only after
	id uint64

	// Every call passes the gate, so close can wait for calls in progress
	// before the group's data is dropped or the DB closed.
	callGate

	// first and last cache the log bounds; raft asks for them constantly.
	// Guarded by mu once the store is handed out.
	mu          sync.Mutex
	first, last uint64
}

func (s *badgerStore) FirstIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

func (s *badgerStore) LastIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

func (s *badgerStore) GetLog(index uint64, out *raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	var val []byte
	err := s.b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(s.id, index))
		if err != nil {
			return err
		}
		if val, err = item.ValueCopy(nil); err != nil {
			return err
		}
		if len(val) > 0 && val[0] == logFormatChunked {
			val, err = readChunks(txn, s.id, index, val)
		}
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return raft.ErrLogNotFound
	}
	if errors.Is(err, y.ErrChecksumMismatch) {
		err = fmt.Errorf("%w: %v", errCorruptLog, err)
	}
	if err == nil {
		err = decodeLog(val, out)
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.id, index, err)
	}
	return nil
}

// readChunks reassembles an entry stored as chunks; head is the 'l' value.
func readChunks(txn *badger.Txn, group, index uint64, head []byte) ([]byte, error) {
	d := wire.Reader{Buf: head[1:]}
	total, n := d.Uvarint(), d.Uvarint()
	if d.Err() != nil || total <= maxInlineValue || total > math.MaxInt32 || n != (total-1)/maxInlineValue {
		return nil, fmt.Errorf("%w: bad chunk header", errCorruptLog)
	}
	out := make([]byte, 0, total)
	out = append(out, d.Buf...)
	for i := uint32(1); i <= uint32(n); i++ {
		item, err := txn.Get(chunkKey(group, index, i))
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d of %d: %v", errCorruptLog, i, n, err)
		}
		if err := item.Value(func(v []byte) error {
			out = append(out, v...)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if uint64(len(out)) != total {
		return nil, fmt.Errorf("%w: chunks hold %d bytes, header says %d", errCorruptLog, len(out), total)
	}
	return out, nil
}

func (s *badgerStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

func (s *badgerStore) StoreLogs(logs []*raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if len(logs) == 0 {
		return nil
	}
	lo, hi := logs[0].Index, logs[0].Index
	r := &request{ops: make([]op, 0, len(logs))}
	for _, l := range logs {
		lo, hi = min(lo, l.Index), max(hi, l.Index)
		addLogSets(r, s.id, l.Index, encodeLog(make([]byte, 0, encodedLogSize(l)), l))
	}
	r.intentKey = groupPrefix(nsIntent, s.id)
	r.intent = encodeIntent(intentDeleteLogs, lo, hi)
	if err := s.b.c.submit(r); err != nil {
		return fmt.Errorf("logstore: group %d: store logs %d..%d: %w", s.id, lo, hi, err)
	}
	s.mu.Lock()
	if s.first == 0 && s.last == 0 || lo < s.first {
		s.first = lo
	}
	s.last = max(s.last, hi)
	s.mu.Unlock()
	return nil
}

// addLogSets adds the writes storing one encoded entry, chunked if large.
func addLogSets(r *request, group, index uint64, enc []byte) {
	if len(enc) <= maxInlineValue {
		r.set(logKey(group, index), enc)
		return
	}
	n := (len(enc) - 1) / maxInlineValue // continuation chunks
	head := []byte{logFormatChunked}
	head = binary.AppendUvarint(head, uint64(len(enc)))
	head = binary.AppendUvarint(head, uint64(n))
	r.set(logKey(group, index), append(head, enc[:maxInlineValue]...))
	for i := 1; i <= n; i++ {
		r.set(chunkKey(group, index, uint32(i)), enc[i*maxInlineValue:min(len(enc), (i+1)*maxInlineValue)])
	}
}

func (s *badgerStore) DeleteRange(lo, hi uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if lo > hi {
		return nil
	}
	r := &request{
		intentKey: groupPrefix(nsIntent, s.id),
		intent:    encodeIntent(intentDeleteLogs, lo, hi),
	}
	err := s.b.db.View(func(txn *badger.Txn) error { return addLogDeletes(txn, r, s.id, lo, hi) })
	if err == nil && len(r.ops) > 0 {
		err = s.b.c.submit(r)
	}
	if err == nil {
		// Logs may have gaps, so the new bounds come from the DB rather
		// than from arithmetic on the old ones.
		s.mu.Lock()
		err = s.b.db.View(func(txn *badger.Txn) error {
			var err error
			s.first, s.last, err = logBounds(txn, s.id)
			return err
		})
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: delete range %d..%d: %w", s.id, lo, hi, err)
	}
	return nil
}

func (s *badgerStore) Set(key, val []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	r := &request{}
	r.set(stableKey(s.id, key), val)
	if err := s.b.c.submit(r); err != nil {
		return fmt.Errorf("logstore: group %d: set %q: %w", s.id, key, err)
	}
	return nil
}

func (s *badgerStore) Get(key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var val []byte
	err := s.b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(s.id, key))
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: get %q: %w", s.id, key, err)
	}
	return val, nil
}

func (s *badgerStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

func (s *badgerStore) GetUint64(key []byte) (uint64, error) {
	val, err := s.Get(key)
	return decodeUint64(s.id, key, val, err)
}

// badgerLogger routes badger's logging to slog. Badger's Infof reports
// routine compactions and flushes, so it is demoted to Debug; Debugf runs on
// every write and is dropped before formatting.
type badgerLogger struct{ l *slog.Logger }

func (g badgerLogger) Errorf(f string, a ...any)   { g.logf(slog.LevelError, f, a) }
func (g badgerLogger) Warningf(f string, a ...any) { g.logf(slog.LevelWarn, f, a) }
func (g badgerLogger) Infof(f string, a ...any)    { g.logf(slog.LevelDebug, f, a) }
func (g badgerLogger) Debugf(string, ...any)       {}

func (g badgerLogger) logf(level slog.Level, f string, a []any) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	msg := fmt.Sprintf(f, a...)
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	g.l.Log(context.Background(), level, msg, "component", "badger")
}

var _ DamageReporter = (*badgerBackend)(nil)
