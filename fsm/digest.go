package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// Digest returns a hash of the group's logical state: applied index and
// clock, defaults, and every room's record, members, history window and
// live idempotency keys. Replicas that applied the same log have equal
// digests whatever their batching, snapshots, restarts or sweeping, so
// comparing digests finds divergence. It reads one consistent view.
func (f *FSM) Digest() (sum [32]byte, err error) {
	defer func() { err = f.noteCorrupt(err) }()
	if err := f.checkReadable(); err != nil {
		return sum, err
	}
	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	h := sha256.New()
	field := func(b []byte) {
		h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		h.Write(b)
	}
	v, err := getValue(txn, f.keys.applied())
	if err != nil {
		return sum, err
	}
	applied, err := decodeApplied(orDefault(v, appliedState{}.encode()))
	if err != nil {
		return sum, corrupt("applied state", f.keys.applied(), err)
	}
	field(binary.AppendUvarint(binary.AppendVarint(nil, applied.Clock), applied.Index))
	if v, err = getValue(txn, f.keys.defaults()); err != nil {
		return sum, err
	}
	// Records are hashed re-encoded, never as stored: a version 1 record
	// (no checksum) and its version 2 copy hold the same state.
	defaults, err := decodeRoomConfig(orDefault(v, encodeRoomConfig(DefaultRoomConfig)))
	if err != nil {
		return sum, corrupt("group defaults", f.keys.defaults(), err)
	}
	field(encodeRoomConfig(defaults))
	if v, err = getValue(txn, f.keys.namespaces()); err != nil {
		return sum, err
	}
	if v != nil { // absent adds nothing, so digests of states without rules stay as they were
		ns, err := decodeNamespaces(v)
		if err != nil {
			return sum, corrupt("namespaces", f.keys.namespaces(), err)
		}
		field(encodeNamespaces(ns))
	}

	type roomEntry struct {
		name string
		rec  roomRecord
	}
	var rooms []roomEntry
	err = scanPrefix(txn, f.keys.kind(kindRoom), true, func(k, v []byte) error {
		name, _, _ := f.keys.parseRoomKey(k, kindRoom)
		rec, err := decodeRoom(v)
		if err != nil {
			return corrupt("room", k, err)
		}
		rooms = append(rooms, roomEntry{name, rec})
		return nil
	})
	if err != nil {
		return sum, err
	}
	tail := f.newTails(txn, true)
	for i := range rooms {
		tail.recover(rooms[i].name, &rooms[i].rec)
	}
	tail.close()
	for _, r := range rooms {
		logical := r.rec
		logical.PhysFirstSeq, logical.PhysKeyFirst = 0, 0
		field([]byte(r.name))
		field(logical.encode())
		err := scanPrefix(txn, f.keys.incarnation(kindMember, r.name, r.rec.Epoch), true, func(k, v []byte) error {
			field(k[len(f.keys.prefix):]) // the digest must not depend on the group id
			m, err := decodeMember("", v)
			if err != nil {
				return corrupt("member", k, err)
			}
			field(m.encode())
			return nil
		})
		if err != nil {
			return sum, err
		}
		if r.rec.FirstSeq <= r.rec.LastSeq {
			events, _, err := f.readEvents(txn, r.name, r.rec.Epoch, r.rec.FirstSeq, r.rec.LastSeq, 0)
			if err != nil {
				return sum, err
			}
			for i := range events {
				field(encodeEvent(&events[i], events[i].Time.UnixNano()))
			}
		}
		for ord := r.rec.KeyFirst; ord < r.rec.KeyNext; ord++ {
			if err := f.digestKey(txn, field, r.name, r.rec.Epoch, ord); err != nil {
				return sum, err
			}
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func (f *FSM) digestKey(txn *badger.Txn, field func([]byte), name string, epoch, ord uint64) error {
	ok := f.keys.order(name, epoch, ord)
	v, err := getValue(txn, ok)
	if err != nil {
		return err
	}
	if v == nil {
		return corrupt("key order", ok, errors.New("missing inside the room's key window"))
	}
	key, t, err := decodeOrder(v)
	if err != nil {
		return corrupt("key order", ok, err)
	}
	field(encodeOrder(key, t))
	ik := f.keys.idemKey(name, epoch, key)
	kv, err := getValue(txn, ik)
	if err != nil {
		return err
	}
	if kv == nil {
		field(nil)
		return nil
	}
	kr, err := decodeKeyRecord(kv)
	if err != nil {
		return corrupt("key", ik, err)
	}
	field(kr.encode())
	return nil
}

func orDefault(v, def []byte) []byte {
	if v == nil {
		return def
	}
	return v
}
