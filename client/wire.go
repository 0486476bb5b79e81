package client

import (
	"fmt"
	"strconv"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// replyError is the error a reply carries, or nil for a successful one.
func replyError(f *protocol.Frame) error {
	e := f.Err()
	if e == nil {
		return nil
	}
	return &Error{Code: e.Code, Message: e.Message, Retryable: e.Retryable, LastSeq: e.LastSeq, RetryAfter: e.RetryAfter}
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

// eventOf is an event of a history page or an event push.
func eventOf(w *protocol.Event) Event {
	return Event{Kind: KindEvent, Room: w.Room, Epoch: w.Epoch, Seq: w.Seq, Type: w.Type,
		Member: w.Member, Data: w.Data, TS: parseTS(w.TS)}
}

// optional is a request's optional string field: absent when empty, which
// a node takes as it takes the empty string.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func valueOf(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
