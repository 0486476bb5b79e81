package herald

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/transport"
	"github.com/heraldhq/herald/wsfront"
)

// backend serves the websocket front from the node's multiraft host.
type backend struct {
	host *multiraft.Host
	// scheme is the client port's, "http" or "https": every node of a
	// cluster serves clients the same way.
	scheme string
	// front is the node's websocket front, set once it is built: the
	// server API's user ops act on its sockets.
	front *wsfront.Server
}

var _ wsfront.Backend = (*backend)(nil)

func (b *backend) NodeID() string           { return b.host.NodeID() }
func (b *backend) NodeEpoch() uint64        { return b.host.Epoch() }
func (b *backend) Group(room string) uint64 { return b.host.GroupForKey(room) }

// MarkClientPublishes: once the cluster has room option settings (see
// Node.EnableRoomOptions), every node runs a release that reads the mark.
func (b *backend) MarkClientPublishes() bool {
	_, rev := b.host.AppSettings()
	return rev > 0
}

func (b *backend) group(room string) (uint64, error) {
	g := b.host.GroupForKey(room)
	if g == 0 {
		return 0, fmt.Errorf("%w: this node does not know its cluster yet", multiraft.ErrUnavailable)
	}
	return g, nil
}

func (b *backend) Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	g, err := b.group(cmd.Room)
	if err != nil {
		return nil, err
	}
	out, err := b.host.Propose(ctx, g, cmd.Encode())
	if err != nil {
		return nil, err
	}
	res, ok := out.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("herald: group %d returned %T, not a result", g, out)
	}
	return res, nil
}

func (b *backend) query(ctx context.Context, q RoomQuery, stale bool) (RoomAnswer, error) {
	g, err := b.group(q.Room)
	if err != nil {
		return RoomAnswer{}, err
	}
	c := multiraft.Linearizable
	if stale {
		c = multiraft.Stale
	}
	out, err := b.host.Query(ctx, g, c, q.Encode())
	if err != nil {
		return RoomAnswer{}, err
	}
	ans, err := DecodeRoomAnswer(out)
	if err != nil {
		return RoomAnswer{}, err
	}
	return ans, ans.Err
}

func (b *backend) History(ctx context.Context, room string, fromSeq uint64, limit, maxBytes int, stale bool) (fsm.History, error) {
	ans, err := b.query(ctx, RoomQuery{Kind: QueryHistory, Room: room, FromSeq: fromSeq, Limit: limit, MaxBytes: maxBytes}, stale)
	if err != nil {
		return fsm.History{}, err
	}
	if ans.History == nil {
		return fsm.History{}, errors.New("herald: history query answered without a history")
	}
	return *ans.History, nil
}

func (b *backend) Members(ctx context.Context, room string, stale bool) (fsm.Members, error) {
	ans, err := b.query(ctx, RoomQuery{Kind: QueryMembers, Room: room}, stale)
	if err != nil {
		return fsm.Members{}, err
	}
	if ans.Members == nil {
		return fsm.Members{}, errors.New("herald: members query answered without members")
	}
	return *ans.Members, nil
}

func (b *backend) Room(ctx context.Context, room string) (fsm.RoomInfo, error) {
	ans, err := b.query(ctx, RoomQuery{Kind: QueryRoom, Room: room}, false)
	if err != nil {
		return fsm.RoomInfo{}, err
	}
	if ans.Room == nil {
		return fsm.RoomInfo{}, errors.New("herald: room query answered without a room")
	}
	return *ans.Room, nil
}

// GroupEvents streams from the group's leader: from the local state machine
// when this node leads, else over the peer port. Followers learn commits
// only with the leader's next append, so their own apply could lag.
func (b *backend) GroupEvents(ctx context.Context, group uint64) (wsfront.EventStream, error) {
	if id, _ := b.host.Leader(group); id == b.host.NodeID() {
		if sm, ok := b.host.LocalStateMachine(group); ok {
			if f, ok := sm.(*fsm.FSM); ok {
				sub, _, err := f.Subscribe("", groupEventBuffer)
				if err != nil {
					return nil, err
				}
				return newLocalEvents(b.host, group, sub), nil
			}
		}
	}
	s, err := b.host.SubscribeEvents(ctx, group, nil)
	if err != nil {
		return nil, err
	}
	return &remoteEvents{s: s}, nil
}

func (b *backend) Ready() error {
	if b.host.Epoch() == 0 {
		return errors.New("not registered in a cluster yet")
	}
	self := b.host.Cluster().Nodes[b.host.NodeID()]
	switch {
	case self == nil:
		return errors.New("not a member of the cluster (removed, or not yet known here)")
	case self.LeaseExpired:
		return errors.New("this node's lease expired: the meta group could not be reached in time")
	}
	var stuck map[uint64]string
	for _, g := range b.host.LocalGroups() {
		if id, _ := b.host.Leader(g); id != "" {
			continue
		}
		// A replica that stays without a leader past the stuck bound is
		// reported by ReadyNotes instead: the node forwards that group's
		// writes to its leader and serves every other group, and a cut-off
		// replica on every node must not take every node out of service.
		if stuck == nil {
			stuck = b.host.StuckReplicas()
		}
		if stuck[g] != "" {
			continue
		}
		return fmt.Errorf("group %d has no known leader", g)
	}
	return nil
}

// ReadyNotes lists the local replicas cut off from their groups, for
// /readyz: the node stays ready, but reads of those groups' rooms through
// it wait for the replica.
func (b *backend) ReadyNotes() []string {
	stuck := b.host.StuckReplicas()
	groups := slices.Sorted(maps.Keys(stuck))
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		out = append(out, fmt.Sprintf("group %d: this node's replica %s", g, stuck[g]))
	}
	// A damaged replica does not make the node unready either: the node
	// serves that group's rooms from the other replicas.
	damaged := b.host.DamagedReplicas()
	for _, g := range slices.Sorted(maps.Keys(damaged)) {
		out = append(out, fmt.Sprintf("group %d: this node's replica is damaged (%s); rebuild it with: herald admin groups repair %d --node %s", g, damaged[g], g, b.host.NodeID()))
	}
	return out
}

// groupEventBuffer is the events a local group feed may fall behind by
// before it is cut off and reopened (its subscribers then catch up from
// history).
const groupEventBuffer = 1024

// leadershipCheck is how often a local feed checks that this node still
// leads its group.
const leadershipCheck = 50 * time.Millisecond

// localEvents is the feed of a group this node leads. It ends when the
// leadership moves, so that the front reopens it from the new leader.
type localEvents struct {
	host  *multiraft.Host
	group uint64
	sub   *fsm.Subscription
	tick  *time.Ticker
}

func newLocalEvents(h *multiraft.Host, group uint64, sub *fsm.Subscription) *localEvents {
	return &localEvents{host: h, group: group, sub: sub, tick: time.NewTicker(leadershipCheck)}
}

func (l *localEvents) Recv() (fsm.Event, error) {
	for {
		select {
		case ev, ok := <-l.sub.C:
			if !ok {
				if err := l.sub.Err(); err != nil {
					return fsm.Event{}, err
				}
				return fsm.Event{}, fsm.ErrClosed
			}
			return ev, nil
		case <-l.tick.C:
			if id, _ := l.host.Leader(l.group); id != l.host.NodeID() {
				return fsm.Event{}, fmt.Errorf("%w: this node no longer leads group %d", multiraft.ErrUnavailable, l.group)
			}
		}
	}
}

func (l *localEvents) Close() {
	l.sub.Close()
	l.tick.Stop()
}

// remoteEvents is the feed of a group led by another node.
type remoteEvents struct{ s *transport.Stream }

func (r *remoteEvents) Recv() (fsm.Event, error) {
	b, err := r.s.Recv()
	if err != nil {
		return fsm.Event{}, err
	}
	return fsm.DecodeEvent(b)
}

func (r *remoteEvents) Close() { _ = r.s.Close() }
