package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func FuzzDecodeCommand(f *testing.F) {
	seeds := []Command{
		{Op: OpJoin, Room: "lobby", Member: "alice", Meta: []byte(`{"a":1}`), Ephemeral: true, NodeID: "n1", NodeEpoch: 7},
		{Op: OpLeave, Room: "lobby", Member: "alice"},
		{Op: OpPublish, Room: "lobby", Member: "bob", Data: []byte("hello"), Key: "k1", HasExpectSeq: true, ExpectSeq: 41},
		{Op: OpRoomConfig, Room: "r", Config: RoomConfig{HistoryMaxCount: 5, HistoryMaxAge: time.Minute, KeyWindowCount: 3}, ConfigMask: allConfigFields},
		{Op: OpRoomDelete, Room: "r"},
		{Op: OpExpireNode, NodeID: "n1", NodeEpoch: 3, Limit: 10},
		{Op: OpTick, Limit: 5},
		{Op: OpGroupDefaults, ConfigMask: FieldMembersOnly, Config: RoomConfig{MembersOnly: true}},
		{Op: OpPublish, Room: "feed", Member: "bob", Data: []byte("1"), FromClient: true},
		{Op: OpNamespaces, Namespaces: Namespaces{Revision: 12, Rules: []Namespace{
			{Prefix: "", Config: RoomConfig{MaxMembers: 3}, Mask: FieldMaxMembers},
			{Prefix: "chat:", Config: RoomConfig{HistoryMaxCount: 9, TransientPresence: true}, Mask: FieldHistoryMaxCount | FieldTransientPresence},
		}}},
	}
	for _, c := range seeds {
		f.Add(c.Encode())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error does not wrap ErrBadCommand: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes to the same bytes: one encoding per command.
		if again := c.Encode(); !bytes.Equal(again, b) {
			t.Fatalf("decode/encode is not the identity:\n in  %x\n out %x", b, again)
		}
	})
}

// FuzzRestore feeds arbitrary bytes, and damaged versions of a real
// snapshot, to Restore: it must fail with a clear error (leaving the FSM
// refusing to apply) or succeed with a state that reads back; it never
// panics.
func FuzzRestore(f *testing.F) {
	valid := validSnapshot(f)
	f.Add(valid)
	f.Add([]byte("HERALDS1"))
	f.Add(valid[:len(valid)/2])
	f.Add(append(bytes.Clone(valid), 0))
	r := newReplica(f, 1)
	f.Fuzz(func(t *testing.T, b []byte) {
		err := r.f.Restore(io.NopCloser(bytes.NewReader(b)))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) && !errors.Is(err, ErrStorage) {
				t.Fatalf("restore error wraps neither ErrBadSnapshot nor ErrStorage: %v", err)
			}
			res := r.f.ApplyBatch(newLogMaker().batchOf(Command{Op: OpTick}))
			if err := res[0].(*Result).Err; !errors.Is(err, ErrNeedsRestore) {
				t.Fatalf("apply after a failed restore: %v, want ErrNeedsRestore", err)
			}
			return
		}
		// A snapshot that restored is readable throughout.
		if _, err := r.f.Digest(); err != nil {
			t.Fatalf("restored state does not read back: %v", err)
		}
	})
}

func (m *logMaker) batchOf(cs ...Command) []*raft.Log {
	out := make([]*raft.Log, len(cs))
	for i, c := range cs {
		out[i] = m.entry(c)
	}
	return out
}

// validSnapshot returns the bytes of a snapshot of a small busy group.
func validSnapshot(t testing.TB) []byte {
	src := newReplica(t, 1)
	m := newLogMaker()
	src.applyBatch(m.batchOf(
		Command{Op: OpJoin, Room: "a", Member: "alice", Meta: []byte("m"), Ephemeral: true, NodeID: "n", NodeEpoch: 1},
		Command{Op: OpPublish, Room: "a", Member: "alice", Data: []byte("x"), Key: "k"},
		Command{Op: OpRoomConfig, Room: "b", ConfigMask: FieldHistoryMaxCount, Config: RoomConfig{HistoryMaxCount: 1}},
		Command{Op: OpPublish, Room: "b", Member: "bob", Data: []byte("1")},
		Command{Op: OpPublish, Room: "b", Member: "bob", Data: []byte("2")},
		Command{Op: OpRoomDelete, Room: "a"},
	))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if err := snap.(*snapshot).writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzRestoreRecords wraps fuzzed records in a well-formed snapshot (right
// framing, count and checksum), so the fuzzer reaches record validation
// and loading instead of stopping at the checksum.
func FuzzRestoreRecords(f *testing.F) {
	src := newReplica(f, 1)
	src.applyBatch(newLogMaker().batchOf(
		Command{Op: OpJoin, Room: "a", Member: "alice", Ephemeral: true, NodeID: "n", NodeEpoch: 1},
		Command{Op: OpPublish, Room: "a", Member: "alice", Data: []byte("x"), Key: "k"},
	))
	txn := src.f.db.NewTransaction(false)
	_ = scanPrefix(txn, src.f.keys.prefix, true, func(k, v []byte) error {
		f.Add(bytes.Clone(k[len(src.f.keys.prefix):]), bytes.Clone(v), []byte{}, []byte{})
		return nil
	})
	txn.Discard()
	r := newReplica(f, 1)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 []byte) {
		var buf bytes.Buffer
		sw, _ := newSnapshotWriter(&buf, 1)
		for _, rec := range [][2][]byte{{k1, v1}, {k2, v2}} {
			if len(rec[0]) == 0 {
				continue
			}
			_ = sw.field(rec[0])
			_ = sw.field(rec[1])
			sw.count++
		}
		_ = sw.finish()
		err := r.f.Restore(io.NopCloser(&buf))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) && !errors.Is(err, ErrStorage) {
				t.Fatalf("restore error wraps neither ErrBadSnapshot nor ErrStorage: %v", err)
			}
			return
		}
		_, _ = r.f.Digest()
		if names, err := r.f.Rooms(); err == nil {
			for _, name := range names {
				_, _ = r.f.History(name, 0, 10)
				_, _ = r.f.Members(name)
			}
		}
		r.f.ApplyBatch(newLogMaker().batchOf(Command{Op: OpTick}, Command{Op: OpPublish, Room: "a", Member: "x", Key: "k"},
			Command{Op: OpExpireNode, NodeID: "n", NodeEpoch: 9}))
	})
}
