// Package protocol holds the vocabulary of protocol herald.v1
// (docs/protocol.md), written once for every side that speaks it: the
// sub-protocol name, the ops and pushes, the request frame and the server
// frame as clients decode it (frames.go), and the error codes every
// client-facing API of a node answers with (the websocket front and the
// server API) with the error type that carries one. The room layer maps
// the cluster's errors onto these codes, so a request gets the same answer
// whichever way it came in.
//
// A node writes its replies and pushes by hand, without reflection, since
// they are on every request's path; Frame is the reading side's type.
package protocol

import (
	"fmt"
	"time"
)

// Error codes of protocol herald.v1 (docs/protocol.md#errors).
const (
	CodeBadRequest     = "bad_request"
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeTooLarge       = "too_large"
	CodeRateLimited    = "rate_limited"
	CodeLimitExceeded  = "limit_exceeded"
	CodeUnavailable    = "unavailable"
	CodeUnknownOutcome = "unknown_outcome"
	CodeInternal       = "internal"
)

// Error is a request's failure as protocol herald.v1 reports it.
type Error struct {
	Code    string
	Message string
	// Retryable tells the client that the same request may succeed later.
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

// Retry makes an Error that is retryable.
func Retry(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: true}
}
