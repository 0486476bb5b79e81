package rooms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/heraldhq/herald/fsm"
)

// QueryKind names a read of one room.
type QueryKind uint8

// Query kinds. The numbers travel between nodes: never reuse one.
const (
	QueryHistory QueryKind = 1 // fsm.FSM.History(room, FromSeq, Limit)
	QueryMembers QueryKind = 2 // fsm.FSM.Members(room)
	QueryRoom    QueryKind = 3 // fsm.FSM.Room(room)
	QueryRooms   QueryKind = 4 // the rooms of one group: Room is a name prefix, After a cursor
)

// MaxQueryHistoryLimit caps the events of one history query: the answer is
// built in memory and sent in one peer frame.
const MaxQueryHistoryLimit = 1000

// maxHistoryAnswerBytes bounds the events of one history answer well below
// the peer port's 64 MiB frame limit (a thousand events of up to 1 MiB each
// would not fit). A shorter page is still a valid page: the caller sees
// from LastSeq that more follow and asks again from the next seq.
const maxHistoryAnswerBytes = 16 << 20

// DefaultQueryPageBytes is the byte bound of a history query that names
// none (one from a node that predates the bound): the front's default
// page bound.
const DefaultQueryPageBytes = 1 << 20

// Query is a read of one room, sent encoded through
// multiraft.Host.Query so that a node without a replica of the room's group
// can read it.
type Query struct {
	Kind QueryKind
	Room string
	// FromSeq and Limit page a history query: up to Limit events from
	// FromSeq (0: the first still kept). A Limit of 0 or less means
	// fsm.DefaultHistoryLimit; one above MaxQueryHistoryLimit is cut to it.
	FromSeq uint64
	Limit   int
	// MaxBytes bounds a history page in bytes (fsm.FSM.HistoryBytes), on
	// whichever node reads it: the page stops early, after at least one
	// event, instead of being built whole. 0 or less means
	// DefaultQueryPageBytes; above maxHistoryAnswerBytes it is cut to that.
	MaxBytes int
	// After pages a rooms query: only rooms whose names sort after it.
	After string
}

// The first byte of an encoded query or answer; a decoder keeps accepting
// every version it ever wrote, so nodes of mixed builds still understand
// each other. Query version 2 added MaxBytes, 3 After (only a rooms query,
// which older nodes do not know anyway, is sent as version 3).
const (
	queryVersion  = 2
	roomsVersion  = 3
	answerVersion = 1
)

// Encode returns the query's versioned binary form, the request to pass to
// multiraft.Host.Query.
func (q Query) Encode() []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen64*5+len(q.Room)+len(q.After))
	v := byte(queryVersion)
	if q.Kind == QueryRooms {
		v = roomsVersion
	}
	b = append(b, v, byte(q.Kind))
	b = appendString(b, q.Room)
	b = binary.AppendUvarint(b, q.FromSeq)
	b = binary.AppendUvarint(b, uint64(max(q.Limit, 0)))
	b = binary.AppendUvarint(b, uint64(max(q.MaxBytes, 0)))
	if v == roomsVersion {
		b = appendString(b, q.After)
	}
	return b
}

// DecodeQuery reverses Encode. Malformed input is an error, never a
// panic; a Limit above MaxQueryHistoryLimit comes back cut to it, and a
// MaxBytes above maxHistoryAnswerBytes to that.
func DecodeQuery(b []byte) (Query, error) {
	r := &reader{buf: b}
	v := r.byte()
	if r.err == nil && v != 1 && v != queryVersion && v != roomsVersion {
		return Query{}, fmt.Errorf("rooms: room query version %d is not known to this node", v)
	}
	var q Query
	q.Kind = QueryKind(r.byte())
	q.Room = r.string(fsm.MaxRoomBytes)
	q.FromSeq = r.uvarint()
	q.Limit = int(min(r.uvarint(), MaxQueryHistoryLimit))
	if v >= 2 {
		q.MaxBytes = int(min(r.uvarint(), maxHistoryAnswerBytes))
	}
	if v >= roomsVersion {
		q.After = r.string(fsm.MaxRoomBytes)
	}
	if err := r.done(); err != nil {
		return Query{}, fmt.Errorf("rooms: decode room query: %w", err)
	}
	switch q.Kind {
	case QueryHistory, QueryMembers, QueryRoom, QueryRooms:
	default:
		return Query{}, fmt.Errorf("rooms: decode room query: unknown kind %d", q.Kind)
	}
	return q, nil
}

// limit is the history page size the query gets.
func (q Query) limit() int {
	switch {
	case q.Limit <= 0:
		return fsm.DefaultHistoryLimit
	case q.Limit > MaxQueryHistoryLimit:
		return MaxQueryHistoryLimit
	}
	return q.Limit
}

// maxBytes is the history page's byte bound the query gets.
func (q Query) maxBytes() int {
	switch {
	case q.MaxBytes <= 0:
		return DefaultQueryPageBytes
	case q.MaxBytes > maxHistoryAnswerBytes:
		return maxHistoryAnswerBytes
	}
	return q.MaxBytes
}

// Answer is what a Query read: exactly one of History, Members,
// Room and Rooms (by the query's kind), or Err.
type Answer struct {
	History *fsm.History
	Members *fsm.Members
	Room    *fsm.RoomInfo
	Rooms   *RoomPage
	// Err is the read's error. fsm's sentinel errors (fsm.ErrRoomNotFound,
	// fsm.ErrInvalid, fsm.ErrClosed, fsm.ErrNeedsRestore, fsm.ErrStorage,
	// fsm.ErrCorrupt)
	// still match errors.Is after the answer crossed the network.
	Err error
}

// What an encoded answer holds, after its version byte.
const (
	answerEmpty   byte = 0
	answerHistory      = byte(QueryHistory)
	answerMembers      = byte(QueryMembers)
	answerRoom         = byte(QueryRoom)
	answerErr     byte = 4
	answerRooms   byte = 5
	// answerRoomV2 is answerRoom with the config fields added with
	// namespaces. A new kind rather than optional trailing fields, so a
	// cut answer is still an error; an earlier build sends answerRoom.
	answerRoomV2 byte = 6
)

// answerErrors numbers the sentinel errors an answer can carry; code 0 is
// any other error, which keeps only its message. The numbers travel between
// nodes: never reuse one.
var answerErrors = []error{nil, fsm.ErrRoomNotFound, fsm.ErrInvalid, fsm.ErrClosed,
	fsm.ErrNeedsRestore, fsm.ErrStorage, fsm.ErrCorrupt}

// EncodeAnswer encodes a for the node that sent the query. Of the
// fields it keeps the first set, in the order Err, History, Members, Room,
// Rooms;
// an answer with none set decodes as one with none set.
func EncodeAnswer(a Answer) []byte { return encodeAnswer(a, math.MaxInt) }

// encodeAnswer is EncodeAnswer with a history's events cut off
// once they would take more than budget bytes (keeping at least one, so a
// page always makes progress).
func encodeAnswer(a Answer, budget int) []byte {
	b := []byte{answerVersion}
	switch {
	case a.Err != nil:
		code := 0
		for i, s := range answerErrors[1:] {
			if errors.Is(a.Err, s) {
				code = i + 1
				break
			}
		}
		if errors.Is(a.Err, fsm.ErrCorrupt) {
			code = len(answerErrors) - 1 // it matches ErrStorage too, which comes first
		}
		b = append(b, answerErr)
		b = binary.AppendUvarint(b, uint64(code))
		b = appendString(b, a.Err.Error())
	case a.History != nil:
		h := a.History
		var events []byte
		n := 0
		for _, ev := range h.Events {
			e := fsm.EncodeEvent(ev)
			if n > 0 && len(events)+len(e) > budget {
				break
			}
			events = appendBytes(events, e)
			n++
		}
		b = append(b, answerHistory)
		b = binary.AppendUvarint(b, h.Epoch)
		b = binary.AppendUvarint(b, h.FirstSeq)
		b = binary.AppendUvarint(b, h.LastSeq)
		b = appendBool(b, h.Truncated)
		b = binary.AppendUvarint(b, uint64(n))
		b = append(b, events...)
	case a.Members != nil:
		m := a.Members
		b = append(b, answerMembers)
		b = binary.AppendUvarint(b, m.Epoch)
		b = binary.AppendUvarint(b, m.Seq)
		b = binary.AppendUvarint(b, uint64(len(m.Members)))
		for _, mb := range m.Members {
			b = appendString(b, mb.Name)
			b = appendBytes(b, mb.Meta)
			b = appendBool(b, mb.Ephemeral)
			b = appendString(b, mb.NodeID)
			b = binary.AppendUvarint(b, mb.NodeEpoch)
			b = binary.AppendUvarint(b, mb.JoinedSeq)
		}
	case a.Room != nil:
		b = append(b, answerRoomV2)
		b = appendRoomInfo(b, a.Room)
	case a.Rooms != nil:
		b = append(b, answerRooms)
		b = appendBool(b, a.Rooms.More)
		b = binary.AppendUvarint(b, uint64(len(a.Rooms.Rooms)))
		for i := range a.Rooms.Rooms {
			b = appendRoomInfo(b, &a.Rooms.Rooms[i])
		}
	default:
		b = append(b, answerEmpty)
	}
	return b
}

// DecodeAnswer reverses EncodeAnswer. Malformed input is an error,
// never a panic. Byte slices in the answer (event data, member meta) share
// b's memory.
func DecodeAnswer(b []byte) (Answer, error) {
	r := &reader{buf: b}
	if v := r.byte(); r.err == nil && v != answerVersion {
		return Answer{}, fmt.Errorf("rooms: room answer version %d is not known to this node", v)
	}
	var a Answer
	switch tag := r.byte(); tag {
	case answerEmpty:
	case answerErr:
		code := r.uvarint()
		msg := r.string(64 << 10)
		if code > 0 && code < uint64(len(answerErrors)) {
			a.Err = &answerError{sentinel: answerErrors[code], msg: msg}
		} else {
			// Code 0, or a sentinel a newer build added: the message
			// is all this node can keep.
			a.Err = errors.New(msg)
		}
	case answerHistory:
		h := &fsm.History{Epoch: r.uvarint(), FirstSeq: r.uvarint(), LastSeq: r.uvarint(), Truncated: r.bool()}
		n := r.count()
		if n > 0 {
			h.Events = make([]fsm.Event, 0, min(n, MaxQueryHistoryLimit))
		}
		for range n {
			e := r.bytes(len(r.buf))
			if r.err != nil {
				break
			}
			ev, err := fsm.DecodeEvent(e)
			if err != nil {
				r.fail("event %d: %v", len(h.Events), err)
				break
			}
			h.Events = append(h.Events, ev)
		}
		a.History = h
	case answerMembers:
		m := &fsm.Members{Epoch: r.uvarint(), Seq: r.uvarint()}
		n := r.count()
		m.Members = make([]fsm.Member, 0, min(n, 1024))
		for range n {
			mb := fsm.Member{Name: r.string(fsm.MaxMemberBytes), Meta: r.bytes(fsm.MaxMetaBytes), Ephemeral: r.bool(),
				NodeID: r.string(fsm.MaxNodeIDBytes), NodeEpoch: r.uvarint(), JoinedSeq: r.uvarint()}
			if r.err != nil {
				break
			}
			m.Members = append(m.Members, mb)
		}
		a.Members = m
	case answerRoom, answerRoomV2:
		ri := r.roomInfo(tag == answerRoomV2)
		a.Room = &ri
	case answerRooms:
		p := &RoomPage{More: r.bool()}
		n := r.count()
		p.Rooms = make([]fsm.RoomInfo, 0, min(n, MaxQueryHistoryLimit))
		for range n {
			ri := r.roomInfo(true)
			if r.err != nil {
				break
			}
			p.Rooms = append(p.Rooms, ri)
		}
		a.Rooms = p
	default:
		r.fail("unknown answer kind %d", tag)
	}
	if err := r.done(); err != nil {
		return Answer{}, fmt.Errorf("rooms: decode room answer: %w", err)
	}
	return a, nil
}

// answerError is a sentinel error with the message it had on the node that
// read the room.
type answerError struct {
	sentinel error
	msg      string
}

func (e *answerError) Error() string {
	switch {
	case e.msg == "":
		return e.sentinel.Error()
	case strings.Contains(e.msg, e.sentinel.Error()):
		return e.msg
	}
	return e.sentinel.Error() + ": " + e.msg
}

func (e *answerError) Unwrap() error { return e.sentinel }

// The binary form of queries and answers: unsigned varints, and byte
// strings prefixed by their varint length, as in package fsm.

func appendBytes(b, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// reader decodes that form. It never panics: the first problem is kept in
// err and every later read returns a zero value.
type reader struct {
	buf []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.buf) == 0 {
		r.fail("input ends early")
		return 0
	}
	v := r.buf[0]
	r.buf = r.buf[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail("malformed or truncated varint")
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail("malformed or truncated varint")
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

// bytes returns a length-prefixed byte string of at most max bytes,
// sharing the input's memory.
func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	switch {
	case r.err != nil:
		return nil
	case n > uint64(max):
		r.fail("field of %d bytes exceeds the limit of %d", n, max)
		return nil
	case n > uint64(len(r.buf)):
		r.fail("input ends early: field of %d bytes, %d left", n, len(r.buf))
		return nil
	case n == 0:
		return nil
	}
	p := r.buf[:n:n]
	r.buf = r.buf[n:]
	return p
}

func (r *reader) string(max int) string { return string(r.bytes(max)) }

func (r *reader) bool() bool {
	switch v := r.byte(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail("boolean byte is %d, want 0 or 1", v)
		return false
	}
}

// count reads the length of a list whose elements take at least a byte
// each, so a lying count fails here instead of allocating.
func (r *reader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.buf)) {
		r.fail("list of %d elements in %d bytes", n, len(r.buf))
		return 0
	}
	return int(n)
}

func (r *reader) done() error {
	if r.err == nil && len(r.buf) != 0 {
		r.err = fmt.Errorf("%d unexpected trailing bytes", len(r.buf))
	}
	return r.err
}
