package fsm

import (
	"fmt"
	"time"
)

const eventVersion = 1

// EncodeEvent encodes an event for another node (a node without a replica
// of the room's group receives its events this way).
func EncodeEvent(ev Event) []byte {
	e := &encoder{Buf: make([]byte, 0, 32+len(ev.Room)+len(ev.Member)+len(ev.Data))}
	e.Byte(eventVersion)
	e.String(ev.Room)
	e.Uvarint(ev.Epoch)
	e.Uvarint(ev.Seq)
	e.Byte(byte(ev.Type))
	e.String(ev.Member)
	e.Bytes(ev.Data)
	e.Varint(ev.Time.UnixNano())
	return e.Buf
}

// DecodeEvent reverses EncodeEvent; malformed input is an error.
func DecodeEvent(b []byte) (Event, error) {
	d := &decoder{Buf: b}
	if v := d.Byte(); d.Err() == nil && v != eventVersion {
		return Event{}, fmt.Errorf("fsm: event version %d is not known to this node", v)
	}
	var ev Event
	ev.Room = d.String(MaxRoomBytes)
	ev.Epoch = d.Uvarint()
	ev.Seq = d.Uvarint()
	ev.Type = EventType(d.Byte())
	ev.Member = d.String(MaxMemberBytes)
	ev.Data = d.Bytes(max(MaxPayloadBytes, MaxMetaBytes))
	ns := d.Varint()
	if err := d.Done(); err != nil {
		return Event{}, fmt.Errorf("fsm: decode event: %w", err)
	}
	ev.Time = time.Unix(0, ns).UTC()
	return ev, nil
}
