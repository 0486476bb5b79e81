package wsfront

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/fsm"
)

// This file is what the front shares with the node's other client-facing
// API (package serverapi): the error codes, the mapping of backend errors
// to them and the retry rules behind the protocol's guarantees, so that a
// request gets the same answer whichever way it came in.

// Error codes of protocol herald.v1 (docs/protocol.md#errors).
const (
	CodeBadRequest     = codeBadRequest
	CodeUnauthorized   = codeUnauthorized
	CodeForbidden      = codeForbidden
	CodeNotFound       = codeNotFound
	CodeConflict       = codeConflict
	CodeTooLarge       = codeTooLarge
	CodeRateLimited    = codeRateLimited
	CodeLimitExceeded  = codeLimitExceeded
	CodeUnavailable    = codeUnavailable
	CodeUnknownOutcome = codeUnknownOutcome
	CodeInternal       = codeInternal
)

// Error is a request's failure as protocol herald.v1 reports it.
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// LastSeq goes with CodeConflict: the room's last seq.
	LastSeq uint64
	// RetryAfter goes with CodeRateLimited.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an Error that is not retryable.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *protoError) public() *Error {
	if e == nil {
		return nil
	}
	return &Error{Code: e.code, Message: e.msg, Retryable: e.retryable, LastSeq: e.lastSeq, RetryAfter: e.retryAfter}
}

// Commit commits cmd through be under the protocol's rules: it retries
// while ctx allows when nothing was written (no leader yet) and, when
// retryUnknown is set (a publish with a key), after a lost outcome; once
// any attempt may have committed, a failure is CodeUnknownOutcome, never a
// final one. What the state machine refused maps to the protocol's codes.
func Commit(ctx context.Context, be interface {
	Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
}, cmd fsm.Command, retryUnknown bool) (*fsm.Result, *Error) {
	res, perr := propose(ctx, be, cmd, retryUnknown)
	return res, perr.public()
}

// Read runs a read of the backend, repeating it while ctx allows when no
// leader answered, and maps its failure to the protocol's codes.
func Read(ctx context.Context, read func(context.Context) error) *Error {
	if err := readRetry(ctx, read); err != nil {
		return backendError(err).public()
	}
	return nil
}

// CheckRoom applies the protocol's rule for room names.
func CheckRoom(room string) *Error { return checkRoom(room).public() }

// ValidName reports whether s can name a member: UTF-8 without control
// characters, at most fsm.MaxMemberBytes, not empty.
func ValidName(s string) bool { return s != "" && len(s) <= fsm.MaxMemberBytes && validText(s) }

// AppendEvent appends ev as the protocol frames an event push.
func AppendEvent(b []byte, ev *fsm.Event) []byte { return appendEvent(b, ev) }

// AppendJSON appends v, which the front stores as JSON; a value that is
// not JSON (written by another kind of client) goes out as a JSON string.
func AppendJSON(b, v []byte) []byte { return appendRawJSON(b, v) }

// EpochString is the protocol's form of a room epoch: "" for a room that
// does not exist.
func EpochString(e uint64) string { return epochString(e) }
