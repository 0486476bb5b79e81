package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/protocol"
)

// This file is the one table from what can go wrong in the cluster to the
// codes of protocol herald.v1, and the retry rules behind the protocol's
// guarantees: the websocket front and the server API both answer through
// it, so a request gets the same answer whichever way it came in.

// The cluster's errors a caller may want to tell apart, so that no layer
// above this one needs to import multiraft for them.
var (
	// ErrUnavailable: no leader could be reached in time; nothing was
	// written, and the request may be repeated.
	ErrUnavailable = multiraft.ErrUnavailable
	// ErrUnknownOutcome: a write may or may not have committed.
	ErrUnknownOutcome = multiraft.ErrUnknownOutcome
)

// Proposer commits room commands; *Service is one, and so is a front's
// in-memory test backend.
type Proposer interface {
	Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
}

// Commit commits cmd through p under the protocol's rules: it retries
// while ctx allows when nothing was written (no leader yet) and, when
// retryUnknown is set (a publish with a key, which makes a repeat
// harmless), after a lost outcome. Once any attempt may have committed, a
// failure is CodeUnknownOutcome, never one the client would take as final.
// What the state machine refused maps through ResultError.
func Commit(ctx context.Context, p Proposer, cmd fsm.Command, retryUnknown bool) (*fsm.Result, *protocol.Error) {
	uncertain := false
	backoff := 20 * time.Millisecond
	for {
		res, err := p.Propose(ctx, cmd)
		if err == nil {
			if res.Err != nil {
				return nil, ResultError(cmd.Op, res)
			}
			return res, nil
		}
		unknown := errors.Is(err, ErrUnknownOutcome) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
		if unknown {
			uncertain = true
		}
		retry := errors.Is(err, ErrUnavailable) || (unknown && retryUnknown)
		if !retry || !wait.Sleep(ctx, backoff) {
			if uncertain {
				return nil, protocol.Retry(protocol.CodeUnknownOutcome,
					"the write may or may not have committed (%v); retry with the same key to find out", err)
			}
			return nil, ErrorOf(err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// Read runs read until it succeeds, fails for good, or ctx ends: reads
// have no side effects, so an attempt that found no leader may simply be
// repeated. A failure maps through ErrorOf.
func Read(ctx context.Context, read func(context.Context) error) *protocol.Error {
	backoff := 20 * time.Millisecond
	for {
		err := read(ctx)
		if err == nil {
			return nil
		}
		if !(errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome)) || !wait.Sleep(ctx, backoff) {
			return ErrorOf(err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// ResultError maps what the state machine refused to the protocol's codes.
func ResultError(op fsm.Op, res *fsm.Result) *protocol.Error {
	err := res.Err
	switch {
	case errors.Is(err, fsm.ErrConflict):
		return &protocol.Error{Code: protocol.CodeConflict, LastSeq: res.LastSeq, Message: err.Error()}
	case errors.Is(err, fsm.ErrNotMember) && op == fsm.OpLeave:
		return protocol.Errorf(protocol.CodeNotFound, "%v", err)
	case errors.Is(err, fsm.ErrNotMember), errors.Is(err, fsm.ErrForbidden):
		return protocol.Errorf(protocol.CodeForbidden, "%v", err)
	case errors.Is(err, fsm.ErrRoomFull):
		return protocol.Errorf(protocol.CodeLimitExceeded, "%v", err)
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, fsm.ErrBadCommand):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, fsm.ErrRoomNotFound):
		return protocol.Errorf(protocol.CodeNotFound, "%v", err)
	}
	return protocol.Retry(protocol.CodeInternal, "%v", err)
}

// ErrorOf maps a failed read, or a write that certainly did not commit.
func ErrorOf(err error) *protocol.Error {
	switch {
	case errors.Is(err, fsm.ErrRoomNotFound):
		return protocol.Errorf(protocol.CodeNotFound, "%v", err)
	case errors.Is(err, fsm.ErrInvalid):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, fsm.ErrCorrupt):
		// The replica that answered found its stored data corrupt and
		// stopped serving; another replica has it right.
		return protocol.Retry(protocol.CodeInternal, "%v", err)
	case errors.Is(err, ErrUnavailable), errors.Is(err, multiraft.ErrClosed),
		errors.Is(err, multiraft.ErrNoReplica), errors.Is(err, ErrUnknownOutcome),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, fsm.ErrClosed),
		errors.Is(err, fsm.ErrNeedsRestore), errors.Is(err, fsm.ErrStorage):
		return protocol.Retry(protocol.CodeUnavailable, "%v", err)
	}
	return protocol.Retry(protocol.CodeInternal, "%v", err)
}

// unavailable is ErrUnavailable with why.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnavailable}, args...)...)
}
