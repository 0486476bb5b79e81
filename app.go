// Package herald assembles a Herald node: the room state machine (package
// fsm) replicated by many raft groups (package multiraft) behind the
// websocket front (package wsfront). Application is the glue between the
// first two: it tells multiraft how to open, and talk about, a room group.
package herald

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
)

// Application runs package fsm's room state machine in multiraft's data
// groups. All groups of a node share one fsm.Store.
type Application struct {
	Store  *fsm.Store
	Logger *slog.Logger
}

var (
	_ multiraft.Application = (*Application)(nil)
	_ multiraft.EventSource = (*Application)(nil)
)

// NewStateMachine opens the room state machine of one data group.
func (a *Application) NewStateMachine(group uint64) (multiraft.StateMachine, error) {
	return fsm.New(a.Store, fsm.Config{Group: group, Logger: a.Logger})
}

// EncodeResult encodes an fsm.Result for a proposer on another node.
func (a *Application) EncodeResult(r any) ([]byte, error) {
	res, ok := r.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("herald: apply returned %T, not *fsm.Result", r)
	}
	return fsm.EncodeResult(res), nil
}

// DecodeResult decodes what EncodeResult made into an *fsm.Result.
func (a *Application) DecodeResult(b []byte) (any, error) { return fsm.DecodeResult(b) }

// ExpireNodeCommand is fsm's expire_node: members held by the node's
// sessions of epochs below before leave their rooms.
func (a *Application) ExpireNodeCommand(node string, before uint64) []byte {
	c := fsm.Command{Op: fsm.OpExpireNode, NodeID: node, NodeEpoch: before}
	return c.Encode()
}

// MoreToDo reports an expire_node or tick that stopped at its per-entry limit.
func (a *Application) MoreToDo(r any) bool {
	res, ok := r.(*fsm.Result)
	return ok && res.More
}

// ServeEvents streams the events of one room of sm, or of every room when
// req is empty, encoded with fsm.EncodeEvent. It ends with fsm.ErrLagged
// when the subscriber falls behind.
func (a *Application) ServeEvents(ctx context.Context, sm multiraft.StateMachine, req []byte, send func([]byte) error) error {
	f, ok := sm.(*fsm.FSM)
	if !ok {
		return fmt.Errorf("herald: state machine is %T, not *fsm.FSM", sm)
	}
	sub, _, err := f.Subscribe(string(req), 0)
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.C:
			if !ok {
				// Lagged, or the replica closed: either way the
				// subscriber must catch up and subscribe again.
				return sub.Err()
			}
			if err := send(fsm.EncodeEvent(ev)); err != nil {
				return err
			}
		}
	}
}
