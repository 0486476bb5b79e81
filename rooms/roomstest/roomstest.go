// Package roomstest is an in-memory room layer for the tests of the
// packages above package rooms (the websocket front, the server API, the
// clients): package fsm's real state machine, one per group on one badger
// store in a temporary directory, behind the methods of rooms.Service, with
// neither raft nor a network. Several nodes may share one Cluster, each
// with its own node id, as the fronts of a real cluster share its groups.
//
// A test can inject what consensus would do to a request: lose the outcome
// of a write (applied or not), have no leader for a while, move every
// group's leadership (which ends every feed), and delay every call.
package roomstest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/rooms"
)

// Options configure a Cluster.
type Options struct {
	// Groups is how many groups the rooms are spread over (default 4).
	Groups uint64
	// Namespaces are the namespace rules every group starts with, as
	// their leaders would bring them from the meta group.
	Namespaces []fsm.Namespace
}

// Cluster is the shared state of the nodes of one in-memory cluster.
type Cluster struct {
	groups uint64
	store  *fsm.Store
	app    *rooms.Application

	mu     sync.Mutex
	fsms   map[uint64]*fsm.FSM  // guarded by mu
	index  map[uint64]uint64    // last applied log index per group; guarded by mu
	feeds  map[*feed]struct{}   // open feeds; guarded by mu
	faults []fault              // the next proposals' faults, in order; guarded by mu
	delay  time.Duration        // guarded by mu
	nodes  map[string]*Node     // guarded by mu
	down   map[string]time.Time // nodes whose groups have no leader until then; guarded by mu
}

// firstIndex is where each group's log starts.
const firstIndex = 10

type fault struct {
	err     error
	applied bool
}

// New starts an in-memory cluster; t's cleanup closes it.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Groups == 0 {
		opts.Groups = 4
	}
	store, err := fsm.OpenStore(fsm.DefaultStoreConfig(filepath.Join(t.TempDir(), "state")))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{groups: opts.Groups, store: store, app: &rooms.Application{Store: store},
		fsms: make(map[uint64]*fsm.FSM), index: make(map[uint64]uint64), feeds: make(map[*feed]struct{}),
		nodes: make(map[string]*Node), down: make(map[string]time.Time)}
	for g := uint64(1); g <= opts.Groups; g++ {
		sm, err := c.app.NewStateMachine(g)
		if err != nil {
			t.Fatal(err)
		}
		c.fsms[g] = sm.(*fsm.FSM)
		// A real group's log holds raft's own entries before the first
		// command, and a room's epoch is the index that created it.
		c.index[g] = firstIndex
	}
	if len(opts.Namespaces) > 0 {
		for g := uint64(1); g <= opts.Groups; g++ {
			cmd := fsm.Command{Op: fsm.OpNamespaces, Room: "", Namespaces: fsm.Namespaces{Revision: 1, Rules: opts.Namespaces}}
			if res, err := c.apply(g, cmd); err != nil || res.Err != nil {
				t.Fatalf("namespaces in group %d: %v %v", g, err, res)
			}
		}
	}
	t.Cleanup(func() {
		c.mu.Lock()
		for f := range c.feeds {
			f.end(fsm.ErrClosed)
		}
		for _, f := range c.fsms {
			_ = f.Close()
		}
		c.mu.Unlock()
		_ = store.Close()
	})
	return c
}

// Node is one node's view of the cluster: what rooms.Service offers the
// front and the server API.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[id]; n != nil {
		return n
	}
	n := &Node{c: c, id: id}
	c.nodes[id] = n
	return n
}

// FailNext makes the next proposal fail with err; with applied, its
// command is applied first, as when a leader commits an entry and the
// reply is lost. Calls queue up, one fault per proposal.
func (c *Cluster) FailNext(err error, applied bool) {
	c.mu.Lock()
	c.faults = append(c.faults, fault{err: err, applied: applied})
	c.mu.Unlock()
}

// NoLeaderFor makes every proposal and read through the node answer
// rooms.ErrUnavailable for d, as while its groups elect.
func (c *Cluster) NoLeaderFor(node string, d time.Duration) {
	c.mu.Lock()
	c.down[node] = time.Now().Add(d)
	c.mu.Unlock()
}

// MoveLeaders ends every open feed, as a move of every group's leadership
// does; the front then opens new ones.
func (c *Cluster) MoveLeaders() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := range c.feeds {
		f.end(fmt.Errorf("%w: the leadership moved", rooms.ErrUnavailable))
	}
}

// SetDelay makes every proposal and read wait d first.
func (c *Cluster) SetDelay(d time.Duration) {
	c.mu.Lock()
	c.delay = d
	c.mu.Unlock()
}

// before applies the delay and the node's outage to one call.
func (c *Cluster) before(ctx context.Context, node string) error {
	c.mu.Lock()
	d, until := c.delay, c.down[node]
	c.mu.Unlock()
	if d > 0 && !wait.Sleep(ctx, d) {
		return ctx.Err()
	}
	if time.Now().Before(until) {
		return fmt.Errorf("%w: no leader (injected)", rooms.ErrUnavailable)
	}
	return ctx.Err()
}

func (c *Cluster) propose(cmd fsm.Command) (*fsm.Result, error) {
	g := meta.GroupForKey(cmd.Room, c.groups)
	c.mu.Lock()
	defer c.mu.Unlock()
	var flt *fault
	if len(c.faults) > 0 {
		flt = &c.faults[0]
		c.faults = c.faults[1:]
	}
	if flt != nil && !flt.applied {
		return nil, flt.err
	}
	res, err := c.applyLocked(g, cmd)
	if flt != nil {
		return nil, flt.err
	}
	return res, err
}

func (c *Cluster) apply(g uint64, cmd fsm.Command) (*fsm.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applyLocked(g, cmd)
}

// applyLocked appends cmd to group g's log and applies it, as a commit on
// every replica would.
func (c *Cluster) applyLocked(g uint64, cmd fsm.Command) (*fsm.Result, error) {
	c.index[g]++
	out := c.fsms[g].Apply(&raft.Log{Index: c.index[g], Term: 1, Type: raft.LogCommand, Data: cmd.Encode(), AppendedAt: time.Now()})
	res, ok := out.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("roomstest: apply returned %T", out)
	}
	return res, nil
}

func (c *Cluster) query(g uint64, q rooms.Query) (rooms.Answer, error) {
	c.mu.Lock()
	f := c.fsms[g]
	c.mu.Unlock()
	b, err := c.app.Query(f, q.Encode())
	if err != nil {
		return rooms.Answer{}, err
	}
	ans, err := rooms.DecodeAnswer(b)
	if err != nil {
		return rooms.Answer{}, err
	}
	return ans, ans.Err
}

// Node is one node of an in-memory cluster.
type Node struct {
	c  *Cluster
	id string
}

// NodeID, NodeEpoch, Group, Ready and MarkClientPublishes are
// rooms.Service's, for an always registered, always ready node.
func (n *Node) NodeID() string            { return n.id }
func (n *Node) NodeEpoch() uint64         { return 1 }
func (n *Node) Group(room string) uint64  { return meta.GroupForKey(room, n.c.groups) }
func (n *Node) Ready() error              { return nil }
func (n *Node) MarkClientPublishes() bool { return true }

func (n *Node) group(room string) uint64       { return n.Group(room) }
func (n *Node) call(ctx context.Context) error { return n.c.before(ctx, n.id) }

// Propose applies cmd at once in its room's group, unless a fault says
// otherwise.
func (n *Node) Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	if err := n.call(ctx); err != nil {
		return nil, err
	}
	return n.c.propose(cmd)
}

// History reads a page of a room's events.
func (n *Node) History(ctx context.Context, room string, fromSeq uint64, limit, maxBytes int, _ bool) (fsm.History, error) {
	if err := n.call(ctx); err != nil {
		return fsm.History{}, err
	}
	ans, err := n.c.query(n.group(room), rooms.Query{Kind: rooms.QueryHistory, Room: room, FromSeq: fromSeq, Limit: limit, MaxBytes: maxBytes})
	if err != nil || ans.History == nil {
		return fsm.History{}, errors.Join(err, errIfNil(ans.History == nil))
	}
	return *ans.History, nil
}

// Members reads a room's members.
func (n *Node) Members(ctx context.Context, room string, _ bool) (fsm.Members, error) {
	if err := n.call(ctx); err != nil {
		return fsm.Members{}, err
	}
	ans, err := n.c.query(n.group(room), rooms.Query{Kind: rooms.QueryMembers, Room: room})
	if err != nil || ans.Members == nil {
		return fsm.Members{}, errors.Join(err, errIfNil(ans.Members == nil))
	}
	return *ans.Members, nil
}

// Room reads a room's info.
func (n *Node) Room(ctx context.Context, room string) (fsm.RoomInfo, error) {
	if err := n.call(ctx); err != nil {
		return fsm.RoomInfo{}, err
	}
	ans, err := n.c.query(n.group(room), rooms.Query{Kind: rooms.QueryRoom, Room: room})
	if err != nil || ans.Room == nil {
		return fsm.RoomInfo{}, errors.Join(err, errIfNil(ans.Room == nil))
	}
	return *ans.Room, nil
}

// Rooms lists the cluster's rooms whose names start with prefix and sort
// after after, in name order.
func (n *Node) Rooms(ctx context.Context, prefix, after string, limit int, _ bool) ([]fsm.RoomInfo, bool, error) {
	if err := n.call(ctx); err != nil {
		return nil, false, err
	}
	var all []fsm.RoomInfo
	more := false
	for g := uint64(1); g <= n.c.groups; g++ {
		ans, err := n.c.query(g, rooms.Query{Kind: rooms.QueryRooms, Room: prefix, After: after, Limit: limit})
		if err != nil {
			return nil, false, err
		}
		all = append(all, ans.Rooms.Rooms...)
		more = more || ans.Rooms.More
	}
	slices.SortFunc(all, func(a, b fsm.RoomInfo) int { return strings.Compare(a.Room, b.Room) })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	return all, more, nil
}

// Nodes lists the nodes made with Cluster.Node, without client URLs.
func (n *Node) Nodes() (string, []rooms.NodeInfo) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	out := make([]rooms.NodeInfo, 0, len(n.c.nodes))
	for id := range n.c.nodes {
		out = append(out, rooms.NodeInfo{ID: id, State: "active"})
	}
	slices.SortFunc(out, func(a, b rooms.NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return "memory", out
}

// GroupEvents follows group g's events from now on, until the cluster's
// leaderships move or it closes.
func (n *Node) GroupEvents(ctx context.Context, g uint64) (rooms.Feed, error) {
	if err := n.call(ctx); err != nil {
		return nil, err
	}
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	f, ok := n.c.fsms[g]
	if !ok {
		return nil, fmt.Errorf("roomstest: no group %d", g)
	}
	sub, _, err := f.Subscribe("", 1024)
	if err != nil {
		return nil, err
	}
	fd := &feed{c: n.c, sub: sub, ended: make(chan struct{})}
	n.c.feeds[fd] = struct{}{}
	return fd, nil
}

func errIfNil(missing bool) error {
	if missing {
		return errors.New("roomstest: the query answered without its value")
	}
	return nil
}

// feed is one group feed; end (under the cluster's mu) ends it with err.
type feed struct {
	c     *Cluster
	sub   *fsm.Subscription
	once  sync.Once
	ended chan struct{}
	err   error // set before ended is closed
}

func (f *feed) end(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.ended)
		delete(f.c.feeds, f)
	})
}

func (f *feed) Recv() (fsm.Event, error) {
	select {
	case ev, ok := <-f.sub.C:
		if !ok {
			if err := f.sub.Err(); err != nil {
				return fsm.Event{}, err
			}
			return fsm.Event{}, fsm.ErrClosed
		}
		return ev, nil
	case <-f.ended:
		return fsm.Event{}, f.err
	}
}

func (f *feed) Close() {
	f.sub.Close()
	f.c.mu.Lock()
	f.end(fsm.ErrClosed)
	f.c.mu.Unlock()
}
