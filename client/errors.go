package client

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Error codes of protocol herald.v1 (package protocol holds the list).
const (
	CodeBadRequest     = protocol.CodeBadRequest
	CodeUnauthorized   = protocol.CodeUnauthorized
	CodeForbidden      = protocol.CodeForbidden
	CodeNotFound       = protocol.CodeNotFound
	CodeConflict       = protocol.CodeConflict
	CodeTooLarge       = protocol.CodeTooLarge
	CodeRateLimited    = protocol.CodeRateLimited
	CodeLimitExceeded  = protocol.CodeLimitExceeded
	CodeUnavailable    = protocol.CodeUnavailable
	CodeUnknownOutcome = protocol.CodeUnknownOutcome
	CodeInternal       = protocol.CodeInternal
)

// Error is an error a node answered, or one this client reports in the
// protocol's terms (unknown_outcome when it gave up on a publish that may
// have been applied). Compare with errors.Is against the Err* values, which
// match by Code.
type Error struct {
	Code    string
	Message string
	// Retryable means the same request may succeed later unchanged.
	Retryable bool
	// LastSeq is the room's last seq, with conflict.
	LastSeq uint64
	// RetryAfter is how long the node asks to wait, with rate_limited.
	RetryAfter time.Duration

	cause error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "herald: " + e.Code
	}
	return "herald: " + e.Code + ": " + e.Message
}

// Is matches any *Error with the same Code, so errors.Is(err, ErrConflict)
// holds for every conflict whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Unwrap returns what made the client give up, such as the context's
// error, when there is one.
func (e *Error) Unwrap() error { return e.cause }

// Values to compare errors with, by code.
var (
	ErrBadRequest     = &Error{Code: CodeBadRequest}
	ErrUnauthorized   = &Error{Code: CodeUnauthorized}
	ErrForbidden      = &Error{Code: CodeForbidden}
	ErrNotFound       = &Error{Code: CodeNotFound}
	ErrConflict       = &Error{Code: CodeConflict}
	ErrTooLarge       = &Error{Code: CodeTooLarge}
	ErrRateLimited    = &Error{Code: CodeRateLimited}
	ErrLimitExceeded  = &Error{Code: CodeLimitExceeded}
	ErrUnavailable    = &Error{Code: CodeUnavailable}
	ErrUnknownOutcome = &Error{Code: CodeUnknownOutcome}
	ErrInternal       = &Error{Code: CodeInternal}
)

var (
	// ErrClosed is returned once the Client or the Subscription is closed.
	ErrClosed = errors.New("herald: closed")
	// ErrSubscribed is returned by Subscribe for a room the client already
	// subscribes to: a node keeps one subscription per room and socket.
	ErrSubscribed = errors.New("herald: room already subscribed on this client")
	// ErrOvertaken is returned by Join or Leave when a later Leave or Join
	// of the same room changed what the client wants before it completed.
	ErrOvertaken = errors.New("herald: overtaken by a later Join or Leave of the room")
	// ErrUnsubscribed ends a subscription the server ended (the server
	// API's unsubscribe); the client does not subscribe again by itself.
	ErrUnsubscribed = errors.New("herald: the server ended the subscription")
)

// errConnLost is an attempt that died with its socket.
var errConnLost = errors.New("herald: connection lost")

// gaveUp is a context ending while an operation retried: it is both the
// context's error and the last attempt's, for errors.Is and errors.As.
type gaveUp struct {
	ctx, last error
}

func (e *gaveUp) Error() string   { return e.ctx.Error() + " (last attempt: " + e.last.Error() + ")" }
func (e *gaveUp) Unwrap() []error { return []error{e.ctx, e.last} }

// stopError is what an operation returns when it stops retrying because of
// err (the context's, ErrClosed or the client's fatal error) after last.
func stopError(err, last error) error {
	if last == nil || errors.Is(err, last) || !isContextErr(err) {
		return err
	}
	return &gaveUp{ctx: err, last: last}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
