package client

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// subprotocol is the websocket sub-protocol this package speaks.
const subprotocol = "herald.v1"

// Ops of protocol herald.v1.
const (
	opAuth        = "auth"
	opJoin        = "join"
	opLeave       = "leave"
	opPublish     = "publish"
	opHistory     = "history"
	opMembers     = "members"
	opSubscribe   = "subscribe"
	opUnsubscribe = "unsubscribe"
)

// request is one client frame. Pointers and omitempty keep absent fields
// absent: the protocol gives absence a meaning (no from_seq: start after
// the room's last seq).
type request struct {
	ID          uint64          `json:"id"`
	Op          string          `json:"op"`
	Room        string          `json:"room,omitempty"`
	Token       string          `json:"token,omitempty"`
	User        string          `json:"user,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Meta        json.RawMessage `json:"meta,omitempty"`
	Key         string          `json:"key,omitempty"`
	ExpectSeq   *uint64         `json:"expect_seq,omitempty"`
	FromSeq     *uint64         `json:"from_seq,omitempty"`
	Limit       int             `json:"limit,omitempty"`
	Epoch       string          `json:"epoch,omitempty"`
	Consistency string          `json:"consistency,omitempty"`
}

// frame is any server frame: a reply (id, ok) or a push (ev). Fields the
// protocol may add later are ignored by encoding/json.
type frame struct {
	ID    json.RawMessage `json:"id"`
	OK    bool            `json:"ok"`
	Ev    string          `json:"ev"`
	Error json.RawMessage `json:"error"`

	Room         string          `json:"room"`
	Epoch        string          `json:"epoch"`
	Seq          uint64          `json:"seq"`
	AfterSeq     uint64          `json:"after_seq"`
	Type         string          `json:"type"`
	Member       string          `json:"member"`
	Data         json.RawMessage `json:"data"`
	TS           string          `json:"ts"`
	FirstSeq     uint64          `json:"first_seq"`
	LastSeq      uint64          `json:"last_seq"`
	RetryAfterMS uint64          `json:"retry_after_ms"`
	Truncated    bool            `json:"truncated"`
	EpochChanged bool            `json:"epoch_changed"`
	Duplicate    bool            `json:"duplicate"`
	Stale        bool            `json:"stale"`
	User         string          `json:"user"`
	Node         string          `json:"node"`
	Events       []wireEvent     `json:"events"`
	Members      []wireMember    `json:"members"`
	Limits       wireLimits      `json:"limits"`
}

// wireLimits is what a node tells of its limits at auth; zero where it
// does not say (nodes before this field say nothing).
type wireLimits struct {
	MaxFrame int `json:"max_frame"`
}

type wireEvent struct {
	Room   string          `json:"room"`
	Epoch  string          `json:"epoch"`
	Seq    uint64          `json:"seq"`
	Type   string          `json:"type"`
	Member string          `json:"member"`
	Data   json.RawMessage `json:"data"`
	TS     string          `json:"ts"`
}

type wireMember struct {
	Member    string          `json:"member"`
	Meta      json.RawMessage `json:"meta"`
	JoinedSeq uint64          `json:"joined_seq"`
}

type wireError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// replyError is the error a reply carries, or nil for a successful one.
func (f *frame) replyError() error {
	if f.OK {
		return nil
	}
	e := &Error{Code: CodeInternal, Retryable: true, Message: "reply has ok false and no error"}
	var we wireError
	switch {
	case len(f.Error) == 0 || string(f.Error) == "null":
	case json.Unmarshal(f.Error, &we) == nil && we.Code != "":
		e = &Error{Code: we.Code, Message: we.Message, Retryable: we.Retryable}
	default:
		// Not the documented object: keep what it says rather than lose it.
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

// parseID reads a reply's id; this client only sends unsigned integers.
func parseID(raw json.RawMessage) (uint64, bool) {
	id, err := strconv.ParseUint(string(raw), 10, 64)
	return id, err == nil
}

// parseEpoch orders epochs, which the protocol defines as decimal strings
// ("" for a room that does not exist) that grow with each incarnation.
func parseEpoch(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch %q is not a decimal number", s)
	}
	return e, nil
}

func parseTS(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func (w *wireEvent) event() Event {
	return Event{Kind: KindEvent, Room: w.Room, Epoch: w.Epoch, Seq: w.Seq, Type: w.Type,
		Member: w.Member, Data: w.Data, TS: parseTS(w.TS)}
}

func (f *frame) event() Event {
	return Event{Kind: KindEvent, Room: f.Room, Epoch: f.Epoch, Seq: f.Seq, Type: f.Type,
		Member: f.Member, Data: f.Data, TS: parseTS(f.TS)}
}
