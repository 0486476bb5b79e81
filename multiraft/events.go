package multiraft

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// EventSource is implemented by an Application whose state machines
// publish the events they apply. The host then serves a group's events to
// nodes without a replica of it, from the leader's apply.
type EventSource interface {
	// ServeEvents sends, encoded, the events sm applies from now on until
	// ctx ends or send fails. req is the subscriber's request, in the
	// application's terms (which events it wants). A nil return ends the
	// stream cleanly; an error ends it with that error.
	ServeEvents(ctx context.Context, sm StateMachine, req []byte, send func([]byte) error) error
}

const svcEvents = "mr.events"

func (h *Host) handleEvents(ctx context.Context, _ string, group uint64, req []byte, send func([]byte) error) error {
	src, ok := h.cfg.App.(EventSource)
	if !ok {
		return errors.New("multiraft: this node's application publishes no events")
	}
	rep := h.replica(group)
	if rep == nil {
		return h.noReplica(group)
	}
	if rep.raft.State() != raft.Leader {
		return rep.notLeader()
	}
	sm, ok := rep.fsm.(StateMachine)
	if !ok {
		return h.noReplica(group)
	}
	// Events are served from the leader's apply only: when this replica
	// loses the leadership the stream ends and the subscriber moves on.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if rep.raft.State() != raft.Leader {
					cancel(rep.notLeader())
					return
				}
			}
		}
	}()
	err := src.ServeEvents(ctx, sm, req, send)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// EventStream is an open stream of the events a group's leader applies,
// each as the Application's EventSource encoded it.
type EventStream interface {
	// Recv returns the next event, or an error once the stream ended.
	Recv() ([]byte, error)
	Close() error
}

// SubscribeEvents opens a stream of the events group's leader applies from
// now on, over the peer port. The stream ends (Recv returns an error) when
// the leader changes or the subscriber falls behind; the subscriber then
// reads what it missed and subscribes again. Events already applied before
// the stream opened are not sent: read them first, then compare positions.
func (h *Host) SubscribeEvents(ctx context.Context, group uint64, req []byte) (EventStream, error) {
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return nil, err
	}
	s, err := h.peers.OpenStream(ctx, raft.ServerAddress(ls.LeaderAddr), svcEvents, group, req)
	if err != nil {
		return nil, fmt.Errorf("%w: events of group %d from %s: %v", ErrUnavailable, group, ls.LeaderID, err)
	}
	return s, nil
}
