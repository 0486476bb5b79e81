package logstore

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestGroupCommitMerges(t *testing.T) {
	const groups, calls = 64, 50
	dir := t.TempDir()
	b := openTest(t, KindBadger, dir)
	c := b.(*badgerBackend).c
	stores := make([]Store, groups)
	for i := range stores {
		stores[i] = mustGroup(t, b, uint64(i+1))
	}
	syncsBefore := c.syncs.Load()
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= calls; i++ {
				if err := stores[g].StoreLogs([]*raft.Log{fullLog(i, 100)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := c.syncs.Load() - syncsBefore
	t.Logf("%d StoreLogs calls, %d syncs", groups*calls, syncs)
	if syncs >= groups*calls/4 {
		t.Fatalf("%d syncs for %d calls: concurrent writes were not merged", syncs, groups*calls)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, KindBadger, dir)
	defer b.Close()
	for g := range groups {
		s := mustGroup(t, b, uint64(g+1))
		checkBounds(t, s, 1, calls)
		for i := uint64(1); i <= calls; i++ {
			checkLog(t, s, fullLog(i, 100))
		}
	}
}

// TestIntentRecovery leaves intents behind as a crash in the middle of a
// multi-transaction write would, and checks Open finishes them.
func TestIntentRecovery(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, KindBadger, dir)
	bb := b.(*badgerBackend)
	s1, s2 := mustGroup(t, b, 1), mustGroup(t, b, 2)
	if err := s1.StoreLogs(logsRange(1, 10, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s2.StoreLogs(logsRange(1, 10, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	// Group 1: the first part of a StoreLogs of 11..20 landed, then crash.
	r := &request{}
	r.set(groupPrefix(nsIntent, 1), encodeIntent(intentDeleteLogs, 11, 20))
	for _, l := range logsRange(11, 14, 10) {
		addLogSets(r, 1, l.Index, encodeLog(nil, l))
	}
	// Group 2: a DropGroup started but deleted nothing yet.
	r.set(groupPrefix(nsIntent, 2), encodeIntent(intentDropGroup, 0, 0))
	if err := bb.c.submit(r); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTest(t, KindBadger, dir)
	defer b.Close()
	s1 = mustGroup(t, b, 1)
	checkBounds(t, s1, 1, 10)
	checkMissing(t, s1, 11)
	if ids, err := b.Groups(); err != nil || len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("Groups = %v, %v; want [1]", ids, err)
	}
	s2 = mustGroup(t, b, 2)
	checkBounds(t, s2, 0, 0)
	if _, err := s2.GetUint64([]byte("CurrentTerm")); err != ErrKeyNotFound {
		t.Fatalf("dropped group kept its term: %v", err)
	}
}

// TestOversizedDeleteRange deletes more entries than fit one transaction.
func TestOversizedDeleteRange(t *testing.T) {
	b, err := Open(Config{Kind: KindBadger, Dir: t.TempDir(), Logger: discardLogger(), BadgerMemTableSize: minBadgerMemTableSize})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := b.(*badgerBackend).c
	s := mustGroup(t, b, 1)
	n := uint64(c.maxCount) * 3
	for lo := uint64(1); lo <= n; lo += 500 {
		if err := s.StoreLogs(logsRange(lo, min(lo+499, n), 8)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, n-1); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, n, n)
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, kind := range testKinds {
		b := openTest(t, kind, t.TempDir())
		s := mustGroup(t, b, 1)
		if err := s.StoreLogs(logsRange(1, 3, 10)); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
