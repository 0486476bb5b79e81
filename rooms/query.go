package rooms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wire"
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
	b = wire.AppendString(b, q.Room)
	b = binary.AppendUvarint(b, q.FromSeq)
	b = binary.AppendUvarint(b, uint64(max(q.Limit, 0)))
	b = binary.AppendUvarint(b, uint64(max(q.MaxBytes, 0)))
	if v == roomsVersion {
		b = wire.AppendString(b, q.After)
	}
	return b
}

// DecodeQuery reverses Encode. Malformed input is an error, never a
// panic; a Limit above MaxQueryHistoryLimit comes back cut to it, and a
// MaxBytes above maxHistoryAnswerBytes to that.
func DecodeQuery(b []byte) (Query, error) {
	r := &reader{Buf: b}
	v := r.Byte()
	if r.Err() == nil && v != 1 && v != queryVersion && v != roomsVersion {
		return Query{}, fmt.Errorf("rooms: room query version %d is not known to this node", v)
	}
	var q Query
	q.Kind = QueryKind(r.Byte())
	q.Room = r.String(fsm.MaxRoomBytes)
	q.FromSeq = r.Uvarint()
	q.Limit = int(min(r.Uvarint(), MaxQueryHistoryLimit))
	if v >= 2 {
		q.MaxBytes = int(min(r.Uvarint(), maxHistoryAnswerBytes))
	}
	if v >= roomsVersion {
		q.After = r.String(fsm.MaxRoomBytes)
	}
	if err := r.Done(); err != nil {
		return Query{}, fmt.Errorf("rooms: decode room query: %w", err)
	}
	switch q.Kind {
	case QueryHistory, QueryMembers, QueryRoom, QueryRooms:
	default:
		return Query{}, fmt.Errorf("rooms: decode room query: unknown kind %d", q.Kind)
	}
	if q.After != "" && q.Kind != QueryRooms {
		// Encode never writes one, and a query must mean what it says.
		return Query{}, fmt.Errorf("rooms: decode room query: a cursor on a query of kind %d, which does not page", q.Kind)
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
var answerErrors = wire.Sentinels{nil, fsm.ErrRoomNotFound, fsm.ErrInvalid, fsm.ErrClosed,
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
		code := answerErrors.Code(a.Err)
		if errors.Is(a.Err, fsm.ErrCorrupt) {
			code = len(answerErrors) - 1 // it matches ErrStorage too, which comes first
		}
		b = append(b, answerErr)
		b = binary.AppendUvarint(b, uint64(code))
		b = wire.AppendString(b, a.Err.Error())
	case a.History != nil:
		h := a.History
		var events []byte
		n := 0
		for _, ev := range h.Events {
			e := fsm.EncodeEvent(ev)
			if n > 0 && len(events)+len(e) > budget {
				break
			}
			events = wire.AppendBytes(events, e)
			n++
		}
		b = append(b, answerHistory)
		b = binary.AppendUvarint(b, h.Epoch)
		b = binary.AppendUvarint(b, h.FirstSeq)
		b = binary.AppendUvarint(b, h.LastSeq)
		b = wire.AppendBool(b, h.Truncated)
		b = binary.AppendUvarint(b, uint64(n))
		b = append(b, events...)
	case a.Members != nil:
		m := a.Members
		b = append(b, answerMembers)
		b = binary.AppendUvarint(b, m.Epoch)
		b = binary.AppendUvarint(b, m.Seq)
		b = binary.AppendUvarint(b, uint64(len(m.Members)))
		for _, mb := range m.Members {
			b = wire.AppendString(b, mb.Name)
			b = wire.AppendBytes(b, mb.Meta)
			b = wire.AppendBool(b, mb.Ephemeral)
			b = wire.AppendString(b, mb.NodeID)
			b = binary.AppendUvarint(b, mb.NodeEpoch)
			b = binary.AppendUvarint(b, mb.JoinedSeq)
		}
	case a.Room != nil:
		b = append(b, answerRoomV2)
		b = appendRoomInfo(b, a.Room)
	case a.Rooms != nil:
		b = append(b, answerRooms)
		b = wire.AppendBool(b, a.Rooms.More)
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
	r := &reader{Buf: b}
	if v := r.Byte(); r.Err() == nil && v != answerVersion {
		return Answer{}, fmt.Errorf("rooms: room answer version %d is not known to this node", v)
	}
	var a Answer
	switch tag := r.Byte(); tag {
	case answerEmpty:
	case answerErr:
		code := r.Uvarint()
		msg := r.String(64 << 10)
		// Code 0, or a sentinel a newer build added, keeps only the
		// message.
		a.Err = answerErrors.Error(code, msg)
	case answerHistory:
		h := &fsm.History{Epoch: r.Uvarint(), FirstSeq: r.Uvarint(), LastSeq: r.Uvarint(), Truncated: r.Bool()}
		n := r.Count()
		if n > 0 {
			h.Events = make([]fsm.Event, 0, min(n, MaxQueryHistoryLimit))
		}
		for range n {
			e := r.Bytes(len(r.Buf))
			if r.Err() != nil {
				break
			}
			ev, err := fsm.DecodeEvent(e)
			if err != nil {
				r.Fail("event %d: %v", len(h.Events), err)
				break
			}
			h.Events = append(h.Events, ev)
		}
		a.History = h
	case answerMembers:
		m := &fsm.Members{Epoch: r.Uvarint(), Seq: r.Uvarint()}
		n := r.Count()
		m.Members = make([]fsm.Member, 0, min(n, 1024))
		for range n {
			mb := fsm.Member{Name: r.String(fsm.MaxMemberBytes), Meta: r.Bytes(fsm.MaxMetaBytes), Ephemeral: r.Bool(),
				NodeID: r.String(fsm.MaxNodeIDBytes), NodeEpoch: r.Uvarint(), JoinedSeq: r.Uvarint()}
			if r.Err() != nil {
				break
			}
			if len(mb.Meta) == 0 {
				mb.Meta = nil // as the state machine reads a member without meta
			}
			m.Members = append(m.Members, mb)
		}
		a.Members = m
	case answerRoom, answerRoomV2:
		ri := readRoomInfo(r, tag == answerRoomV2)
		a.Room = &ri
	case answerRooms:
		p := &RoomPage{More: r.Bool()}
		n := r.Count()
		p.Rooms = make([]fsm.RoomInfo, 0, min(n, MaxQueryHistoryLimit))
		for range n {
			ri := readRoomInfo(r, true)
			if r.Err() != nil {
				break
			}
			p.Rooms = append(p.Rooms, ri)
		}
		a.Rooms = p
	default:
		r.Fail("unknown answer kind %d", tag)
	}
	if err := r.Done(); err != nil {
		return Answer{}, fmt.Errorf("rooms: decode room answer: %w", err)
	}
	return a, nil
}

// reader decodes the binary form of queries and answers (package wire).
type reader = wire.Reader
