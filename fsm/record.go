package fsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Stored records. Each starts with a version byte so a later build can read
// what an earlier one wrote; decoders reject what they do not understand
// with an error rather than guess.
//
// Version 2 ends every record with a CRC-32C (little endian) of the version
// byte and the body, so that a flipped bit on disk is an error instead of a
// changed payload: badger checks its own blocks only when asked to, and a
// value in the value log was read back unchecked. Version 1 records (from
// builds before the checksum) have none and are read as before; whatever
// rewrites them writes version 2, and a snapshot restore upgrades them all
// (docs/fsm.md, "Record format").
const (
	recordV1 = 1
	recordV2 = 2
	// recordVersion is what every record is written with.
	recordVersion = recordV2
	// graveVersion is a grave's whole value: one byte, nothing to checksum.
	graveVersion = 1
	crcLen       = 4
)

// seal appends the checksum of e.Buf[start:], the record begun at start.
func seal(e *encoder, start int) []byte {
	e.Buf = binary.LittleEndian.AppendUint32(e.Buf, crc32.Checksum(e.Buf[start:], castagnoli))
	return e.Buf
}

// appliedState is the group's progress, written in the same badger
// transaction as the data it covers.
type appliedState struct {
	Index uint64
	Term  uint64
	// Clock is the group's log time in Unix nanoseconds: the largest
	// AppendedAt seen, so it never runs backwards across leader changes.
	Clock int64
}

func (a appliedState) encode() []byte {
	e := encoder{}
	e.Byte(recordVersion)
	e.Uvarint(a.Index)
	e.Uvarint(a.Term)
	e.Varint(a.Clock)
	return seal(&e, 0)
}

func decodeApplied(b []byte) (appliedState, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "applied state")
	a := appliedState{Index: d.Uvarint(), Term: d.Uvarint(), Clock: d.Varint()}
	return a, d.Done()
}

// checkVersion reads the version byte and, for a checksummed record,
// verifies and strips the checksum, so the caller decodes the body alone.
func checkVersion(d *decoder, what string) {
	v := d.Byte()
	if d.Err() != nil {
		return
	}
	switch v {
	case recordV1:
	case recordV2:
		if len(d.Buf) < crcLen {
			d.Fail("%s record: %w: no room for its checksum", what, errTruncated)
			return
		}
		body := d.Buf[:len(d.Buf)-crcLen]
		want := binary.LittleEndian.Uint32(d.Buf[len(body):])
		got := crc32.Update(crc32.Checksum([]byte{v}, castagnoli), castagnoli, body)
		if got != want {
			d.Fail("%s record: %w (stored %08x, computed %08x)", what, errChecksum, want, got)
			return
		}
		d.Buf = body
	default:
		d.Fail("%s record version %d is not readable by this build (reads %d and %d)", what, v, recordV1, recordV2)
	}
}

func encodeRoomConfig(c RoomConfig) []byte {
	e := encoder{}
	e.Byte(recordVersion)
	encodeConfig(&e, c, allConfigFields)
	return seal(&e, 0)
}

func encodeNamespaces(n *Namespaces) []byte {
	e := encoder{}
	e.Byte(recordVersion)
	encodeRules(&e, n)
	return seal(&e, 0)
}

func decodeNamespaces(b []byte) (*Namespaces, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "namespaces")
	n := decodeRules(&d)
	return &n, d.Done()
}

func decodeRoomConfig(b []byte) (RoomConfig, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "room config")
	c, _ := decodeConfig(&d)
	return c, d.Done()
}

// roomRecord is a room's stored state. The phys* fields track what is still
// on disk below the logical window; they differ between replicas (sweeping
// is not replicated) and are left out of the state digest.
type roomRecord struct {
	Epoch   uint64
	LastSeq uint64
	// FirstSeq is the first seq still readable; FirstSeq > LastSeq when the
	// history is empty.
	FirstSeq uint64
	// FirstTime is a lower bound of the log time of event FirstSeq (events
	// are in time order, so an older event's time is one). Tick reads the
	// real time only when the bound says the event may have expired.
	FirstTime int64
	// KeyFirst and KeyNext bound the live idempotency key ordinals:
	// [KeyFirst, KeyNext). KeyFirstTime is a lower bound of KeyFirst's time.
	KeyFirst     uint64
	KeyNext      uint64
	KeyFirstTime int64
	Config       RoomConfig
	// MemberCount is the number of members.
	MemberCount uint64
	// PhysFirstSeq and PhysKeyFirst are the first event seq and key ordinal
	// that may still be stored; below them everything was swept.
	PhysFirstSeq uint64
	PhysKeyFirst uint64
	// OwnMask names the Config fields the room was given by room_config;
	// once the group has namespace rules, the others come from the rules.
	OwnMask ConfigField
}

// legacyOwnMask is the OwnMask of a record written before OwnMask
// existed: the fields in which its config differs from the built-in
// defaults, which nothing but room_config could have changed (no release
// proposed group_defaults). It depends on the record alone, so every
// replica derives the same mask whenever it reads the record.
func legacyOwnMask(c RoomConfig) ConfigField { return c.differs(DefaultRoomConfig) }

func (r *roomRecord) encode() []byte {
	e := encoder{Buf: make([]byte, 0, 64)}
	e.Byte(recordVersion)
	e.Uvarint(r.Epoch)
	e.Uvarint(r.LastSeq)
	e.Uvarint(r.FirstSeq)
	e.Varint(r.FirstTime)
	e.Uvarint(r.KeyFirst)
	e.Uvarint(r.KeyNext)
	e.Varint(r.KeyFirstTime)
	encodeConfig(&e, r.Config, allConfigFields)
	e.Uvarint(r.MemberCount)
	e.Uvarint(r.PhysFirstSeq)
	e.Uvarint(r.PhysKeyFirst)
	e.Byte(byte(r.OwnMask))
	return seal(&e, 0)
}

func decodeRoom(b []byte) (roomRecord, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "room")
	r := roomRecord{
		Epoch:        d.Uvarint(),
		LastSeq:      d.Uvarint(),
		FirstSeq:     d.Uvarint(),
		FirstTime:    d.Varint(),
		KeyFirst:     d.Uvarint(),
		KeyNext:      d.Uvarint(),
		KeyFirstTime: d.Varint(),
	}
	r.Config, _ = decodeConfig(&d)
	r.MemberCount = d.Uvarint()
	r.PhysFirstSeq = d.Uvarint()
	r.PhysKeyFirst = d.Uvarint()
	if len(d.Buf) > 0 {
		r.OwnMask = ConfigField(d.Byte())
	} else {
		r.OwnMask = legacyOwnMask(r.Config)
	}
	if d.Err() == nil && (r.FirstSeq > r.LastSeq+1 || r.KeyFirst > r.KeyNext) {
		d.Fail("room record windows are inconsistent (first seq %d, last seq %d, keys %d..%d)",
			r.FirstSeq, r.LastSeq, r.KeyFirst, r.KeyNext)
	}
	return r, d.Done()
}

// Member is one member of a room.
type Member struct {
	Name string
	// Meta is opaque to Herald (the app's presence data); read-only.
	Meta []byte
	// Ephemeral members belong to a front-end session (NodeID, NodeEpoch)
	// and are removed by expire_node when that session's lease ends.
	Ephemeral bool
	NodeID    string
	NodeEpoch uint64
	// JoinedSeq is the seq of the member's latest join event, or, when
	// that join took no seq (TransientPresence), the room's last seq then.
	JoinedSeq uint64
	// JoinToken is set when the latest join took no seq: it names that
	// join for a conditional leave instead (see joinToken).
	JoinToken uint64
}

// token is what a conditional leave must name to undo the member's latest
// join.
func (m *Member) token() uint64 {
	if m.JoinToken != 0 {
		return m.JoinToken
	}
	return m.JoinedSeq
}

func (m *Member) encode() []byte {
	e := encoder{Buf: make([]byte, 0, 16+len(m.Meta)+len(m.NodeID))}
	e.Byte(recordVersion)
	e.Bytes(m.Meta)
	e.Bool(m.Ephemeral)
	e.String(m.NodeID)
	e.Uvarint(m.NodeEpoch)
	e.Uvarint(m.JoinedSeq)
	if m.JoinToken != 0 {
		e.Uvarint(m.JoinToken)
	}
	return seal(&e, 0)
}

func decodeMember(name string, b []byte) (Member, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "member")
	m := Member{Name: name}
	m.Meta = cloneBytes(d.Bytes(MaxMetaBytes))
	m.Ephemeral = d.Bool()
	m.NodeID = d.String(MaxNodeIDBytes)
	m.NodeEpoch = d.Uvarint()
	m.JoinedSeq = d.Uvarint()
	if len(d.Buf) > 0 {
		m.JoinToken = d.Uvarint()
	}
	return m, d.Done()
}

// encodeEvent stores an event; room, epoch and seq are in its key.
func encodeEvent(ev *Event, unixNano int64) []byte {
	return appendEvent(make([]byte, 0, eventValueCap(ev)), ev, unixNano)
}

// eventValueCap is enough room for an encoded event.
func eventValueCap(ev *Event) int { return 32 + crcLen + len(ev.Member) + len(ev.Data) }

func appendEvent(buf []byte, ev *Event, unixNano int64) []byte {
	start := len(buf)
	e := encoder{Buf: buf}
	e.Byte(recordVersion)
	e.Byte(byte(ev.Type))
	e.String(ev.Member)
	e.Bytes(ev.Data)
	e.Varint(unixNano)
	return seal(&e, start)
}

// decodeEvent fills ev from a stored value; it copies what it keeps.
func decodeEvent(b []byte, ev *Event) (unixNano int64, err error) {
	d := decoder{Buf: b}
	checkVersion(&d, "event")
	ev.Type = EventType(d.Byte())
	ev.Member = d.String(MaxMemberBytes)
	ev.Data = cloneBytes(d.Bytes(MaxPayloadBytes))
	unixNano = d.Varint()
	if d.Err() == nil && (ev.Type < EventJoin || ev.Type > EventMessage) { // only these are stored
		d.Fail("unknown event type %d", uint8(ev.Type))
	}
	return unixNano, d.Done()
}

// keyRecord remembers one idempotency key of a room.
type keyRecord struct {
	Seq     uint64
	Ordinal uint64
	Time    int64
}

func (k keyRecord) encode() []byte {
	e := encoder{}
	e.Byte(recordVersion)
	e.Uvarint(k.Seq)
	e.Uvarint(k.Ordinal)
	e.Varint(k.Time)
	return seal(&e, 0)
}

func decodeKeyRecord(b []byte) (keyRecord, error) {
	d := decoder{Buf: b}
	checkVersion(&d, "key")
	k := keyRecord{Seq: d.Uvarint(), Ordinal: d.Uvarint(), Time: d.Varint()}
	return k, d.Done()
}

// orderRecord maps a key ordinal back to its key, for sweeping.
func encodeOrder(key string, t int64) []byte {
	e := encoder{}
	e.Byte(recordVersion)
	e.String(key)
	e.Varint(t)
	return seal(&e, 0)
}

func decodeOrder(b []byte) (key string, t int64, err error) {
	d := decoder{Buf: b}
	checkVersion(&d, "key order")
	key = d.String(MaxKeyBytes)
	t = d.Varint()
	return key, t, d.Done()
}

func corrupt(what string, key []byte, err error) error {
	return fmt.Errorf("%w: %s record at key %q: %v", ErrCorrupt, what, key, err)
}
