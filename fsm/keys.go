package fsm

import (
	"encoding/binary"
	"fmt"
)

// Key layout in the node's badger DB. Every key of group G starts with
// groupPrefix(G) = 'g' + G (8 bytes, big endian), so a group's state is one
// prefix: a snapshot streams it and a restore replaces it. After the prefix
// comes a kind byte:
//
//	a                                  applied index, term and clock
//	d                                  group defaults (RoomConfig)
//	n                                  namespace rules (Namespaces)
//	m room                             room record
//	u room epoch member                member record
//	e room epoch seq                   event record
//	k room epoch key                   idempotency key record
//	o room epoch ordinal               key order record (ordinal -> key)
//	x room epoch                       grave: a deleted incarnation to sweep
//
// room is its length (2 bytes) then its bytes, so no room name is a prefix
// of another's keys; epoch, seq and ordinal are 8 bytes big endian, so they
// sort numerically. Rooms are keyed by epoch below the room record, so a
// deleted incarnation's leftovers never mix with the next one.
//
// restorePrefix(G) = 'r' + G marks an unfinished restore. It lies outside
// the group prefix so that clearing the group does not clear the mark.
const (
	kindApplied  = 'a'
	kindDefaults = 'd'
	kindNS       = 'n'
	kindRoom     = 'm'
	kindMember   = 'u'
	kindEvent    = 'e'
	kindKey      = 'k'
	kindOrder    = 'o'
	kindGrave    = 'x'
)

func groupPrefix(group uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'g'}, group)
}

// prefixLen is the length of every group prefix: 'g' and the group id.
const prefixLen = 9

func restoreMarkKey(group uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'r'}, group)
}

// keyspace builds the keys of one group.
type keyspace struct {
	prefix []byte // groupPrefix(group)
}

func (k keyspace) kind(kind byte) []byte {
	b := make([]byte, 0, len(k.prefix)+1)
	return append(append(b, k.prefix...), kind)
}

func (k keyspace) applied() []byte    { return k.kind(kindApplied) }
func (k keyspace) defaults() []byte   { return k.kind(kindDefaults) }
func (k keyspace) namespaces() []byte { return k.kind(kindNS) }

func (k keyspace) roomBase(kind byte, room string, extra int) []byte {
	b := make([]byte, 0, len(k.prefix)+3+len(room)+extra)
	b = append(append(b, k.prefix...), kind)
	b = binary.BigEndian.AppendUint16(b, uint16(len(room)))
	return append(b, room...)
}

func (k keyspace) room(room string) []byte { return k.roomBase(kindRoom, room, 0) }

// incarnation is the prefix of one kind of record of one room epoch.
func (k keyspace) incarnation(kind byte, room string, epoch uint64) []byte {
	return binary.BigEndian.AppendUint64(k.roomBase(kind, room, 8+16), epoch)
}

func (k keyspace) member(room string, epoch uint64, member string) []byte {
	return append(k.incarnation(kindMember, room, epoch), member...)
}

func (k keyspace) event(room string, epoch, seq uint64) []byte {
	return k.appendEvent(make([]byte, 0, k.eventKeyLen(room)), room, epoch, seq)
}

// eventKeyLen is the length of an event key of room.
func (k keyspace) eventKeyLen(room string) int { return len(k.prefix) + 3 + len(room) + 16 }

// appendEvent appends an event key to b, so that a caller can put more
// after it in the same allocation.
func (k keyspace) appendEvent(b []byte, room string, epoch, seq uint64) []byte {
	b = append(append(b, k.prefix...), kindEvent)
	b = binary.BigEndian.AppendUint16(b, uint16(len(room)))
	b = append(b, room...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	return binary.BigEndian.AppendUint64(b, seq)
}

func (k keyspace) idemKey(room string, epoch uint64, key string) []byte {
	return append(k.incarnation(kindKey, room, epoch), key...)
}

func (k keyspace) order(room string, epoch, ordinal uint64) []byte {
	return binary.BigEndian.AppendUint64(k.incarnation(kindOrder, room, epoch), ordinal)
}

func (k keyspace) grave(room string, epoch uint64) []byte {
	return k.incarnation(kindGrave, room, epoch)
}

// parseRoomKey splits a key of the given kind into room name and the rest
// (epoch and suffix). ok is false for a key that does not have that shape.
func (k keyspace) parseRoomKey(key []byte, kind byte) (room string, rest []byte, ok bool) {
	n := len(k.prefix)
	if len(key) < n+3 || key[n] != kind {
		return "", nil, false
	}
	l := int(binary.BigEndian.Uint16(key[n+1:]))
	if len(key) < n+3+l {
		return "", nil, false
	}
	return string(key[n+3 : n+3+l]), key[n+3+l:], true
}

// checkRecord validates a stored key and value of this group: the key's
// shape for its kind and the value's encoding. Restore runs it on every
// record so a damaged snapshot is refused instead of loaded.
func (k keyspace) checkRecord(key, value []byte) error {
	if len(key) <= len(k.prefix) {
		return fmt.Errorf("key %q is too short", key)
	}
	kind := key[len(k.prefix)]
	if (kind == kindApplied || kind == kindDefaults || kind == kindNS) && len(key) != len(k.prefix)+1 {
		return fmt.Errorf("%s key %q has extra bytes", kindName(kind), key)
	}
	var err error
	switch kind {
	case kindApplied:
		_, err = decodeApplied(value)
	case kindDefaults:
		_, err = decodeRoomConfig(value)
	case kindNS:
		_, err = decodeNamespaces(value)
	case kindRoom, kindMember, kindEvent, kindKey, kindOrder, kindGrave:
		room, rest, ok := k.parseRoomKey(key, kind)
		if !ok || checkName("room", room) != nil {
			return fmt.Errorf("%s key %q has no valid room name", kindName(kind), key)
		}
		err = checkRoomRecord(kind, rest, value)
	default:
		return fmt.Errorf("key %q has unknown kind %q", key, kind)
	}
	if err != nil {
		return fmt.Errorf("%s record at %q: %w", kindName(kind), key, err)
	}
	return nil
}

func checkRoomRecord(kind byte, rest, value []byte) error {
	wantRest := map[byte]int{kindRoom: 0, kindEvent: 16, kindOrder: 16, kindGrave: 8}
	if n, fixed := wantRest[kind]; fixed && len(rest) != n {
		return fmt.Errorf("key suffix is %d bytes, want %d", len(rest), n)
	}
	if (kind == kindMember || kind == kindKey) && len(rest) <= 8 {
		return fmt.Errorf("key suffix is %d bytes, want more than 8", len(rest))
	}
	var err error
	switch kind {
	case kindRoom:
		_, err = decodeRoom(value)
	case kindMember:
		_, err = decodeMember(string(rest[8:]), value)
	case kindEvent:
		_, err = decodeEvent(value, &Event{})
	case kindKey:
		_, err = decodeKeyRecord(value)
	case kindOrder:
		_, _, err = decodeOrder(value)
	case kindGrave:
		if len(value) != 1 || value[0] != graveVersion {
			err = fmt.Errorf("grave value %x", value)
		}
	}
	return err
}

func kindName(kind byte) string {
	switch kind {
	case kindApplied:
		return "applied"
	case kindDefaults:
		return "defaults"
	case kindNS:
		return "namespaces"
	case kindRoom:
		return "room"
	case kindMember:
		return "member"
	case kindEvent:
		return "event"
	case kindKey:
		return "key"
	case kindOrder:
		return "key order"
	case kindGrave:
		return "grave"
	}
	return fmt.Sprintf("kind %q", kind)
}

// upgradeRecord rewrites a version 1 record, which checkRecord accepted, as
// version 2, so that a restored group holds only checksummed records.
// Other values are returned as they are.
func upgradeRecord(key, value []byte) []byte {
	if len(value) < 2 || value[0] != recordV1 || len(key) <= prefixLen {
		return value
	}
	var out []byte
	switch key[prefixLen] {
	case kindApplied:
		if a, err := decodeApplied(value); err == nil {
			out = a.encode()
		}
	case kindDefaults:
		if c, err := decodeRoomConfig(value); err == nil {
			out = encodeRoomConfig(c)
		}
	case kindRoom:
		if r, err := decodeRoom(value); err == nil {
			out = r.encode()
		}
	case kindMember:
		if m, err := decodeMember("", value); err == nil {
			out = m.encode()
		}
	case kindEvent:
		var ev Event
		if ts, err := decodeEvent(value, &ev); err == nil {
			out = encodeEvent(&ev, ts)
		}
	case kindKey:
		if k, err := decodeKeyRecord(value); err == nil {
			out = k.encode()
		}
	case kindOrder:
		if k, t, err := decodeOrder(value); err == nil {
			out = encodeOrder(k, t)
		}
	}
	if out == nil {
		return value
	}
	return out
}
