package wsfront

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
)

// request is one client frame as the front decodes it, with when it
// arrived.
type request struct {
	protocol.Request

	received time.Time // when the frame arrived, for the op's latency
}

// opLabel names an op for metrics: a frame's own op text is the client's
// and must not become a label value.
func opLabel(op string) string {
	switch op {
	case protocol.OpAuth, protocol.OpJoin, protocol.OpLeave, protocol.OpPublish, protocol.OpHistory, protocol.OpSubscribe, protocol.OpUnsubscribe, protocol.OpMembers, protocol.OpPing:
		return op
	}
	return "unknown"
}

// Close codes of protocol herald.v1 beyond the standard ones.
const (
	closeNormal       = 1000
	closeGoingAway    = 1001
	closeAuthTimeout  = 4001
	closeIdle         = 4002
	closeSlowConsumer = 4008
	// closeTooManySockets: the user holds Limits.MaxSocketsPerUser sockets
	// on the node (4000 + HTTP 429, the status of the per-address refusal).
	closeTooManySockets = 4029
)

// Close codes the server API's user ops close sockets with
// (docs/protocol.md#close-codes).
const (
	// CloseDisconnected is the code of a disconnect that names none.
	CloseDisconnected = 4010
	// CloseExpired closes a socket whose expiry the server set has come.
	CloseExpired = 4011
	// CloseAppMin..CloseAppMax is the range an application may choose a
	// disconnect's code from; the codes below it are the protocol's.
	CloseAppMin = 4100
	CloseAppMax = 4499
	// MaxCloseReasonBytes bounds a close frame's reason: a control frame
	// carries at most 125 bytes, two of them the code.
	MaxCloseReasonBytes = 123
)

const maxHistoryLimit = 1000

func badRequest(format string, args ...any) *protocol.Error {
	return &protocol.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// decodeRequest parses and checks one text frame. On error the returned
// request still carries the id if one could be read, so the reply can name it.
func decodeRequest(frame []byte) (request, *protocol.Error) {
	var req request
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return req, badRequest("a frame must be one JSON object")
	}
	// Into the embedded Request itself, so that a type error names the
	// field as the client wrote it ("limit", not "Request.limit").
	if err := json.Unmarshal(trimmed, &req.Request); err != nil {
		// Recover the id for the reply when only another field was bad.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(trimmed, &idOnly) == nil && validID(idOnly.ID) {
			req.ID = idOnly.ID
		} else {
			req.ID = nil
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return req, badRequest("field %q must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		}
		return req, badRequest("invalid JSON: %v", err)
	}
	if !validID(req.ID) {
		req.ID = nil
		return req, badRequest("id must be a number or a string")
	}
	if req.Op == "" {
		return req, badRequest("missing op")
	}
	return req, nil
}

func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return len(id) <= 256
	}
	return false
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "uint64", "int":
		return "a non-negative integer"
	case "ptr":
		return "a different type"
	}
	return goKind
}

// checkRoom validates a room name as the protocol defines it.
func checkRoom(room string) *protocol.Error {
	if room == "" {
		return badRequest("missing room")
	}
	if err := fsm.CheckRoomName(room); err != nil {
		return badRequest("%s", err)
	}
	return nil
}

func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// replyWriter builds one JSON reply or push in a byte slice, without
// reflection: replies are on every request's path.
type replyWriter struct{ b []byte }

func newReply(id json.RawMessage, ok bool) *replyWriter {
	w := &replyWriter{b: make([]byte, 0, 96)}
	w.b = append(w.b, `{"id":`...)
	if len(id) == 0 {
		w.b = append(w.b, "null"...)
	} else {
		w.b = append(w.b, id...)
	}
	if ok {
		w.b = append(w.b, `,"ok":true`...)
	} else {
		w.b = append(w.b, `,"ok":false`...)
	}
	return w
}

func newPush(ev string) *replyWriter {
	w := &replyWriter{b: make([]byte, 0, 96)}
	w.b = append(w.b, `{"ev":`...)
	w.b = appendString(w.b, ev)
	return w
}

func (w *replyWriter) key(k string) {
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *replyWriter) str(k, v string) *replyWriter {
	w.key(k)
	w.b = appendString(w.b, v)
	return w
}

func (w *replyWriter) uint(k string, v uint64) *replyWriter {
	w.key(k)
	w.b = strconv.AppendUint(w.b, v, 10)
	return w
}

func (w *replyWriter) bool(k string, v bool) *replyWriter {
	w.key(k)
	w.b = strconv.AppendBool(w.b, v)
	return w
}

// raw adds a value that is already JSON.
func (w *replyWriter) raw(k string, v []byte) *replyWriter {
	w.key(k)
	w.b = append(w.b, v...)
	return w
}

func (w *replyWriter) epoch(e uint64) *replyWriter { return w.str("epoch", epochString(e)) }

func (w *replyWriter) err(e *protocol.Error) *replyWriter {
	w.key("error")
	w.b = append(w.b, `{"code":`...)
	w.b = appendString(w.b, e.Code)
	w.b = append(w.b, `,"message":`...)
	w.b = appendString(w.b, e.Message)
	w.b = append(w.b, `,"retryable":`...)
	w.b = strconv.AppendBool(w.b, e.Retryable)
	w.b = append(w.b, '}')
	if e.Code == protocol.CodeConflict {
		w.uint("last_seq", e.LastSeq)
	}
	if e.RetryAfter > 0 {
		w.uint("retry_after_ms", uint64((e.RetryAfter+time.Millisecond-1)/time.Millisecond))
	}
	return w
}

func (w *replyWriter) done() []byte { return append(w.b, '}') }

func errorReply(id json.RawMessage, e *protocol.Error) []byte {
	return newReply(id, false).err(e).done()
}

// epochString is the protocol's form of a room epoch: "" for a room that
// does not exist.
func epochString(e uint64) string {
	if e == 0 {
		return ""
	}
	return strconv.FormatUint(e, 10)
}

func parseEpoch(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch %q is not one this node issued", s)
	}
	return e, nil
}

var eventTypes = [...]string{
	fsm.EventJoin:          "join",
	fsm.EventLeave:         "leave",
	fsm.EventMessage:       "message",
	fsm.EventPresenceJoin:  "join",
	fsm.EventPresenceLeave: "leave",
}

// isPresence tells the joins and leaves that take no seq.
func isPresence(t fsm.EventType) bool {
	return t == fsm.EventPresenceJoin || t == fsm.EventPresenceLeave
}

// appendEvent appends an event push, or a presence push for a join or
// leave that took no seq: it names the seq it follows (after_seq) instead,
// so that a client tracking seqs never takes it for one.
func appendEvent(b []byte, ev *fsm.Event) []byte {
	if isPresence(ev.Type) {
		b = append(b, `{"ev":"presence","room":`...)
	} else {
		b = append(b, `{"ev":"event","room":`...)
	}
	b = appendString(b, ev.Room)
	b = append(b, `,"epoch":"`...)
	b = strconv.AppendUint(b, ev.Epoch, 10)
	if isPresence(ev.Type) {
		b = append(b, `","after_seq":`...)
	} else {
		b = append(b, `","seq":`...)
	}
	b = strconv.AppendUint(b, ev.Seq, 10)
	b = append(b, `,"type":`...)
	typ := "unknown"
	if int(ev.Type) < len(eventTypes) && eventTypes[ev.Type] != "" {
		typ = eventTypes[ev.Type]
	}
	b = appendString(b, typ)
	b = append(b, `,"member":`...)
	b = appendString(b, ev.Member)
	b = append(b, `,"data":`...)
	b = appendRawJSON(b, ev.Data)
	b = append(b, `,"ts":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

func eventFrame(ev *fsm.Event) []byte { return appendEvent(make([]byte, 0, 128+len(ev.Data)), ev) }

// eventWire is the event's push as a whole websocket frame (wireFrame).
func eventWire(ev *fsm.Event) []byte {
	return wireFrame(128+len(ev.Room)+len(ev.Member)+len(ev.Data), func(b []byte) []byte { return appendEvent(b, ev) })
}

// appendRawJSON appends v, which the front stored as JSON; anything that is
// not (written by another kind of client) goes out as a string so the frame
// stays valid JSON.
func appendRawJSON(b, v []byte) []byte {
	if len(v) == 0 {
		return append(b, "null"...)
	}
	if json.Valid(v) {
		return append(b, v...)
	}
	return appendString(b, string(v))
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
