package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/rooms"
)

// roomQuery asks n about a room of group through Host.Query.
func roomQuery(n *node, group uint64, c multiraft.Consistency, q rooms.Query, timeout time.Duration) (rooms.Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b, err := n.h().Query(ctx, group, c, q.Encode())
	if err != nil {
		return rooms.Answer{}, err
	}
	return rooms.DecodeAnswer(b)
}

// outsider returns the running node that holds no replica of group, once
// it knows which nodes do.
func (c *cluster) outsider(group uint64) *node {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.running() {
			st := n.h().Cluster()
			if r := st.Replicas[group]; len(r) > 0 && !slices.Contains(r, n.id) {
				if _, ok := n.h().LocalStateMachine(group); !ok {
					return n
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no running node without a replica of group %d", group)
	return nil
}

func TestQueryFromNodeWithoutReplica(t *testing.T) {
	c := newCluster(t)
	// Two replicas of the one group on three nodes: one node has none, and
	// stopping the leader leaves the group without a quorum.
	c.bootstrap(1, 2, "n1", "n2", "n3")
	out := c.outsider(1)
	room := roomFor(1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	join := fsm.Command{Op: fsm.OpJoin, Room: room, Member: "alice"}
	if _, err := out.h().Propose(ctx, 1, join.Encode()); err != nil {
		t.Fatal(err)
	}

	// Every acknowledged write is in a linearizable answer at once, whichever
	// node took it.
	const total = 15
	for i := 2; i <= total; i++ {
		via := c.running()[i%3]
		if _, err := c.write(via, 1, room, fmt.Sprint(i)); err != nil {
			t.Fatalf("publish %d via %s: %v", i, via.id, err)
		}
		ans, err := roomQuery(out, 1, multiraft.Linearizable, rooms.Query{Kind: rooms.QueryRoom, Room: room}, 10*time.Second)
		if err != nil || ans.Room == nil {
			t.Fatalf("linearizable query on %s after write %d: %+v, %v", out.id, i, ans, err)
		}
		if ans.Room.LastSeq != uint64(i) {
			t.Fatalf("linearizable query on %s after write %d via %s saw last seq %d", out.id, i, via.id, ans.Room.LastSeq)
		}
	}
	ans, err := roomQuery(out, 1, multiraft.Linearizable, rooms.Query{Kind: rooms.QueryHistory, Room: room, FromSeq: 2, Limit: 100}, 10*time.Second)
	if err != nil || ans.History == nil || len(ans.History.Events) != total-1 || string(ans.History.Events[total-2].Data) != fmt.Sprint(total) {
		t.Fatalf("history from %s: %+v, %v", out.id, ans.History, err)
	}
	ans, err = roomQuery(out, 1, multiraft.Linearizable, rooms.Query{Kind: rooms.QueryMembers, Room: room}, 10*time.Second)
	if err != nil || ans.Members == nil || len(ans.Members.Members) != 1 || ans.Members.Members[0].Name != "alice" {
		t.Fatalf("members from %s: %+v, %v", out.id, ans.Members, err)
	}
	// The room's own errors come back as answers, sentinel intact.
	ans, err = roomQuery(out, 1, multiraft.Stale, rooms.Query{Kind: rooms.QueryRoom, Room: "nowhere"}, 10*time.Second)
	if err != nil || !errors.Is(ans.Err, fsm.ErrRoomNotFound) {
		t.Fatalf("query of a missing room: %+v, %v; want an answer with ErrRoomNotFound", ans, err)
	}
	// A malformed request fails the query itself, at once.
	start := time.Now()
	if _, err := out.h().Query(ctx, 1, multiraft.Stale, []byte{1, 99}); err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("malformed query: %v after %v, want an error at once", err, time.Since(start))
	}

	stale := func(n *node) uint64 {
		t.Helper()
		ans, err := roomQuery(n, 1, multiraft.Stale, rooms.Query{Kind: rooms.QueryRoom, Room: room}, 10*time.Second)
		if err != nil || ans.Room == nil {
			t.Fatalf("stale query on %s: %+v, %v", n.id, ans, err)
		}
		return ans.Room.LastSeq
	}
	if seq := stale(out); seq != total {
		// The leader is asked first, and it has applied every
		// acknowledged write.
		t.Errorf("stale query on %s saw last seq %d, want %d", out.id, seq, total)
	}
	// A node with a replica answers from it.
	for _, n := range c.running() {
		if n == out {
			continue
		}
		ans, err := roomQuery(n, 1, multiraft.Linearizable, rooms.Query{Kind: rooms.QueryRoom, Room: room}, 10*time.Second)
		if err != nil || ans.Room == nil || ans.Room.LastSeq != total {
			t.Errorf("linearizable query on replica %s: %+v, %v", n.id, ans.Room, err)
		}
	}

	for _, g := range []uint64{9, multiraft.MetaGroup} {
		if _, err := out.h().Query(ctx, g, multiraft.Stale, nil); !errors.Is(err, multiraft.ErrNoGroup) {
			t.Errorf("query of group %d: %v, want ErrNoGroup", g, err)
		}
	}
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := out.h().Query(cancelled, 1, multiraft.Stale, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("query with a cancelled context: %v", err)
	}

	// Without its leader the group has one replica and no quorum: a stale
	// query still finds that replica, a linearizable one cannot be
	// answered.
	leader := c.waitLeader(1)
	c.nodes[leader].stop()
	if seq := stale(out); seq != total {
		t.Errorf("stale query on %s with leader %s stopped saw last seq %d, want %d", out.id, leader, seq, total)
	}
	_, err = roomQuery(out, 1, multiraft.Linearizable, rooms.Query{Kind: rooms.QueryRoom, Room: room}, 1500*time.Millisecond)
	if !errors.Is(err, multiraft.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("linearizable query without a quorum: %v, want ErrUnavailable and the context's deadline", err)
	}
}

func TestQueryFollowsLeaderChanges(t *testing.T) {
	c := newCluster(t)
	ctx := c.bootstrapWithSpare(60 * time.Second)
	n4 := c.nodes["n4"]
	out := c.outsider(1)
	if out != n4 {
		t.Fatalf("%s holds no replica, want n4", out.id)
	}
	room := roomFor(1, 1)
	lastSeq := func(c multiraft.Consistency) uint64 {
		t.Helper()
		ans, err := roomQuery(n4, 1, c, rooms.Query{Kind: rooms.QueryRoom, Room: room}, 15*time.Second)
		if err != nil || ans.Room == nil {
			t.Fatalf("query on n4: %+v, %v", ans, err)
		}
		return ans.Room.LastSeq
	}
	seq := uint64(0)
	for range 3 {
		for range 3 {
			seq++
			if _, err := c.write(n4, 1, room, fmt.Sprint(seq)); err != nil {
				t.Fatal(err)
			}
			if got := lastSeq(multiraft.Linearizable); got != seq {
				t.Fatalf("linearizable query after write %d saw %d", seq, got)
			}
		}
		// n4 knows the old leader from its last answers; the next query
		// must find the new one.
		leader := c.waitLeader(1)
		next := "n1"
		if leader == next {
			next = "n2"
		}
		if err := n4.h().TransferLeader(ctx, 1, next); err != nil {
			t.Fatalf("transfer to %s: %v", next, err)
		}
		if got := lastSeq(multiraft.Linearizable); got != seq {
			t.Fatalf("linearizable query after the leader moved from %s saw %d, want %d", leader, got, seq)
		}
		if got := lastSeq(multiraft.Stale); got > seq {
			t.Fatalf("stale query saw seq %d of %d written", got, seq)
		}
	}
	old := c.waitLeader(1)
	c.nodes[old].stop()
	seq++
	if _, err := c.write(n4, 1, room, fmt.Sprint(seq)); err != nil {
		t.Fatal(err)
	}
	if got := lastSeq(multiraft.Linearizable); got != seq {
		t.Fatalf("linearizable query after leader %s stopped saw %d, want %d", old, got, seq)
	}
}

// plainApp shows multiraft only the methods every Application has.
type plainApp struct{ multiraft.Application }

func TestQueryNeedsAQuerier(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(1, 1, "n1")
	// n2 runs an application that answers no queries.
	n := &node{id: "n2", dir: filepath.Join(c.dir, "n2"), addr: "127.0.0.1:0"}
	c.nodes[n.id] = n
	store, err := fsm.OpenStore(fsm.DefaultStoreConfig(filepath.Join(n.dir, "state")))
	if err != nil {
		t.Fatal(err)
	}
	h, err := multiraft.Start(multiraft.Config{
		NodeID: n.id, DataDir: filepath.Join(n.dir, "raft"), PeerAddr: n.addr,
		Timing: c.timing, LeaseTTL: c.leaseTTL, ProposeTimeout: 5 * time.Second,
		App:    plainApp{&rooms.Application{Store: store, Logger: logger(t)}},
		Logger: logger(t),
	})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	n.store = store
	n.addr = h.PeerAddr()
	n.hp.Store(h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Join(ctx, []string{c.nodes["n1"].addr}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = h.Query(ctx, 1, multiraft.Stale, rooms.Query{Kind: rooms.QueryRoom, Room: "r"}.Encode())
	if err == nil || !strings.Contains(err.Error(), "not a Querier") || errors.Is(err, multiraft.ErrUnavailable) {
		t.Fatalf("query through an application that answers none: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the refusal took %v", d)
	}
	// The node itself still works: proposals do not need a Querier.
	if _, err := c.write(n, 1, roomFor(1, 1), "x"); err != nil {
		t.Fatal(err)
	}
}
