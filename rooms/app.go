package rooms

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
	_ multiraft.Querier     = (*Application)(nil)
)

// NewStateMachine opens the room state machine of one data group.
func (a *Application) NewStateMachine(group uint64) (multiraft.StateMachine, error) {
	return fsm.New(a.Store, fsm.Config{Group: group, Logger: a.Logger})
}

// EncodeResult encodes an fsm.Result for a proposer on another node.
func (a *Application) EncodeResult(r any) ([]byte, error) {
	res, ok := r.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("rooms: apply returned %T, not *fsm.Result", r)
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
		return fmt.Errorf("rooms: state machine is %T, not *fsm.FSM", sm)
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

// Query answers an encoded Query from sm with an encoded Answer,
// for multiraft.Host.Query. What the read found, errors included (no such
// room, a replica closed or awaiting a restore), travels in the answer; an
// error means req is not a Query or sm is not a room state machine.
func (a *Application) Query(sm multiraft.StateMachine, req []byte) ([]byte, error) {
	f, ok := sm.(*fsm.FSM)
	if !ok {
		return nil, fmt.Errorf("rooms: state machine is %T, not *fsm.FSM", sm)
	}
	q, err := DecodeQuery(req)
	if err != nil {
		return nil, err
	}
	var ans Answer
	switch q.Kind {
	case QueryHistory:
		h, err := f.HistoryBytes(q.Room, q.FromSeq, q.limit(), q.maxBytes())
		ans = Answer{History: &h, Err: err}
	case QueryMembers:
		m, err := f.Members(q.Room)
		ans = Answer{Members: &m, Err: err}
	case QueryRoom:
		ri, err := f.Room(q.Room)
		ans = Answer{Room: &ri, Err: err}
	case QueryRooms:
		p, err := roomsPage(f, q.Room, q.After, q.limit())
		ans = Answer{Rooms: &p, Err: err}
	}
	return encodeAnswer(ans, maxHistoryAnswerBytes), nil
}
