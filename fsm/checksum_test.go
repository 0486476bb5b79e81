package fsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// rewriteValue changes the stored value of key in place, as a flipped bit
// on disk would, bypassing the FSM.
func rewriteValue(t *testing.T, r *replica, key []byte, change func(v []byte) []byte) {
	t.Helper()
	err := r.store.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		return txn.Set(key, change(v))
	})
	if err != nil {
		t.Fatalf("rewrite %q: %v", key, err)
	}
}

func TestCorruptEventIsNeverServed(t *testing.T) {
	r := newReplica(t, 3)
	m := newLogMaker()
	payload := bytes.Repeat([]byte("payload-"), 16)
	r.applyBatch(append([]*raft.Log(nil), m.entry(Command{Op: OpPublish, Room: "lobby", Member: "a", Data: payload}), m.entry(Command{Op: OpPublish, Room: "lobby", Member: "a", Data: payload})))
	key := r.f.keys.event("lobby", 1, 2)
	rewriteValue(t, r, key, func(v []byte) []byte {
		i := bytes.Index(v, payload)
		v[i+5] ^= 0x01
		return v
	})
	_, err := r.f.History("lobby", 1, 10)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrStorage) {
		t.Fatalf("history of a corrupt event: err %v, want ErrCorrupt", err)
	}
	if d := r.f.Damaged(); d == nil || !bytes.Contains([]byte(d.Error()), []byte("group 3")) {
		t.Fatalf("Damaged() = %v, want the corruption naming group 3", d)
	}
	// Damage is sticky: rooms it could still read are refused too.
	if _, err := r.f.Members("lobby"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("members after damage: %v, want ErrCorrupt", err)
	}
	// A snapshot from a healthy replica repairs it.
	good := newReplica(t, 3)
	m2 := newLogMaker()
	good.applyBatch(append([]*raft.Log(nil), m2.entry(Command{Op: OpPublish, Room: "lobby", Member: "a", Data: payload}), m2.entry(Command{Op: OpPublish, Room: "lobby", Member: "a", Data: payload})))
	snapshotInto(t, good.f, r.f)
	if d := r.f.Damaged(); d != nil {
		t.Fatalf("still damaged after a restore: %v", d)
	}
	if r.digest() != good.digest() {
		t.Fatal("digests differ after the repair")
	}
}

func TestCorruptRoomRecordDamagesOnLoad(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(append([]*raft.Log(nil), m.entry(Command{Op: OpJoin, Room: "lobby", Member: "a"})))
	rewriteValue(t, r, r.f.keys.room("lobby"), func(v []byte) []byte { v[1] ^= 0x40; return v })
	r.restart() // opens: a damaged group must not keep the replica from starting
	if d := r.f.Damaged(); !errors.Is(d, ErrCorrupt) {
		t.Fatalf("Damaged() after loading a corrupt room record = %v", d)
	}
	if _, err := r.f.Room("lobby"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("room read from a damaged group: %v", err)
	}
	res := r.applyBatch(append([]*raft.Log(nil), m.entry(Command{Op: OpJoin, Room: "lobby", Member: "b"})))
	if !errors.Is(res[0].Err, ErrStorage) {
		t.Fatalf("apply on a damaged group: %v, want ErrStorage", res[0].Err)
	}
	if _, err := r.f.Snapshot(); err == nil {
		t.Fatal("a damaged group took a snapshot")
	}
}

// Records written before checksums existed (version 1) still read, and a
// snapshot restore rewrites them with checksums; digests do not depend on
// which version a record is stored in.
func TestVersion1RecordsReadAndUpgrade(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(append([]*raft.Log(nil),
		m.entry(Command{Op: OpJoin, Room: "lobby", Member: "a", Meta: []byte("m")}),
		m.entry(Command{Op: OpPublish, Room: "lobby", Member: "a", Data: []byte("hello"), Key: "k1"})))
	before := r.digest()
	// Rewrite every record of the group as version 1: drop the checksum.
	var keys [][]byte
	_ = r.store.db.View(func(txn *badger.Txn) error {
		return scanPrefix(txn, r.f.keys.prefix, false, func(k, _ []byte) error {
			keys = append(keys, bytes.Clone(k))
			return nil
		})
	})
	v1 := 0
	for _, k := range keys {
		rewriteValue(t, r, k, func(v []byte) []byte {
			if v[0] != recordV2 {
				return v
			}
			v1++
			out := bytes.Clone(v[:len(v)-crcLen])
			out[0] = recordV1
			return out
		})
	}
	if v1 < 5 {
		t.Fatalf("only %d records rewritten as version 1", v1)
	}
	r.restart()
	h, err := r.f.History("lobby", 1, 10)
	if err != nil || len(h.Events) != 2 || string(h.Events[1].Data) != "hello" {
		t.Fatalf("history from version 1 records: %+v, %v", h, err)
	}
	if r.digest() != before {
		t.Fatal("digest changed with the record version")
	}
	to := newReplica(t, 1)
	snapshotInto(t, r.f, to.f)
	_ = to.store.db.View(func(txn *badger.Txn) error {
		return scanPrefix(txn, to.f.keys.prefix, true, func(k, v []byte) error {
			if k[prefixLen] != kindGrave && v[0] != recordV2 {
				t.Errorf("record %q is version %d after a restore", k, v[0])
			}
			return nil
		})
	})
	if to.digest() != before {
		t.Fatal("digest changed through the restore")
	}
}
