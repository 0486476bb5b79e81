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

// seal appends the checksum of e.buf[start:], the record begun at start.
func (e *encoder) seal(start int) []byte {
	e.buf = binary.LittleEndian.AppendUint32(e.buf, crc32.Checksum(e.buf[start:], castagnoli))
	return e.buf
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
	e.byte(recordVersion)
	e.uvarint(a.Index)
	e.uvarint(a.Term)
	e.varint(a.Clock)
	return e.seal(0)
}

func decodeApplied(b []byte) (appliedState, error) {
	d := decoder{buf: b}
	checkVersion(&d, "applied state")
	a := appliedState{Index: d.uvarint(), Term: d.uvarint(), Clock: d.varint()}
	return a, d.done()
}

// checkVersion reads the version byte and, for a checksummed record,
// verifies and strips the checksum, so the caller decodes the body alone.
func checkVersion(d *decoder, what string) {
	v := d.byte()
	if d.err != nil {
		return
	}
	switch v {
	case recordV1:
	case recordV2:
		if len(d.buf) < crcLen {
			d.fail("%s record: %w: no room for its checksum", what, errTruncated)
			return
		}
		body := d.buf[:len(d.buf)-crcLen]
		want := binary.LittleEndian.Uint32(d.buf[len(body):])
		got := crc32.Update(crc32.Checksum([]byte{v}, castagnoli), castagnoli, body)
		if got != want {
			d.fail("%s record: %w (stored %08x, computed %08x)", what, errChecksum, want, got)
			return
		}
		d.buf = body
	default:
		d.fail("%s record version %d is not readable by this build (reads %d and %d)", what, v, recordV1, recordV2)
	}
}

func encodeRoomConfig(c RoomConfig) []byte {
	e := encoder{}
	e.byte(recordVersion)
	encodeConfig(&e, c, allConfigFields)
	return e.seal(0)
}

func encodeNamespaces(n *Namespaces) []byte {
	e := encoder{}
	e.byte(recordVersion)
	encodeRules(&e, n)
	return e.seal(0)
}

func decodeNamespaces(b []byte) (*Namespaces, error) {
	d := decoder{buf: b}
	checkVersion(&d, "namespaces")
	n := decodeRules(&d)
	return &n, d.done()
}

func decodeRoomConfig(b []byte) (RoomConfig, error) {
	d := decoder{buf: b}
	checkVersion(&d, "room config")
	c, _ := decodeConfig(&d)
	return c, d.done()
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
	e := encoder{buf: make([]byte, 0, 64)}
	e.byte(recordVersion)
	e.uvarint(r.Epoch)
	e.uvarint(r.LastSeq)
	e.uvarint(r.FirstSeq)
	e.varint(r.FirstTime)
	e.uvarint(r.KeyFirst)
	e.uvarint(r.KeyNext)
	e.varint(r.KeyFirstTime)
	encodeConfig(&e, r.Config, allConfigFields)
	e.uvarint(r.MemberCount)
	e.uvarint(r.PhysFirstSeq)
	e.uvarint(r.PhysKeyFirst)
	e.byte(byte(r.OwnMask))
	return e.seal(0)
}

func decodeRoom(b []byte) (roomRecord, error) {
	d := decoder{buf: b}
	checkVersion(&d, "room")
	r := roomRecord{
		Epoch:        d.uvarint(),
		LastSeq:      d.uvarint(),
		FirstSeq:     d.uvarint(),
		FirstTime:    d.varint(),
		KeyFirst:     d.uvarint(),
		KeyNext:      d.uvarint(),
		KeyFirstTime: d.varint(),
	}
	r.Config, _ = decodeConfig(&d)
	r.MemberCount = d.uvarint()
	r.PhysFirstSeq = d.uvarint()
	r.PhysKeyFirst = d.uvarint()
	if len(d.buf) > 0 {
		r.OwnMask = ConfigField(d.byte())
	} else {
		r.OwnMask = legacyOwnMask(r.Config)
	}
	if d.err == nil && (r.FirstSeq > r.LastSeq+1 || r.KeyFirst > r.KeyNext) {
		d.fail("room record windows are inconsistent (first seq %d, last seq %d, keys %d..%d)",
			r.FirstSeq, r.LastSeq, r.KeyFirst, r.KeyNext)
	}
	return r, d.done()
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
	e := encoder{buf: make([]byte, 0, 16+len(m.Meta)+len(m.NodeID))}
	e.byte(recordVersion)
	e.bytes(m.Meta)
	e.bool(m.Ephemeral)
	e.string(m.NodeID)
	e.uvarint(m.NodeEpoch)
	e.uvarint(m.JoinedSeq)
	if m.JoinToken != 0 {
		e.uvarint(m.JoinToken)
	}
	return e.seal(0)
}

func decodeMember(name string, b []byte) (Member, error) {
	d := decoder{buf: b}
	checkVersion(&d, "member")
	m := Member{Name: name}
	m.Meta = cloneBytes(d.bytes(MaxMetaBytes))
	m.Ephemeral = d.bool()
	m.NodeID = d.string(MaxNodeIDBytes)
	m.NodeEpoch = d.uvarint()
	m.JoinedSeq = d.uvarint()
	if len(d.buf) > 0 {
		m.JoinToken = d.uvarint()
	}
	return m, d.done()
}

// encodeEvent stores an event; room, epoch and seq are in its key.
func encodeEvent(ev *Event, unixNano int64) []byte {
	return appendEvent(make([]byte, 0, eventValueCap(ev)), ev, unixNano)
}

// eventValueCap is enough room for an encoded event.
func eventValueCap(ev *Event) int { return 32 + crcLen + len(ev.Member) + len(ev.Data) }

func appendEvent(buf []byte, ev *Event, unixNano int64) []byte {
	start := len(buf)
	e := encoder{buf: buf}
	e.byte(recordVersion)
	e.byte(byte(ev.Type))
	e.string(ev.Member)
	e.bytes(ev.Data)
	e.varint(unixNano)
	return e.seal(start)
}

// decodeEvent fills ev from a stored value; it copies what it keeps.
func decodeEvent(b []byte, ev *Event) (unixNano int64, err error) {
	d := decoder{buf: b}
	checkVersion(&d, "event")
	ev.Type = EventType(d.byte())
	ev.Member = d.string(MaxMemberBytes)
	ev.Data = cloneBytes(d.bytes(MaxPayloadBytes))
	unixNano = d.varint()
	if d.err == nil && (ev.Type < EventJoin || ev.Type > EventMessage) { // only these are stored
		d.fail("unknown event type %d", uint8(ev.Type))
	}
	return unixNano, d.done()
}

// keyRecord remembers one idempotency key of a room.
type keyRecord struct {
	Seq     uint64
	Ordinal uint64
	Time    int64
}

func (k keyRecord) encode() []byte {
	e := encoder{}
	e.byte(recordVersion)
	e.uvarint(k.Seq)
	e.uvarint(k.Ordinal)
	e.varint(k.Time)
	return e.seal(0)
}

func decodeKeyRecord(b []byte) (keyRecord, error) {
	d := decoder{buf: b}
	checkVersion(&d, "key")
	k := keyRecord{Seq: d.uvarint(), Ordinal: d.uvarint(), Time: d.varint()}
	return k, d.done()
}

// orderRecord maps a key ordinal back to its key, for sweeping.
func encodeOrder(key string, t int64) []byte {
	e := encoder{}
	e.byte(recordVersion)
	e.string(key)
	e.varint(t)
	return e.seal(0)
}

func decodeOrder(b []byte) (key string, t int64, err error) {
	d := decoder{buf: b}
	checkVersion(&d, "key order")
	key = d.string(MaxKeyBytes)
	t = d.varint()
	return key, t, d.done()
}

func corrupt(what string, key []byte, err error) error {
	return fmt.Errorf("%w: %s record at key %q: %v", ErrCorrupt, what, key, err)
}
