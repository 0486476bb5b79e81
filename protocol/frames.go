package protocol

import (
	"encoding/json"
	"strconv"
	"time"
)

// Subprotocol is the websocket sub-protocol name of herald.v1, offered by
// clients in Sec-WebSocket-Protocol.
const Subprotocol = "herald.v1"

// Ops of protocol herald.v1 (docs/protocol.md#ops).
const (
	OpAuth        = "auth"
	OpJoin        = "join"
	OpLeave       = "leave"
	OpPublish     = "publish"
	OpHistory     = "history"
	OpMembers     = "members"
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPing        = "ping"
)

// Pushes of protocol herald.v1: the values of a server frame's "ev"
// (docs/protocol.md#server-pushes).
const (
	EvEvent        = "event"
	EvPresence     = "presence"
	EvTruncated    = "truncated"
	EvRoomDeleted  = "room_deleted"
	EvUnsubscribed = "unsubscribed"
)

// ConsistencyStale is the "consistency" of a read that a follower may
// answer from its own replica.
const ConsistencyStale = "stale"

// Request is one client frame, as a client encodes it and a node decodes
// it. Pointers tell an absent field from a zero one where the protocol
// gives absence a meaning (no from_seq: start after the room's last seq;
// limit 0 is refused, no limit is the default), and omitempty keeps absent
// fields out of what a client sends.
type Request struct {
	// ID is the request's id as it stands in the frame: the JSON text of a
	// number or a string, which the reply echoes byte for byte. A node
	// takes either, so it keeps the text rather than a value; the clients
	// of this module send unsigned integers (NumericID) and read them back
	// with ParseID.
	ID          json.RawMessage `json:"id,omitempty"`
	Op          string          `json:"op"`
	Room        string          `json:"room,omitempty"`
	Token       string          `json:"token,omitempty"`
	User        string          `json:"user,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Meta        json.RawMessage `json:"meta,omitempty"`
	Key         string          `json:"key,omitempty"`
	ExpectSeq   *uint64         `json:"expect_seq,omitempty"`
	FromSeq     *uint64         `json:"from_seq,omitempty"`
	Limit       *int            `json:"limit,omitempty"`
	Epoch       *string         `json:"epoch,omitempty"`
	Consistency string          `json:"consistency,omitempty"`
}

// NumericID is the id text of request number n.
func NumericID(n uint64) json.RawMessage { return strconv.AppendUint(nil, n, 10) }

// ParseID reads an id that NumericID wrote; ok is false for any other id
// (a string, a negative number, or null in the reply to a frame the node
// could not take as a request).
func ParseID(id json.RawMessage) (n uint64, ok bool) {
	n, err := strconv.ParseUint(string(id), 10, 64)
	return n, err == nil
}

// Frame is a server frame as a client decodes it: a reply (ID and OK) or
// a push (Ev). It has the fields of every reply and push; those a frame
// does not carry stay zero, and fields a later node adds are ignored.
type Frame struct {
	ID json.RawMessage `json:"id"`
	OK bool            `json:"ok"`
	Ev string          `json:"ev"`
	// Error is the error object of a failed reply, kept as JSON so that
	// Err can still report one that is not the documented object.
	Error json.RawMessage `json:"error"`

	// Event holds the fields an event push shares with the events of a
	// history page, at the frame's top level; replies use Room, Epoch and
	// Seq of it too.
	Event

	AfterSeq     uint64   `json:"after_seq"`
	FirstSeq     uint64   `json:"first_seq"`
	LastSeq      uint64   `json:"last_seq"`
	RetryAfterMS uint64   `json:"retry_after_ms"`
	More         bool     `json:"more"`
	Truncated    bool     `json:"truncated"`
	EpochChanged bool     `json:"epoch_changed"`
	Duplicate    bool     `json:"duplicate"`
	Stale        bool     `json:"stale"`
	Pong         bool     `json:"pong"`
	User         string   `json:"user"`
	Node         string   `json:"node"`
	Expires      string   `json:"expires"`
	Events       []Event  `json:"events"`
	Members      []Member `json:"members"`
	Limits       Limits   `json:"limits"`
}

// Event is one event of a room, as a history page lists it and an event
// (or presence) push carries it.
type Event struct {
	Room  string `json:"room"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// Type is "message", "join" or "leave".
	Type   string          `json:"type"`
	Member string          `json:"member"`
	Data   json.RawMessage `json:"data"`
	// TS is when the leader appended the event, RFC 3339 in UTC.
	TS string `json:"ts"`
}

// Member is one member of a room in a members reply.
type Member struct {
	Member    string          `json:"member"`
	Meta      json.RawMessage `json:"meta"`
	JoinedSeq uint64          `json:"joined_seq"`
}

// Limits is what a node tells of its limits in the auth reply; zero where
// it does not say (nodes before this field say nothing).
type Limits struct {
	MaxFrame int `json:"max_frame"`
	MaxData  int `json:"max_data"`
}

// ErrorObject is the "error" of a failed reply.
type ErrorObject struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// Err is the failure a reply reports, nil for a successful one. A failed
// reply without the documented error object is a retryable internal
// error that keeps whatever the reply said.
func (f *Frame) Err() *Error {
	if f.OK {
		return nil
	}
	e := &Error{Code: CodeInternal, Retryable: true, Message: "reply has ok false and no error"}
	var obj ErrorObject
	switch {
	case len(f.Error) == 0 || string(f.Error) == "null":
	case json.Unmarshal(f.Error, &obj) == nil && obj.Code != "":
		e = &Error{Code: obj.Code, Message: obj.Message, Retryable: obj.Retryable}
	default:
		var s string
		if json.Unmarshal(f.Error, &s) == nil {
			e.Message = s
		} else {
			e.Message = string(f.Error)
		}
	}
	e.LastSeq = f.LastSeq
	e.RetryAfter = time.Duration(f.RetryAfterMS) * time.Millisecond
	return e
}
