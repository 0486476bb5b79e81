package fsm

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testLogger sends log lines to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// openStore opens a store in dir and closes it when the test ends (unless
// the test closed it already).
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	cfg := DefaultStoreConfig(dir)
	cfg.Logger = testLogger(t)
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// replica is one FSM on its own store, as a test drives it.
type replica struct {
	t     testing.TB
	dir   string
	store *Store
	f     *FSM
	group uint64
}

func newReplica(t testing.TB, group uint64) *replica {
	t.Helper()
	r := &replica{t: t, dir: t.TempDir(), group: group}
	r.open()
	return r
}

func (r *replica) open() {
	r.t.Helper()
	r.store = openStore(r.t, r.dir)
	f, err := New(r.store, Config{Group: r.group, Logger: testLogger(r.t)})
	if err != nil {
		r.t.Fatalf("new fsm: %v", err)
	}
	r.f = f
}

// restart closes the FSM and its store and opens them again from disk.
func (r *replica) restart() {
	r.t.Helper()
	_ = r.f.Close()
	if err := r.store.Close(); err != nil {
		r.t.Fatalf("close store: %v", err)
	}
	r.open()
}

func (r *replica) applyBatch(logs []*raft.Log) []*Result {
	r.t.Helper()
	out := r.f.ApplyBatch(logs)
	if len(out) != len(logs) {
		r.t.Fatalf("ApplyBatch returned %d results for %d logs", len(out), len(logs))
	}
	res := make([]*Result, len(out))
	for i, v := range out {
		if v != nil {
			res[i] = v.(*Result)
		}
	}
	return res
}

func (r *replica) digest() [32]byte {
	r.t.Helper()
	d, err := r.f.Digest()
	if err != nil {
		r.t.Fatalf("digest: %v", err)
	}
	return d
}

// logMaker numbers entries and stamps them with a controllable clock.
type logMaker struct {
	index uint64
	clock time.Time
}

func newLogMaker() *logMaker {
	return &logMaker{clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (m *logMaker) entry(c Command) *raft.Log {
	m.index++
	return &raft.Log{Index: m.index, Term: 1, Type: raft.LogCommand, Data: c.Encode(), AppendedAt: m.clock}
}

// snapshotInto streams a snapshot of from into to through raft's in-memory
// snapshot store, as raft does when it installs a snapshot on a follower.
func snapshotInto(t testing.TB, from, to *FSM) {
	t.Helper()
	snap, err := from.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer snap.Release()
	store := raft.NewInmemSnapshotStore()
	sink, err := store.Create(raft.SnapshotVersionMax, from.AppliedIndex(), 1, raft.Configuration{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	_, rc, err := store.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := to.Restore(rc); err != nil {
		t.Fatalf("restore: %v", err)
	}
}
