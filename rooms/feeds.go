package rooms

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
)

// Feed is one open stream of a group's committed events.
type Feed interface {
	// Recv returns the next event, or an error once the feed has ended.
	Recv() (fsm.Event, error)
	Close()
}

// groupEventBuffer is the events a local group feed may fall behind by
// before it is cut off and reopened (its subscribers then catch up from
// history).
const groupEventBuffer = 1024

// GroupEvents opens a feed of the events group g applies from now on, from
// its leader: from the local state machine when this node leads, else over
// the peer port (followers learn commits only with the leader's next
// append, so their own apply could lag). The feed ends when the leadership
// moves; the caller then opens a new one.
func (s *Service) GroupEvents(ctx context.Context, g uint64) (Feed, error) {
	if s.leaderHere(g) {
		if f, ok := s.localFSM(g); ok {
			lost, stop := s.lead.watch(g)
			sub, _, err := f.Subscribe("", groupEventBuffer)
			if err != nil {
				stop()
				return nil, err
			}
			return &localFeed{group: g, sub: sub, lost: lost, stopWatch: stop}, nil
		}
	}
	st, err := s.host.SubscribeEvents(ctx, g, nil)
	if err != nil {
		return nil, err
	}
	return &remoteFeed{recv: st.Recv, close: func() { _ = st.Close() }}, nil
}

// localFSM is the state machine of this node's replica of group g.
func (s *Service) localFSM(g uint64) (*fsm.FSM, bool) {
	sm, ok := s.host.LocalStateMachine(g)
	if !ok {
		return nil, false
	}
	f, ok := sm.(*fsm.FSM)
	return f, ok
}

// localFeed is the feed of a group this node leads. It ends when the
// leadership moves, so that the front reopens it from the new leader.
type localFeed struct {
	group     uint64
	sub       *fsm.Subscription
	lost      <-chan struct{}
	stopWatch func()
}

func (l *localFeed) Recv() (fsm.Event, error) {
	// An event already applied is still this leader's to deliver, so the
	// subscription is drained before a lost leadership ends the feed.
	select {
	case ev, ok := <-l.sub.C:
		return l.event(ev, ok)
	default:
	}
	select {
	case ev, ok := <-l.sub.C:
		return l.event(ev, ok)
	case <-l.lost:
		return fsm.Event{}, fmt.Errorf("%w: this node no longer leads group %d", ErrUnavailable, l.group)
	}
}

func (l *localFeed) event(ev fsm.Event, ok bool) (fsm.Event, error) {
	if !ok {
		if err := l.sub.Err(); err != nil {
			return fsm.Event{}, err
		}
		return fsm.Event{}, fsm.ErrClosed
	}
	return ev, nil
}

func (l *localFeed) Close() {
	l.sub.Close()
	l.stopWatch()
}

// remoteFeed is the feed of a group led by another node.
type remoteFeed struct {
	recv  func() ([]byte, error)
	close func()
}

func (r *remoteFeed) Recv() (fsm.Event, error) {
	b, err := r.recv()
	if err != nil {
		return fsm.Event{}, err
	}
	return fsm.DecodeEvent(b)
}

func (r *remoteFeed) Close() { r.close() }

// leadershipRecheck is how often the watched groups' leadership is read
// again regardless of changes seen: the host drops changes for a watcher
// whose buffer is full, and this bounds how long a feed could outlive its
// leadership if that ever happened.
const leadershipRecheck = time.Second

// leadership tells local feeds when this node stops leading their group.
// One watch of the host's leader changes serves every feed.
type leadership struct {
	host *multiraft.Host

	mu      sync.Mutex
	watches map[uint64]map[*leaderWatch]struct{} // guarded by mu
}

type leaderWatch struct{ lost chan struct{} }

func newLeadership(h *multiraft.Host) *leadership {
	return &leadership{host: h, watches: make(map[uint64]map[*leaderWatch]struct{})}
}

// watch returns a channel closed once this node no longer leads group g
// (at once if it does not lead it now), and the function that ends the
// watch.
func (l *leadership) watch(g uint64) (<-chan struct{}, func()) {
	w := &leaderWatch{lost: make(chan struct{})}
	l.mu.Lock()
	if l.watches[g] == nil {
		l.watches[g] = make(map[*leaderWatch]struct{})
	}
	l.watches[g][w] = struct{}{}
	l.mu.Unlock()
	// A change between the caller's check and the registration above was
	// not seen by run: look once more now that it would be.
	l.check(g)
	return w.lost, func() {
		l.mu.Lock()
		delete(l.watches[g], w)
		if len(l.watches[g]) == 0 {
			delete(l.watches, g)
		}
		l.mu.Unlock()
	}
}

// check ends the watches of group g if this node does not lead it.
func (l *leadership) check(g uint64) {
	if id, _ := l.host.Leader(g); id == l.host.NodeID() {
		return
	}
	l.mu.Lock()
	for w := range l.watches[g] {
		close(w.lost)
	}
	delete(l.watches, g)
	l.mu.Unlock()
}

func (l *leadership) watched() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]uint64, 0, len(l.watches))
	for g := range l.watches {
		out = append(out, g)
	}
	return out
}

// run follows the host's leader changes until ctx ends.
func (l *leadership) run(ctx context.Context) {
	changes, stop := l.host.WatchLeaders()
	defer stop()
	t := time.NewTicker(leadershipRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-changes:
			l.check(c.Group)
		case <-t.C:
			for _, g := range l.watched() {
				l.check(g)
			}
		}
	}
}
