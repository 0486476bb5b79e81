package rooms_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
)

// A feed opened on the leader's node comes from its own state machine and
// ends as soon as the leadership moves, so that the front reopens it from
// the new leader; events committed before the move are still delivered.
func TestLocalFeedEndsWhenLeadershipMoves(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 3, Groups: 1, Replication: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const room = "lobby"
	leader := -1
	var g uint64
	deadline := time.Now().Add(10 * time.Second)
	for leader < 0 && time.Now().Before(deadline) {
		for i := range c.Len() {
			rs := c.Node(i).Rooms()
			g = rs.Group(room)
			if id, _ := c.Node(i).Host().Leader(g); id == rs.NodeID() {
				leader = i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if leader < 0 {
		t.Fatal("group has no leader")
	}
	rs := c.Node(leader).Rooms()
	feed, err := rs.GroupEvents(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()

	if _, err := rs.Propose(ctx, fsm.Command{Op: fsm.OpPublish, Room: room, Member: "tester", Data: []byte(`"before"`)}); err != nil {
		t.Fatal(err)
	}
	ev, err := feed.Recv()
	if err != nil || string(ev.Data) != `"before"` {
		t.Fatalf("first event: %+v, %v", ev, err)
	}

	other := c.Node((leader + 1) % c.Len()).Rooms().NodeID()
	if err := c.Node(leader).Host().TransferLeader(ctx, g, other); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := feed.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if !errors.Is(err, rooms.ErrUnavailable) {
			t.Fatalf("feed ended with %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the feed outlived its node's leadership")
	}

	// A feed opened now on the old leader's node comes from the new one.
	feed2, err := rs.GroupEvents(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer feed2.Close()
	if _, err := rs.Propose(ctx, fsm.Command{Op: fsm.OpPublish, Room: room, Member: "tester", Data: []byte(`"after"`)}); err != nil {
		t.Fatal(err)
	}
	// The new leader may still be applying "before" as its own feed opens
	// (every replica emits on apply); the front drops it by its seq.
	for {
		ev, err := feed2.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Data) == `"after"` {
			if ev.Seq != 2 {
				t.Fatalf("event after the move has seq %d, want 2", ev.Seq)
			}
			break
		}
		if ev.Seq != 1 {
			t.Fatalf("unexpected event %+v", ev)
		}
	}
}

// Commit retries a write that found no leader, backing off from 20 ms and
// doubling, and turns a lost outcome into unknown_outcome rather than a
// failure the client would take as final; a keyed write is retried after
// a lost outcome until its context ends. Each case runs in a synctest
// bubble, where the backoff's timers are exact and take no real time.
func TestCommitRetryRules(t *testing.T) {
	ms := time.Millisecond
	// attempts runs Commit with a proposer answering the first failures-1
	// calls with fail, and returns when each call came, after start.
	attempts := func(t *testing.T, cmd fsm.Command, retryUnknown bool, fail error, failures int) (*fsm.Result, *protocol.Error, []time.Duration, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		var at []time.Duration
		p := proposerFunc(func(context.Context, fsm.Command) (*fsm.Result, error) {
			at = append(at, time.Since(start))
			if failures == 0 || len(at) < failures {
				return nil, fail
			}
			return &fsm.Result{Seq: 7}, nil
		})
		res, perr := rooms.Commit(ctx, p, cmd, retryUnknown)
		return res, perr, at, time.Since(start)
	}
	publish := fsm.Command{Op: fsm.OpPublish, Room: "r"}
	keyed := fsm.Command{Op: fsm.OpPublish, Room: "r", Key: "k"}

	synctest.Test(t, func(t *testing.T) {
		res, perr, at, _ := attempts(t, publish, false, rooms.ErrUnavailable, 3)
		if perr != nil || res.Seq != 7 || !slices.Equal(at, []time.Duration{0, 20 * ms, 60 * ms}) {
			t.Fatalf("no leader twice: got %+v, %v, attempts at %v", res, perr, at)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		_, perr, at, _ := attempts(t, publish, false, rooms.ErrUnknownOutcome, 0)
		if perr == nil || perr.Code != protocol.CodeUnknownOutcome || !perr.Retryable || len(at) != 1 {
			t.Fatalf("unkeyed lost outcome: %v after %d attempts, want unknown_outcome after 1", perr, len(at))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		_, perr, at, took := attempts(t, keyed, true, rooms.ErrUnknownOutcome, 0)
		want := []time.Duration{0, 20 * ms, 60 * ms, 140 * ms, 300 * ms, 620 * ms}
		if perr == nil || perr.Code != protocol.CodeUnknownOutcome || !slices.Equal(at, want) || took != time.Second {
			t.Fatalf("keyed lost outcome: %v, attempts at %v, gave up after %v; want unknown_outcome, attempts at %v, after 1s", perr, at, took, want)
		}
	})
}

type proposerFunc func(context.Context, fsm.Command) (*fsm.Result, error)

func (f proposerFunc) Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	return f(ctx, cmd)
}
