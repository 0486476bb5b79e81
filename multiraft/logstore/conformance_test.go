package logstore

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Every test here runs over every backend, so callers can switch Kind
// without behaviour changes.

// onEachKind runs test as a subtest on a new, empty store of each kind.
func onEachKind(t *testing.T, test func(t *testing.T, b Backend)) {
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			b := openTest(t, kind, t.TempDir())
			defer b.Close()
			test(t, b)
		})
	}
}

func TestEmptyStore(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s := mustGroup(t, b, 1)
		checkBounds(t, s, 0, 0)
		checkMissing(t, s, 1)
		has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
		if err != nil || has {
			t.Fatalf("HasExistingState = %v, %v; want false, nil", has, err)
		}
	})
}

func TestLogRoundTrip(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s := mustGroup(t, b, 7)
		single := fullLog(1, 100)
		if err := s.StoreLog(single); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, single)
		checkBounds(t, s, 1, 1)

		// Every log type, empty and nil fields, a zero AppendedAt and
		// entries large enough to be chunked.
		logs := logsRange(2, 13, 300)
		logs[0].Data, logs[0].Extensions = nil, nil
		logs[1].AppendedAt = logs[1].AppendedAt.AddDate(-100, 0, 0)
		logs[2].AppendedAt = time.Time{}
		logs[3].AppendedAt = time.Now() // monotonic reading and local zone
		logs[4].Extensions = nil
		logs[6].Data = bytes.Repeat([]byte{0xab}, 3*maxInlineValue+17)
		logs[7].Data = bytes.Repeat([]byte{0xcd}, maxInlineValue)
		logs[8].Data = bytes.Repeat([]byte{0xef}, 1<<20)
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		seen := map[raft.LogType]bool{}
		for _, l := range logs {
			checkLog(t, s, l)
			seen[l.Type] = true
		}
		if len(seen) != 6 {
			t.Fatalf("test covers %d log types, want all 6", len(seen))
		}
		checkBounds(t, s, 1, 13)
		checkMissing(t, s, 0)
		checkMissing(t, s, 14)
		if err := s.StoreLogs(nil); err != nil {
			t.Fatalf("store no logs: %v", err)
		}
	})
}

func TestDeleteRange(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s := mustGroup(t, b, 1)
		if err := s.StoreLogs(logsRange(1, 100, 20)); err != nil {
			t.Fatal(err)
		}
		// Compaction after a snapshot removes a prefix.
		if err := s.DeleteRange(1, 40); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 41, 100)
		checkMissing(t, s, 40)
		checkLog(t, s, fullLog(41, 20))
		// A conflict on a follower removes a suffix.
		if err := s.DeleteRange(91, 100); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 41, 90)
		checkMissing(t, s, 91)
		// Overwrite the suffix with entries from a new term.
		relog := logsRange(91, 95, 20)
		for _, l := range relog {
			l.Term = 99
		}
		if err := s.StoreLogs(relog); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 41, 95)
		checkLog(t, s, relog[4])
		// Ranges beyond the log and empty ranges are no-ops.
		if err := s.DeleteRange(200, 300); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRange(50, 49); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 41, 95)
		// After restoring a snapshot raft stores past a gap.
		if err := s.StoreLogs(logsRange(500, 501, 20)); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 41, 501)
		if err := s.DeleteRange(0, 95); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 500, 501)
		if err := s.DeleteRange(0, 1<<63); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, s, 0, 0)
	})
}

func TestStableStore(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s := mustGroup(t, b, 3)
		// raft recognises missing keys by this exact text, the same
		// error raft-boltdb returns.
		if v, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" || v != nil {
			t.Fatalf("Get missing = %q, %v; want nil, \"not found\"", v, err)
		}
		if v, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" || v != 0 {
			t.Fatalf("GetUint64 missing = %d, %v; want 0, \"not found\"", v, err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-2" {
			t.Fatalf("Get = %q, %v", v, err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("node-3")); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-3" {
			t.Fatalf("Get after overwrite = %q, %v", v, err)
		}
		if err := s.SetUint64([]byte("CurrentTerm"), 1<<40+5); err != nil {
			t.Fatal(err)
		}
		if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 1<<40+5 {
			t.Fatalf("GetUint64 = %d, %v", v, err)
		}
		if _, err := s.GetUint64([]byte("LastVoteCand")); err == nil {
			t.Fatal("GetUint64 of a 6-byte value succeeded")
		}
		has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
		if err != nil || !has {
			t.Fatalf("HasExistingState = %v, %v; want true, nil", has, err)
		}
	})
}

func TestGroupsIsolated(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s1, s2 := mustGroup(t, b, 1), mustGroup(t, b, 2)
		l1, l2 := fullLog(5, 10), fullLog(5, 20)
		l2.Term = 42
		if err := s1.StoreLog(l1); err != nil {
			t.Fatal(err)
		}
		if err := s2.StoreLogs([]*raft.Log{l2, fullLog(6, 1)}); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s1, l1)
		checkLog(t, s2, l2)
		checkBounds(t, s1, 5, 5)
		checkBounds(t, s2, 5, 6)
		if err := s1.SetUint64([]byte("k"), 1); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.GetUint64([]byte("k")); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("stable key leaked across groups: %v", err)
		}
		if err := s2.DeleteRange(0, 10); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s1, l1)
		checkBounds(t, s2, 0, 0)
	})
}

func TestReopen(t *testing.T) {
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			b := openTest(t, kind, dir)
			for id := uint64(1); id <= 3; id++ {
				s := mustGroup(t, b, id)
				if err := s.StoreLogs(logsRange(id*10, id*10+9, int(id)*100)); err != nil {
					t.Fatal(err)
				}
				if err := s.DeleteRange(id*10, id*10); err != nil {
					t.Fatal(err)
				}
				if err := s.SetUint64([]byte("CurrentTerm"), id); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = openTest(t, kind, dir)
			defer b.Close()
			for id := uint64(1); id <= 3; id++ {
				s := mustGroup(t, b, id)
				checkBounds(t, s, id*10+1, id*10+9)
				for _, l := range logsRange(id*10+1, id*10+9, int(id)*100) {
					checkLog(t, s, l)
				}
				if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != id {
					t.Fatalf("group %d term = %d, %v", id, v, err)
				}
			}
		})
	}
}

func TestDropGroupAndGroups(t *testing.T) {
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			b := openTest(t, kind, dir)
			if ids, err := b.Groups(); err != nil || len(ids) != 0 {
				t.Fatalf("Groups on empty backend = %v, %v", ids, err)
			}
			stores := map[uint64]Store{}
			for _, id := range []uint64{300, 2, 1 << 40, 17} {
				stores[id] = mustGroup(t, b, id)
				if err := stores[id].StoreLogs(logsRange(1, 5, 10)); err != nil {
					t.Fatal(err)
				}
				if err := stores[id].Set([]byte("x"), []byte("y")); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.Group(17); err == nil {
				t.Fatal("opening an open group twice succeeded")
			}
			if ids, err := b.Groups(); err != nil || !slices.Equal(ids, []uint64{2, 17, 300, 1 << 40}) {
				t.Fatalf("Groups = %v, %v", ids, err)
			}
			if err := b.DropGroup(17); err != nil {
				t.Fatal(err)
			}
			if err := stores[17].StoreLog(fullLog(6, 1)); !errors.Is(err, ErrClosed) {
				t.Fatalf("store on dropped group: err = %v, want ErrClosed", err)
			}
			if err := b.DropGroup(12345); err != nil {
				t.Fatalf("dropping an unknown group: %v", err)
			}
			if ids, err := b.Groups(); err != nil || !slices.Equal(ids, []uint64{2, 300, 1 << 40}) {
				t.Fatalf("Groups after drop = %v, %v", ids, err)
			}
			checkBounds(t, stores[2], 1, 5)
			checkLog(t, stores[300], fullLog(3, 10))
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}

			b = openTest(t, kind, dir)
			defer b.Close()
			if ids, err := b.Groups(); err != nil || !slices.Equal(ids, []uint64{2, 300, 1 << 40}) {
				t.Fatalf("Groups after reopen = %v, %v", ids, err)
			}
			s := mustGroup(t, b, 17)
			checkBounds(t, s, 0, 0)
			if _, err := s.Get([]byte("x")); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("dropped group kept stable data: %v", err)
			}
			checkLog(t, mustGroup(t, b, 1<<40), fullLog(5, 10))
			// An open group may be dropped and recreated.
			if err := b.DropGroup(2); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, mustGroup(t, b, 2), 0, 0)
		})
	}
}

func TestClosed(t *testing.T) {
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			b := openTest(t, kind, t.TempDir())
			s := mustGroup(t, b, 1)
			if err := s.StoreLog(fullLog(1, 1)); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			var l raft.Log
			_, errFirst := s.FirstIndex()
			_, errLast := s.LastIndex()
			_, errGet := s.Get([]byte("k"))
			_, errGetU := s.GetUint64([]byte("k"))
			_, errGroup := b.Group(2)
			_, errGroups := b.Groups()
			for i, err := range []error{
				errFirst, errLast, s.GetLog(1, &l), s.StoreLog(fullLog(2, 1)),
				s.StoreLogs(logsRange(2, 3, 1)), s.DeleteRange(1, 1),
				s.Set([]byte("k"), nil), s.SetUint64([]byte("k"), 1), errGet, errGetU,
				errGroup, errGroups, b.DropGroup(1),
			} {
				if !errors.Is(err, ErrClosed) {
					t.Errorf("call %d after Close: err = %v, want ErrClosed", i, err)
				}
			}
		})
	}
}

func TestLargeBatchAtomic(t *testing.T) {
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			b := openTest(t, kind, dir)
			s := mustGroup(t, b, 1)
			// The largest batch raft sends with MaxAppendEntries = 512.
			logs := logsRange(1, 512, 64<<10)
			if err := s.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, s, 1, 512)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = openTest(t, kind, dir)
			defer b.Close()
			s = mustGroup(t, b, 1)
			checkBounds(t, s, 1, 512)
			for _, l := range logs {
				checkLog(t, s, l)
			}
			if err := s.DeleteRange(1, 512); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, s, 0, 0)
		})
	}
}

func TestParseKind(t *testing.T) {
	for _, s := range []string{"badger", "bolt", "wal"} {
		if k, err := ParseKind(s); err != nil || string(k) != s {
			t.Errorf("ParseKind(%q) = %q, %v", s, k, err)
		}
	}
	if _, err := ParseKind("rocks"); err == nil || !strings.Contains(err.Error(), "rocks") {
		t.Errorf("ParseKind(rocks) err = %v", err)
	}
	if _, err := Open(Config{}); err == nil {
		t.Error("Open without Dir succeeded")
	}
}

func TestCloseGroupKeepsData(t *testing.T) {
	onEachKind(t, func(t *testing.T, b Backend) {
		s := mustGroup(t, b, 5)
		if err := s.StoreLogs(logsRange(1, 3, 10)); err != nil {
			t.Fatal(err)
		}
		if err := b.CloseGroup(5); err != nil {
			t.Fatal(err)
		}
		if err := s.StoreLog(fullLog(4, 1)); !errors.Is(err, ErrClosed) {
			t.Fatalf("store on a closed group: err = %v, want ErrClosed", err)
		}
		if err := b.CloseGroup(5); err != nil {
			t.Fatalf("closing a closed group: %v", err)
		}
		again := mustGroup(t, b, 5)
		checkBounds(t, again, 1, 3)
		checkLog(t, again, fullLog(3, 10))
	})
}

// dataDirWithTerm returns a data dir where a store of kind keeps group
// 1's term, 3.
func dataDirWithTerm(t *testing.T, kind Kind) string {
	t.Helper()
	dir := t.TempDir()
	b := openTest(t, kind, dir)
	if err := mustGroup(t, b, 1).SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A data dir keeps the log store it began with: opening another kind
// there would start raft with no term and no vote.
func TestOtherKindRefused(t *testing.T) {
	for _, first := range testKinds {
		dir := dataDirWithTerm(t, first)
		for _, other := range testKinds {
			if other == first {
				continue
			}
			_, err := Open(Config{Kind: other, Dir: dir, Logger: discardLogger()})
			if err == nil || !strings.Contains(err.Error(), string(first)) {
				t.Errorf("open %s where %s keeps its log: err = %v, want a refusal naming %s", other, first, err, first)
			}
		}
		_ = openTest(t, first, dir).Close()
	}
}

// Opened without a kind, a data dir keeps the store it began with, and a
// new one takes DefaultKind.
func TestKindOfTheDataDirKept(t *testing.T) {
	kindOf := func(b Backend) Kind {
		switch b.(type) {
		case *badgerBackend:
			return KindBadger
		case *boltBackend:
			return KindBolt
		case *walBackend:
			return KindWAL
		}
		t.Fatalf("unknown backend %T", b)
		return ""
	}
	fresh, err := Open(Config{Dir: t.TempDir(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if got := kindOf(fresh); got != DefaultKind {
		t.Errorf("a new data dir opened %s, want the default %s", got, DefaultKind)
	}
	_ = fresh.Close()
	for _, first := range testKinds {
		dir := dataDirWithTerm(t, first)
		b, err := Open(Config{Dir: dir, Logger: discardLogger()})
		if err != nil {
			t.Fatalf("reopen a %s data dir without a kind: %v", first, err)
		}
		if got := kindOf(b); got != first {
			t.Errorf("a %s data dir reopened as %s", first, got)
		}
		term, err := mustGroup(t, b, 1).GetUint64([]byte("CurrentTerm"))
		if err != nil || term != 3 {
			t.Errorf("%s reopened without a kind: term %d (%v), want 3", first, term, err)
		}
		_ = b.Close()
	}
}
