package logstore

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Why the committer calls DB.Sync itself: with Options.SyncWrites badger
// syncs once per transaction and never merges concurrent transactions into
// one sync, so a node with many groups would be capped at one fsync per
// group write. The DB is therefore opened with SyncWrites=false and the
// committer makes every merged batch durable with one DB.Sync before any
// caller in the batch is released.
//
// What DB.Sync does in badger v4.9.6 (db.go): under db.lock it calls
// db.mt.SyncWAL(), an msync(MS_SYNC) of the active memtable's WAL mmap,
// then vlog.sync(), an msync of the newest value-log file. Every write
// lands in the active memtable's WAL before Txn.Commit returns
// (writeRequests -> writeToLSM), and recovery replays memtable WALs
// (memTable.UpdateSkipList), so a committed and synced write is durable.
// Two gaps and why they do not apply here:
//   - Only the active memtable's WAL is synced. A memtable is rotated in
//     ensureRoomForWrite before a write is applied, and the committer is
//     badger's only writer and syncs after every transaction, so a rotated
//     WAL only ever holds already-synced writes.
//   - Only the newest value-log file is synced. Values reach the value log
//     only when they are at least ValueThreshold (1 MiB); log entries are
//     chunked below that (maxInlineValue), so the value log stays empty.
//     (A rotated value-log file is synced anyway: logFile.doneWriting
//     truncates it and z.MmapFile.Truncate msyncs first.)
// SSTables written by memtable flushes and compactions are synced by
// badger itself before the WAL they replace is deleted.

// op is one badger mutation.
type op struct {
	key, val []byte
	del      bool
}

// request is one caller's write; it is applied atomically.
type request struct {
	ops  []op
	size int64 // badger's own estimate of the ops' transaction size
	// intentKey/intent describe how to finish this write if it has to be
	// split over several transactions and the process dies half way.
	intentKey, intent []byte
	// forceIntent runs the write on the multi-transaction path even when it
	// would fit one transaction, for writes that must survive a crash as a
	// whole but are collected outside the committer (DropGroup).
	forceIntent bool
	done        chan error
}

// opSize mirrors badger's Txn.checkSize: key + value + 2 meta bytes + 10
// bytes for the version suffix. Values are always below ValueThreshold.
func opSize(key, val []byte) int64 { return int64(len(key) + len(val) + 12) }

func (r *request) set(key, val []byte) {
	r.ops = append(r.ops, op{key: key, val: val})
	r.size += opSize(key, val)
}

func (r *request) del(key []byte) {
	r.ops = append(r.ops, op{key: key, del: true})
	r.size += opSize(key, nil)
}

// committer is the single writer of a badger DB. It merges queued requests
// into as few transactions as fit and syncs once per transaction.
type committer struct {
	db     *badger.DB
	log    *slog.Logger
	onSync func(time.Duration) // may be nil
	// maxSize and maxCount bound one transaction below badger's
	// MaxBatchSize/MaxBatchCount, leaving room for the commit marker.
	maxSize  int64
	maxCount int

	reqs    chan *request
	stopped chan struct{}

	// mu guards closing; it is held for reading while sending on reqs, so
	// stop can close reqs under the write lock.
	mu      sync.RWMutex
	closing bool

	// err is sticky: after a failed commit or sync badger's memory may be
	// ahead of the disk, so no later write may be acknowledged. Only the
	// committer goroutine touches it.
	err error

	syncs atomic.Uint64 // number of DB.Sync calls; tests check merging with it
}

// maxMerged bounds how many requests one loop iteration collects, so a
// flood of writers cannot delay the first of them unboundedly.
const maxMerged = 4096

func newCommitter(db *badger.DB, log *slog.Logger, onSync func(time.Duration)) *committer {
	c := &committer{
		db:       db,
		log:      log,
		onSync:   onSync,
		maxSize:  db.MaxBatchSize() * 9 / 10,
		maxCount: int(db.MaxBatchCount()*9/10) - 1,
		reqs:     make(chan *request, 1024),
		stopped:  make(chan struct{}),
	}
	go c.run()
	return c
}

// submit queues r and waits for its result.
func (c *committer) submit(r *request) error {
	r.done = make(chan error, 1)
	c.mu.RLock()
	if c.closing {
		c.mu.RUnlock()
		return ErrClosed
	}
	c.reqs <- r
	c.mu.RUnlock()
	return <-r.done
}

// stop finishes all queued requests and waits for the goroutine to exit.
// Requests submitted afterwards fail with ErrClosed.
func (c *committer) stop() {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		close(c.reqs)
	}
	c.mu.Unlock()
	<-c.stopped
}

func (c *committer) run() {
	defer close(c.stopped)
	batch := make([]*request, 0, 64)
	for r := range c.reqs {
		batch = append(batch[:0], r)
		size, count := r.size, len(r.ops)
		// Let the goroutines that are ready run before collecting: the
		// writers the last sync released, and raft loops about to store,
		// often have a write of their own a moment away. On a busy node
		// that lets one sync cover them instead of one each (fewer syncs
		// per commit and less CPU in msync, see docs/benchmarks.md); on an
		// idle one nothing else is ready and the yield returns at once.
		runtime.Gosched()
	drain:
		for size < c.maxSize && count < c.maxCount && len(batch) < maxMerged {
			select {
			case r, ok := <-c.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				size += r.size
				count += len(r.ops)
			default:
				break drain
			}
		}
		c.process(batch)
		clear(batch)
		if len(c.reqs) > 0 {
			runtime.Gosched()
		}
	}
}

func (c *committer) fits(size int64, count int) bool {
	return size <= c.maxSize && count <= c.maxCount
}

// process writes batch as few transactions as possible, splitting only at
// request boundaries so every request stays atomic.
func (c *committer) process(batch []*request) {
	var cur []*request
	var size int64
	var count int
	flush := func() {
		if len(cur) > 0 {
			c.commitMerged(cur)
		}
		cur, size, count = cur[:0], 0, 0
	}
	for _, r := range batch {
		if r.forceIntent || !c.fits(r.size, len(r.ops)) {
			flush()
			c.finish(r, c.writeLarge(r))
			continue
		}
		if !c.fits(size+r.size, count+len(r.ops)) {
			flush()
		}
		cur = append(cur, r)
		size += r.size
		count += len(r.ops)
	}
	flush()
}

func (c *committer) finish(r *request, err error) {
	r.done <- err
}

// commitMerged writes reqs in one transaction, syncs once and releases them.
func (c *committer) commitMerged(reqs []*request) {
	err := c.err
	if err == nil {
		n := 0
		for _, r := range reqs {
			n += len(r.ops)
		}
		ops := make([]op, 0, n)
		for _, r := range reqs {
			ops = append(ops, r.ops...)
		}
		err = c.writeSynced(ops)
	}
	for _, r := range reqs {
		c.finish(r, err)
	}
}

// writeLarge applies a request that must span several transactions. The
// intent is durable before the first of them and removed by the last, so
// Open can finish the job after a crash.
func (c *committer) writeLarge(r *request) error {
	if c.err != nil {
		return c.err
	}
	if err := c.writeSynced([]op{{key: r.intentKey, val: r.intent}}); err != nil {
		return err
	}
	var size int64
	start := 0
	for i, o := range r.ops {
		s := opSize(o.key, o.val)
		if i > start && !c.fits(size+s, i-start+1) {
			// Synced one by one: a later transaction may rotate the
			// memtable, and DB.Sync only syncs the active one.
			if err := c.writeSynced(r.ops[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += s
	}
	if err := c.writeSynced(r.ops[start:]); err != nil {
		return err
	}
	return c.writeSynced([]op{{key: r.intentKey, del: true}})
}

// writeSynced commits ops in one transaction and syncs. Any failure is
// sticky.
func (c *committer) writeSynced(ops []op) error {
	if c.err != nil {
		return c.err
	}
	if len(ops) == 0 {
		return nil
	}
	txn := c.db.NewTransaction(true)
	defer txn.Discard()
	for _, o := range ops {
		var err error
		if o.del {
			err = txn.Delete(o.key)
		} else {
			err = txn.Set(o.key, o.val)
		}
		if err != nil {
			return c.fail(fmt.Errorf("logstore: badger: add to transaction (%d ops): %w", len(ops), err))
		}
	}
	if err := txn.Commit(); err != nil {
		return c.fail(fmt.Errorf("logstore: badger: commit: %w", err))
	}
	c.syncs.Add(1)
	if err := c.sync(); err != nil {
		return c.fail(fmt.Errorf("logstore: badger: sync: %w", err))
	}
	return nil
}

// plantedNoSync, when set and true, skips every fsync of the log store:
// a bug planted for the consistency harness (see jepsenbug_nosync.go).
var plantedNoSync func() bool

func (c *committer) sync() error {
	if plantedNoSync != nil && plantedNoSync() {
		return nil
	}
	if c.onSync == nil {
		return c.db.Sync()
	}
	start := time.Now()
	err := c.db.Sync()
	c.onSync(time.Since(start))
	return err
}

func (c *committer) fail(err error) error {
	c.log.Error("raft log store write failed; refusing further writes", "err", err)
	c.err = err
	return err
}
