package fsm

import (
	"fmt"
	"time"
)

const eventVersion = 1

// EncodeEvent encodes an event for another node (a node without a replica
// of the room's group receives its events this way).
func EncodeEvent(ev Event) []byte {
	e := &encoder{buf: make([]byte, 0, 32+len(ev.Room)+len(ev.Member)+len(ev.Data))}
	e.byte(eventVersion)
	e.string(ev.Room)
	e.uvarint(ev.Epoch)
	e.uvarint(ev.Seq)
	e.byte(byte(ev.Type))
	e.string(ev.Member)
	e.bytes(ev.Data)
	e.varint(ev.Time.UnixNano())
	return e.buf
}

// DecodeEvent reverses EncodeEvent; malformed input is an error.
func DecodeEvent(b []byte) (Event, error) {
	d := &decoder{buf: b}
	if v := d.byte(); d.err == nil && v != eventVersion {
		return Event{}, fmt.Errorf("fsm: event version %d is not known to this node", v)
	}
	var ev Event
	ev.Room = d.string(MaxRoomBytes)
	ev.Epoch = d.uvarint()
	ev.Seq = d.uvarint()
	ev.Type = EventType(d.byte())
	ev.Member = d.string(MaxMemberBytes)
	ev.Data = d.bytes(max(MaxPayloadBytes, MaxMetaBytes))
	ns := d.varint()
	if err := d.done(); err != nil {
		return Event{}, fmt.Errorf("fsm: decode event: %w", err)
	}
	ev.Time = time.Unix(0, ns).UTC()
	return ev, nil
}
