package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestRestoreRejectsDamagedSnapshots(t *testing.T) {
	valid := validSnapshot(t)
	flip := func(i int) []byte {
		b := bytes.Clone(valid)
		b[i] ^= 0x40
		return b
	}
	cases := map[string][]byte{
		"empty":          nil,
		"wrong magic":    flip(0),
		"flipped record": flip(len(valid) / 2),
		"flipped crc":    flip(len(valid) - 1),
		"truncated":      valid[:len(valid)-5],
		"trailing bytes": append(bytes.Clone(valid), 1),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			r := newReplica(t, 1)
			m := newLogMaker()
			r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "old", Member: "x"}))
			err := r.f.Restore(io.NopCloser(bytes.NewReader(b)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore = %v, want ErrBadSnapshot", err)
			}
			if res := r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "old", Member: "x"})); !errors.Is(res[0].Err, ErrNeedsRestore) {
				t.Fatalf("apply after failed restore: %v", res[0].Err)
			}
			if _, err := r.f.History("old", 0, 0); !errors.Is(err, ErrNeedsRestore) {
				t.Fatalf("read after failed restore: %v", err)
			}
			// The mark survives a restart: a half-restored group never
			// passes for a whole one.
			r.restart()
			if r.f.AppliedIndex() != 0 {
				t.Fatalf("applied index %d after failed restore and restart", r.f.AppliedIndex())
			}
			if err := r.f.Restore(io.NopCloser(bytes.NewReader(valid))); err != nil {
				t.Fatalf("good restore after a bad one: %v", err)
			}
			if _, err := r.f.Room("old"); !errors.Is(err, ErrRoomNotFound) {
				t.Fatalf("state from before the restore survived: %v", err)
			}
			if info, err := r.f.Room("b"); err != nil || info.LastSeq != 2 || info.FirstSeq != 2 {
				t.Fatalf("restored room b = %+v, %v", info, err)
			}
		})
	}
}

// A crash in the middle of a restore (simulated by leaving the mark) makes
// the group ask for a restore when it opens again.
func TestInterruptedRestoreIsDetectedOnOpen(t *testing.T) {
	r := newReplica(t, 1)
	r.applyBatch(newLogMaker().batchOf(Command{Op: OpPublish, Room: "a", Member: "x"}))
	err := r.f.db.Update(func(txn *badger.Txn) error { return txn.Set(restoreMarkKey(1), []byte{1}) })
	if err != nil {
		t.Fatal(err)
	}
	r.restart()
	if r.f.AppliedIndex() != 0 {
		t.Fatalf("applied index %d, want 0", r.f.AppliedIndex())
	}
	if _, err := r.f.Snapshot(); !errors.Is(err, ErrNeedsRestore) {
		t.Fatalf("Snapshot = %v, want ErrNeedsRestore", err)
	}
}

// Persist streams: the snapshot of a group is written while apply goes on,
// and shows the state at the moment Snapshot was called.
func TestSnapshotIsAPointInTimeView(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("before")}))
	want := r.digest()
	snap, err := r.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("after")}))
	var buf bytes.Buffer
	if err := snap.(*snapshot).writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	dst := newReplica(t, 1)
	if err := dst.f.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if dst.digest() != want {
		t.Fatal("snapshot contains writes made after Snapshot returned")
	}
}
