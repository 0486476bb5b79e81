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

// A room record written before OwnMask existed has no such byte: the
// fields its config set away from the built-in defaults count as its own,
// so namespace rules do not undo what room_config once set.
func TestRoomRecordWithoutOwnMask(t *testing.T) {
	cfg := DefaultRoomConfig
	cfg.HistoryMaxCount, cfg.MembersOnly = 5, true
	e := encoder{}
	e.Byte(recordV1)                      // the only version written before OwnMask
	for _, v := range []uint64{7, 3, 1} { // epoch, last seq, first seq
		e.Uvarint(v)
	}
	e.Varint(0)
	e.Uvarint(1)
	e.Uvarint(1)
	e.Varint(0)
	encodeConfig(&e, cfg, firstConfigFields) // as the first release wrote it
	e.Uvarint(0)
	e.Uvarint(1)
	e.Uvarint(1)
	r, err := decodeRoom(e.Buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := FieldHistoryMaxCount | FieldMembersOnly; r.OwnMask != want {
		t.Errorf("own mask %#x, want %#x", r.OwnMask, want)
	}
	if r.Config != cfg {
		t.Errorf("config %+v, want %+v", r.Config, cfg)
	}
	again, err := decodeRoom(r.encode())
	if err != nil || again != r {
		t.Errorf("re-encoded record reads as %+v (%v), want %+v", again, err, r)
	}
}

// Commands that do not use the later fields encode as the first release
// wrote them, so a log from before them reads the same.
func TestCommandsWithoutLaterFieldsKeepTheirEncoding(t *testing.T) {
	pub := (&Command{Op: OpPublish, Room: "r", Member: "m", Data: []byte(`1`)}).Encode()
	client := (&Command{Op: OpPublish, Room: "r", Member: "m", Data: []byte(`1`), FromClient: true}).Encode()
	if len(client) != len(pub)+1 {
		t.Fatalf("a client's publish is %d bytes, the backend's %d: want one more", len(client), len(pub))
	}
	cfg := (&Command{Op: OpRoomConfig, Room: "r", Config: RoomConfig{HistoryMaxCount: 3}, ConfigMask: FieldHistoryMaxCount}).Encode()
	e := encoder{}
	e.Byte(commandVersion)
	e.Byte(byte(OpRoomConfig))
	e.String("r")
	e.Byte(byte(FieldHistoryMaxCount))
	for _, v := range []uint64{3, 0, 0, 0} {
		e.Uvarint(v)
	}
	e.Bool(false)
	if string(cfg) != string(e.Buf) {
		t.Errorf("room_config encodes as %x, the first release as %x", cfg, e.Buf)
	}
	c, err := DecodeCommand(client)
	if err != nil || !c.FromClient {
		t.Errorf("client publish decodes as %+v, %v", c, err)
	}
	full := Command{Op: OpNamespaces, Namespaces: Namespaces{Revision: 9, Rules: []Namespace{
		{Prefix: "", Config: RoomConfig{MaxMembers: 4}, Mask: FieldMaxMembers},
		{Prefix: "chat:", Config: RoomConfig{NoClientPublish: true, TransientPresence: true}, Mask: FieldNoClientPublish | FieldTransientPresence},
	}}}
	c, err = DecodeCommand(full.Encode())
	if err != nil || c.Namespaces.Revision != 9 || len(c.Namespaces.Rules) != 2 || c.Namespaces.Rules[1] != full.Namespaces.Rules[1] ||
		c.Namespaces.Rules[0] != full.Namespaces.Rules[0] {
		t.Errorf("namespaces decode as %+v, %v; want %+v", c.Namespaces, err, full.Namespaces)
	}
}
