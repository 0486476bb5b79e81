package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
	"github.com/heraldhq/herald/multiraft/meta"
)

// writer publishes to one room with a unique idempotency key per message,
// retrying a key until it is acknowledged, as a client with exactly-once
// publish does.
type writer struct {
	c     *cluster
	group uint64
	room  string

	mu    sync.Mutex
	acked map[string]uint64 // key -> seq
}

func (w *writer) run(ctx context.Context, max int) {
	for i := 0; i < max && ctx.Err() == nil; i++ {
		key := fmt.Sprintf("k%d", i)
		for ctx.Err() == nil {
			nodes := w.c.running()
			via := nodes[i%len(nodes)]
			seq, err := w.c.writeOnce(via, w.group, w.room, key)
			if err == nil {
				w.mu.Lock()
				w.acked[key] = seq
				w.mu.Unlock()
				break
			}
			if !errors.Is(err, multiraft.ErrUnavailable) && !errors.Is(err, multiraft.ErrUnknownOutcome) && !errors.Is(err, multiraft.ErrClosed) {
				w.c.t.Errorf("publish %s via %s: %v", key, via.id, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// awaitAcks waits until n more messages than now are acknowledged.
func (w *writer) awaitAcks(n int, what string) {
	w.c.t.Helper()
	w.mu.Lock()
	want := len(w.acked) + n
	w.mu.Unlock()
	eventually.True(w.c.t, 20*time.Second, what, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.acked) >= want
	})
}

// startWriter starts a writer on a room of group; stop ends it and waits.
func (c *cluster) startWriter(ctx context.Context, group, groups uint64) (w *writer, stop func()) {
	w = &writer{c: c, group: group, room: roomFor(group, groups), acked: map[string]uint64{}}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.run(wctx, 100_000) }()
	return w, func() { cancel(); <-done }
}

// join starts node id and makes it join the cluster through seed.
func (c *cluster) join(ctx context.Context, id, seed string) *node {
	c.t.Helper()
	n := c.start(id)
	if err := n.h().Join(ctx, []string{c.nodes[seed].addr}); err != nil {
		c.t.Fatalf("join %s: %v", id, err)
	}
	return n
}

// bootstrapWithSpare bootstraps n1-n3 with one group on all three and
// joins n4, which holds no replica yet: where the tests of moves start.
// The context it returns ends after within, or with the test.
func (c *cluster) bootstrapWithSpare(within time.Duration) context.Context {
	c.t.Helper()
	c.bootstrap(1, 3, "n1", "n2", "n3")
	ctx := eventually.Within(c.t, within)
	c.join(ctx, "n4", "n1")
	return ctx
}

// checkMoved checks that the meta group, asked through to, lists three
// replicas of group with to among them and from not, and returns them.
func (c *cluster) checkMoved(ctx context.Context, group uint64, from, to string) []string {
	c.t.Helper()
	st, err := c.nodes[to].h().MetaState(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	r := st.Replicas[group]
	if len(r) != 3 || slices.Contains(r, from) || !slices.Contains(r, to) {
		c.t.Fatalf("replicas of group %d after the move from %s to %s: %v", group, from, to, r)
	}
	return r
}

// waitMetaVoters waits until the meta group's voters, as via learns them
// from its leader, are want.
func (c *cluster) waitMetaVoters(ctx context.Context, via string, want ...string) {
	c.t.Helper()
	slices.Sort(want)
	eventually.Nil(c.t, 20*time.Second, fmt.Sprintf("meta group voters %v", want), func() error {
		st, err := c.nodes[via].h().LeaderStatus(ctx, multiraft.MetaGroup)
		if err != nil {
			return err
		}
		var voters []string
		for _, s := range st.Servers {
			if s.Voter {
				voters = append(voters, s.ID)
			}
		}
		slices.Sort(voters)
		if !slices.Equal(voters, want) {
			return fmt.Errorf("voters %v", voters)
		}
		return nil
	})
}

// check verifies that every acknowledged message is among the items
// written exactly once, at its acknowledged seq, and nothing else is.
func (w *writer) check(items []string) {
	w.c.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]uint64{}
	for i, key := range items {
		seq := uint64(i + 1)
		if prev, dup := seen[key]; dup {
			w.c.t.Errorf("message %s is written twice, at seq %d and %d", key, prev, seq)
		}
		seen[key] = seq
	}
	for key, seq := range w.acked {
		if got, ok := seen[key]; !ok || got != seq {
			w.c.t.Errorf("acknowledged message %s at seq %d: it is at %d (present %v)", key, seq, got, ok)
		}
	}
	if len(w.acked) == 0 {
		w.c.t.Error("no message was acknowledged")
	}
}

func TestMoveReplicaUnderWriteLoad(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(30 * time.Second)
	w, stopWriting := c.startWriter(ctx, 1, 1)

	w.awaitAcks(10, "writes acknowledged before the move")
	from := c.waitLeader(1) // moving the leader's replica also moves the leadership
	if err := c.nodes["n2"].h().MoveReplica(ctx, 1, from, "n4"); err != nil {
		t.Fatalf("move: %v", err)
	}
	w.awaitAcks(10, "writes acknowledged after the move")
	stopWriting()

	c.checkMoved(ctx, 1, from, "n4")
	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(c.nodes[from].h().LocalGroups(), 1) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still runs a replica of group 1 after it moved away", from)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.nodes[from].stop() // its vote no longer counts: the group must not need it
	c.waitConverged(1)
	w.check(c.items(c.nodes["n4"], 1, w.room, multiraft.Linearizable))
	t.Logf("%d messages acknowledged during the move", len(w.acked))
	// Moving again is a no-op: the move is idempotent.
	if err := c.nodes["n4"].h().MoveReplica(ctx, 1, from, "n4"); err != nil {
		t.Fatalf("repeated move: %v", err)
	}
}

// checkDecommissioned checks, in h's view of the meta state, that node is
// gone, that each of the groups has three replicas none of which is node,
// and that no replica change is left recorded.
func checkDecommissioned(ctx context.Context, t *testing.T, h *multiraft.Host, node string, groups uint64) {
	t.Helper()
	st, err := h.MetaState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Nodes[node]; ok {
		t.Errorf("%s is still a cluster node", node)
	}
	for g := uint64(1); g <= groups; g++ {
		if r := st.Replicas[g]; len(r) != 3 || slices.Contains(r, node) {
			t.Errorf("group %d replicas %v", g, r)
		}
		if op := st.Ops[g]; op != nil {
			t.Errorf("group %d still has an operation record: %v", g, op)
		}
	}
}

func TestDecommission(t *testing.T) {
	c := newTwinCluster(t)
	c.bootstrap(4, 3, "n1", "n2", "n3", "n4")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.nodes["n3"].h().Decommission(ctx, "n1"); err != nil {
		t.Fatalf("decommission n1: %v", err)
	}
	checkDecommissioned(ctx, t, c.nodes["n2"].h(), "n1", 4)
	c.nodes["n1"].stop()
	for g := uint64(1); g <= 4; g++ {
		c.waitLeader(g)
		if _, err := c.write(c.nodes["n4"], g, "k", "x"); err != nil {
			t.Errorf("group %d after decommission: %v", g, err)
		}
	}
	if _, err := c.nodes["n4"].h().MetaState(ctx); err != nil {
		t.Errorf("meta group after decommission: %v", err)
	}
	// The meta group was n1-n3; with n1 gone it takes n4 in to keep three
	// voters.
	c.waitMetaVoters(ctx, "n4", "n2", "n3", "n4")
}

func TestRebalanceAfterAddingNode(t *testing.T) {
	c := newTwinCluster(t)
	const groups = 6
	c.bootstrap(groups, 3, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c.join(ctx, "n4", "n2")
	plan, err := c.nodes["n1"].h().PlanRebalance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moves := 0
	for _, m := range plan {
		if m.Kind == meta.MoveReplica {
			moves++
			if m.To != "n4" {
				t.Errorf("plan moves a replica to %s, not to the new node: %v", m.To, m)
			}
		}
	}
	if moves != 4 { // 18 replicas over 4 nodes: n4 gets 4 (or 5)
		t.Fatalf("plan has %d replica moves, want 4: %v", moves, plan)
	}
	if _, err := c.nodes["n1"].h().ApplyPlan(ctx, plan, func(i int, m meta.Move) { t.Logf("done %d: %v", i, m) }); err != nil {
		t.Fatalf("apply plan: %v", err)
	}
	st, err := c.nodes["n1"].h().MetaState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range c.ids() {
		if n := len(st.GroupsOf(id)); n < 4 || n > 5 {
			t.Errorf("%s holds %d replicas after rebalance, want 4 or 5", id, n)
		}
	}
	again, err := c.nodes["n3"].h().PlanRebalance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range again {
		if m.Kind == meta.MoveReplica {
			t.Errorf("a balanced cluster still plans %v", m)
		}
	}
	for g := uint64(1); g <= groups; g++ {
		if _, err := c.write(c.nodes["n4"], g, "k", "x"); err != nil {
			t.Errorf("group %d after rebalance: %v", g, err)
		}
	}
}

func TestNodeLeaseExpiryRemovesEphemeralMembers(t *testing.T) {
	c := newCluster(t)
	c.leaseTTL = time.Second
	c.bootstrap(2, 3, "n1", "n2", "n3")
	n3 := c.nodes["n3"]
	epoch := n3.h().Epoch()
	room := roomFor(2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	join := func(member, node string, epoch uint64) {
		cmd := fsm.Command{Op: fsm.OpJoin, Room: room, Member: member, Ephemeral: true, NodeID: node, NodeEpoch: epoch}
		res, err := c.nodes["n1"].h().Propose(ctx, 2, cmd.Encode())
		if err == nil {
			err = res.(*fsm.Result).Err
		}
		if err != nil {
			t.Fatalf("join %s: %v", member, err)
		}
	}
	join("alice", "n3", epoch)
	join("bob", "n1", c.nodes["n1"].h().Epoch())
	n3.stop()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var names []string
		err := c.nodes["n1"].h().Read(ctx, 2, multiraft.Linearizable, func(sm multiraft.StateMachine) error {
			m, err := sm.(*fsm.FSM).Members(room)
			for _, x := range m.Members {
				names = append(names, x.Name)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(names, []string{"bob"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v 15s after n3 stopped; want alice gone and bob kept", names)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.start("n3")
	e, err := c.nodes["n3"].h().WaitRegistered(ctx)
	if err != nil || e <= epoch {
		t.Fatalf("n3 restarted with epoch %d (%v), want above %d", e, err, epoch)
	}
}

func TestEventStreamToNodeWithoutReplica(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(30 * time.Second)
	n4 := c.nodes["n4"]
	if _, ok := n4.h().LocalStateMachine(1); ok {
		t.Fatal("n4 should hold no replica")
	}
	const key = "k"
	stream, err := n4.h().SubscribeEvents(ctx, 1, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	// The stream is registered on the leader asynchronously: publish until
	// the first event arrives, then check the rest arrive in order.
	const total = 50
	published := 0
	got := make(chan kvtest.Event, total*2)
	go func() {
		for {
			b, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			ev, err := kvtest.DecodeEvent(b)
			if err != nil {
				t.Errorf("decode event: %v", err)
				close(got)
				return
			}
			got <- ev
		}
	}()
	var first kvtest.Event
	for first.Seq == 0 {
		if published == total {
			t.Fatalf("no event arrived for %d messages", total)
		}
		published++
		if _, err := c.write(c.nodes["n2"], 1, key, fmt.Sprint(published)); err != nil {
			t.Fatal(err)
		}
		select {
		case ev, ok := <-got:
			if !ok {
				t.Fatal("stream ended before its first event")
			}
			first = ev
		case <-time.After(100 * time.Millisecond):
		}
	}
	for published < total {
		published++
		if _, err := c.write(c.nodes["n3"], 1, key, fmt.Sprint(published)); err != nil {
			t.Fatal(err)
		}
	}
	want := first.Seq
	for want < total {
		select {
		case ev, ok := <-got:
			if !ok {
				t.Fatalf("stream ended after seq %d", want)
			}
			if ev.Seq != want+1 || ev.Key != key || ev.Item != fmt.Sprint(ev.Seq) {
				t.Fatalf("after seq %d got %+v", want, ev)
			}
			want = ev.Seq
		case <-time.After(5 * time.Second):
			t.Fatalf("no event after seq %d", want)
		}
	}
	// A leadership change ends the stream, so the subscriber re-subscribes
	// to the new leader rather than silently missing events.
	leader := c.waitLeader(1)
	other := "n1"
	if leader == "n1" {
		other = "n2"
	}
	if err := n4.h().TransferLeader(ctx, 1, other); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-got:
		case <-deadline:
			t.Fatal("stream still open after its leader handed over the leadership")
		}
	}
}

func TestMetaGroupGrowsWithJoiningNodes(t *testing.T) {
	c := newTwinCluster(t)
	c.bootstrap(2, 1, "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.join(ctx, "n2", "n1")
	c.join(ctx, "n3", "n1")
	c.waitMetaVoters(ctx, "n2", "n1", "n2", "n3")
	// The founding node can now fail without taking the cluster's state
	// with it.
	c.nodes["n1"].stop()
	st, err := c.nodes["n3"].h().MetaState(ctx)
	if err != nil {
		t.Fatalf("meta state without n1: %v", err)
	}
	if len(st.Nodes) != 3 {
		t.Errorf("meta state lists %d nodes, want 3", len(st.Nodes))
	}
}

// A move cut short at any step is finished by running it again.
func TestInterruptedMoveResumes(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(60 * time.Second)
	w, stopWriting := c.startWriter(ctx, 1, 1)
	from := c.waitLeader(1)
	interrupted := 0
	for budget := 20 * time.Millisecond; ; budget *= 2 {
		mctx, mcancel := context.WithTimeout(ctx, budget)
		err := c.nodes["n4"].h().MoveReplica(mctx, 1, from, "n4")
		mcancel()
		if err == nil {
			break
		}
		interrupted++
		t.Logf("move cut off after %v: %v", budget, err)
		if budget > 30*time.Second {
			t.Fatalf("move never finished: %v", err)
		}
	}
	if interrupted == 0 {
		t.Log("the first attempt finished within 20ms; nothing was interrupted")
	}
	w.awaitAcks(10, "writes acknowledged after the resumed move")
	stopWriting()
	replicas := c.checkMoved(ctx, 1, from, "n4")
	ls, err := c.nodes["n4"].h().LeaderStatus(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range ls.Servers {
		if !s.Voter {
			t.Errorf("non-voter %s left in the group", s.ID)
		}
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	want := slices.Sorted(slices.Values(replicas))
	if !slices.Equal(ids, want) {
		t.Errorf("raft configuration %v, meta group says %v", ids, want)
	}
	c.waitConverged(1)
	w.check(c.items(c.nodes["n4"], 1, w.room, multiraft.Linearizable))
}

// A leader transfer to a node that is not a voter of the group cannot
// happen: it fails at once with a reason instead of retrying until the
// caller gives up.
func TestTransferToNonVoterFailsFast(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(60 * time.Second)
	start := time.Now()
	err := c.nodes["n1"].h().TransferLeader(ctx, 1, "n4")
	if !errors.Is(err, multiraft.ErrNotVoter) || time.Since(start) > 10*time.Second {
		t.Fatalf("transfer to a non-voter: %v after %v, want ErrNotVoter at once", err, time.Since(start))
	}
	// The group leader refuses it too, when asked directly.
	err = c.nodes["n1"].h().GroupAdminForTest(ctx, 1, "transfer", "n4", c.nodes["n4"].addr)
	if !errors.Is(err, multiraft.ErrNotVoter) || time.Since(start) > 10*time.Second {
		t.Fatalf("raw transfer to a non-voter: %v after %v, want ErrNotVoter at once", err, time.Since(start))
	}
}

// waitAgrees waits until group's raft voters are the meta group's replicas.
func (c *cluster) waitAgrees(via *node, group uint64, within time.Duration) []string {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := via.h().MetaState(ctx)
		if err == nil {
			var ls multiraft.GroupStatus
			if ls, err = via.h().LeaderStatus(ctx, group); err == nil {
				if multiraft.Agrees(st.Replicas[group], ls) && st.Ops[group] == nil {
					cancel()
					return st.Replicas[group]
				}
				last = fmt.Sprintf("raft %+v, meta %v, op %v", ls.Servers, st.Replicas[group], st.Ops[group])
			}
		}
		if err != nil {
			last = err.Error()
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("group %d: raft and the meta group still disagree after %v: %s", group, within, last)
	return nil
}

// A group whose raft configuration lost a listed replica, or gained one
// the meta group does not list, is repaired by the meta leader.
func TestRepairReconcilesRaftAndMeta(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(90 * time.Second)
	w, stopWriting := c.startWriter(ctx, 1, 1)
	defer stopWriting()
	h := c.nodes["n2"].h()

	// A listed, live replica taken out of raft is added back.
	out := c.waitLeader(1)
	if out == "n1" {
		if err := h.TransferLeader(ctx, 1, "n2"); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.GroupAdminForTest(ctx, 1, "remove", "n1", ""); err != nil {
		t.Fatal(err)
	}
	if r := c.waitAgrees(c.nodes["n2"], 1, 30*time.Second); len(r) != 3 || !slices.Contains(r, "n1") {
		t.Fatalf("replicas after the repair: %v, want n1 back", r)
	}
	// A non-voter the meta group does not list is taken out of raft.
	if err := h.GroupAdminForTest(ctx, 1, "add_nonvoter", "n4", c.nodes["n4"].addr); err != nil {
		t.Fatal(err)
	}
	if r := c.waitAgrees(c.nodes["n2"], 1, 30*time.Second); slices.Contains(r, "n4") {
		t.Fatalf("replicas after the repair: %v, want n4 gone", r)
	}
	stopWriting()
	c.waitConverged(1)
	w.check(c.items(c.nodes["n1"], 1, w.room, multiraft.Linearizable))
}
