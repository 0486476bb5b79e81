package wsfront_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
)

// The rules of this test, one option per prefix so each check sees one.
var testRules = []fsm.Namespace{
	{Prefix: "hist:", Config: fsm.RoomConfig{HistoryMaxCount: 3}, Mask: fsm.FieldHistoryMaxCount},
	{Prefix: "backend:", Config: fsm.RoomConfig{NoClientPublish: true}, Mask: fsm.FieldNoClientPublish},
	{Prefix: "mo:", Config: fsm.RoomConfig{MembersOnly: true}, Mask: fsm.FieldMembersOnly},
	{Prefix: "max:", Config: fsm.RoomConfig{MaxMembers: 2}, Mask: fsm.FieldMaxMembers},
	{Prefix: "quiet:", Config: fsm.RoomConfig{TransientPresence: true}, Mask: fsm.FieldTransientPresence},
}

// Namespace rules set on one node reach every data group through its log
// and hold for rooms that existed before them and rooms made after, on
// every node's websocket; they survive a node that missed the change, a
// change of leaders and a crash and restart of every node.
func TestNamespaceRulesHoldOnEveryNode(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Namespaces: []fsm.Namespace{
		{Prefix: "boot:", Config: fsm.RoomConfig{MembersOnly: true}, Mask: fsm.FieldMembersOnly},
	}})
	a := wstest.Login(t, c.URL(0), "alice")
	// Rooms that exist before the rules.
	for i := range 5 {
		a.MustOK(a.Call("publish", wstest.Obj{"room": "hist:old", "data": i}))
	}
	a.MustOK(a.Call("publish", wstest.Obj{"room": "backend:old", "data": "before"}))
	a.MustOK(a.Call("join", wstest.Obj{"room": "quiet:old"}))
	// A room's own setting overrides its namespace's.
	if _, err := c.Node(0).Host().Propose(context.Background(), c.Node(0).Host().GroupForKey("hist:own"),
		(&fsm.Command{Op: fsm.OpRoomConfig, Room: "hist:own", Config: fsm.RoomConfig{HistoryMaxCount: 4},
			ConfigMask: fsm.FieldHistoryMaxCount}).Encode()); err != nil {
		t.Fatal(err)
	}

	var rev uint64
	for _, r := range testRules {
		var err error
		if rev, err = c.Node(1).Rooms().SetNamespace(context.Background(), r); err != nil {
			t.Fatalf("set %q: %v", r.Prefix, err)
		}
	}
	waitRules(t, c, rev)

	// The existing room is cut to its new limit by the groups' next tick.
	for i := range 3 {
		u := wstest.Login(t, c.URL(i), "reader")
		eventually.True(t, 20*time.Second, "hist:old trimmed to 3 events", func() bool {
			h := u.MustOK(u.Call("history", wstest.Obj{"room": "hist:old", "from_seq": 1}))
			return wstest.Num(h["first_seq"]) == 3 && wstest.Num(h["last_seq"]) == 5 && h["truncated"] == true
		})
	}
	// A join made before the rule stays in history; its leave takes no seq.
	a.MustOK(a.Call("leave", wstest.Obj{"room": "quiet:old"}))
	if h := a.MustOK(a.Call("history", wstest.Obj{"room": "quiet:old"})); wstest.Num(h["last_seq"]) != 1 || len(h["events"].([]any)) != 1 {
		t.Fatalf("quiet:old history after the rule: %v", h)
	}
	checkRules(t, c, "first", true)

	// A closing socket undoes only its own join, also when joins take no
	// seq: the join's token names it, and a newer join of the same user
	// (here one with no seq between them) stays.
	w := wstest.Login(t, c.URL(2), "watcher")
	renewed := reconnectAndCloseOld(t, c.Node(0).Front(), c.URL(0), c.URL(1), "carol", "quiet:close")
	if m := w.MustOK(w.Call("members", wstest.Obj{"room": "quiet:close"})); len(m["members"].([]any)) != 1 {
		t.Fatalf("members after the old socket closed: %v", m)
	}
	_ = renewed.Conn.WriteClose(1000, nil)
	eventually.True(t, 10*time.Second, "carol's last socket's leave", func() bool {
		return len(w.MustOK(w.Call("members", wstest.Obj{"room": "quiet:close"}))["members"].([]any)) == 0
	})
	if h := w.MustOK(w.Call("history", wstest.Obj{"room": "quiet:close"})); wstest.Num(h["last_seq"]) != 0 {
		t.Fatalf("quiet:close history: %v", h)
	}

	// New leaders (node 1 hands its groups over, node 3 stops) carry a
	// change the stopped node misses.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Node(0).Host().TransferLeaderships(ctx); err != nil {
		t.Fatalf("transfer leaderships: %v", err)
	}
	c.Stop(2)
	rev, err := c.Node(0).Rooms().SetNamespace(ctx, fsm.Namespace{Prefix: "late:", Config: fsm.RoomConfig{MaxMembers: 1}, Mask: fsm.FieldMaxMembers})
	if err != nil {
		t.Fatal(err)
	}
	c.Restart(2)
	c.WaitReady()
	waitRules(t, c, rev)
	checkRules(t, c, "moved", false)
	for i := range 3 {
		room := fmt.Sprintf("late:%d", i)
		wstest.Login(t, c.URL(i), "x").MustOK(wstest.Login(t, c.URL(i), "x").Call("join", wstest.Obj{"room": room}))
		if r := wstest.Login(t, c.URL(i), "y").Call("join", wstest.Obj{"room": room}); wstest.ErrCode(r) != "limit_exceeded" {
			t.Errorf("node %d: second member of %s: %v", i+1, room, r)
		}
	}

	// Every node crashes and comes back, one after the other: each holds
	// the rules in its stored state and log.
	for i := range 3 {
		c.Crash(i)
		c.Restart(i)
		c.WaitReady()
	}
	waitRules(t, c, rev)
	checkRules(t, c, "restarted", false)
}

// checkRules checks every rule through every node's websocket, on rooms
// new to this call (and, the first time, rooms made before the rules).
func checkRules(t *testing.T, c *testcluster.Cluster, tag string, first bool) {
	t.Helper()
	for i := range 3 {
		room := func(prefix string) string { return fmt.Sprintf("%s%s-%d", prefix, tag, i) }
		u := wstest.Login(t, c.URL(i), "u-"+tag)

		// Bootstrap rule: members only.
		if r := u.Call("publish", wstest.Obj{"room": room("boot:"), "data": 1}); wstest.ErrCode(r) != "forbidden" {
			t.Errorf("node %d: publish by a non-member to %s: %v", i+1, room("boot:"), r)
		}

		// Backend-only rooms: sockets are refused, the backend is not.
		for _, rm := range []string{"backend:old", room("backend:")} {
			if r := u.Call("publish", wstest.Obj{"room": rm, "data": 1}); wstest.ErrCode(r) != "forbidden" {
				t.Errorf("node %d: socket publish to %s: %v", i+1, rm, r)
			}
			backendPublish(t, c.Node(i), rm)
		}

		// Members only.
		if r := u.Call("publish", wstest.Obj{"room": room("mo:"), "data": 1}); wstest.ErrCode(r) != "forbidden" {
			t.Errorf("node %d: publish by a non-member to %s: %v", i+1, room("mo:"), r)
		}
		u.MustOK(u.Call("join", wstest.Obj{"room": room("mo:")}))
		u.MustOK(u.Call("publish", wstest.Obj{"room": room("mo:"), "data": 1}))

		// Max members: two.
		u.MustOK(u.Call("join", wstest.Obj{"room": room("max:")}))
		wstest.Login(t, c.URL(i), "v").MustOK(wstest.Login(t, c.URL(i), "v").Call("join", wstest.Obj{"room": room("max:")}))
		if r := wstest.Login(t, c.URL(i), "w").Call("join", wstest.Obj{"room": room("max:")}); wstest.ErrCode(r) != "limit_exceeded" {
			t.Errorf("node %d: third member of %s: %v", i+1, room("max:"), r)
		}
		u.MustOK(u.Call("join", wstest.Obj{"room": room("max:")})) // a member joining again is not one more

		// History count, and a room's own setting over its rule's.
		for n := range 5 {
			u.MustOK(u.Call("publish", wstest.Obj{"room": room("hist:"), "data": n}))
		}
		if h := u.MustOK(u.Call("history", wstest.Obj{"room": room("hist:"), "from_seq": 1})); wstest.Num(h["first_seq"]) != 3 ||
			len(h["events"].([]any)) != 3 || h["truncated"] != true {
			t.Errorf("node %d: history of %s: %v", i+1, room("hist:"), h)
		}
		if first {
			for n := range 6 {
				u.MustOK(u.Call("publish", wstest.Obj{"room": "hist:own", "data": n}))
			}
			if h := u.MustOK(u.Call("history", wstest.Obj{"room": "hist:own"})); len(h["events"].([]any)) != 4 {
				t.Errorf("node %d: hist:own keeps its own limit of 4: %v", i+1, h)
			}
		}

		// Joins and leaves reach live subscribers but not the history.
		sub := wstest.Login(t, c.URL((i+1)%3), "watcher")
		sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": room("quiet:")}))
		u.MustOK(u.Call("join", wstest.Obj{"room": room("quiet:"), "meta": "hi"}))
		u.MustOK(u.Call("publish", wstest.Obj{"room": room("quiet:"), "data": "m"}))
		u.MustOK(u.Call("leave", wstest.Obj{"room": room("quiet:")}))
		want := []struct {
			ev, typ string
			seq     uint64
		}{{"presence", "join", 0}, {"event", "message", 1}, {"presence", "leave", 1}}
		for _, w := range want {
			f, err := sub.Next(10 * time.Second)
			if err != nil {
				t.Fatalf("node %d: waiting for %s %s: %v", i+1, w.ev, w.typ, err)
			}
			seq := wstest.Num(f["seq"])
			if w.ev == "presence" {
				seq = wstest.Num(f["after_seq"])
			}
			if f["ev"] != w.ev || f["type"] != w.typ || seq != w.seq {
				t.Errorf("node %d: got %v, want %s %s at %d", i+1, f, w.ev, w.typ, w.seq)
			}
		}
		h := u.MustOK(u.Call("history", wstest.Obj{"room": room("quiet:")}))
		if evs := h["events"].([]any); wstest.Num(h["last_seq"]) != 1 || len(evs) != 1 || evs[0].(map[string]any)["type"] != "message" {
			t.Errorf("node %d: history of %s holds presence: %v", i+1, room("quiet:"), h)
		}
	}
}

func backendPublish(t *testing.T, n *herald.Node, room string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Host().Propose(ctx, n.Host().GroupForKey(room),
		(&fsm.Command{Op: fsm.OpPublish, Room: room, Member: "backend", Data: []byte(`"from the server"`)}).Encode())
	if err != nil {
		t.Fatalf("backend publish to %s: %v", room, err)
	}
	if res := out.(*fsm.Result); res.Err != nil {
		t.Errorf("backend publish to %s: %v", room, res.Err)
	}
}

// waitRules waits until every replica of every data group on the running
// nodes has applied the rules of revision rev.
func waitRules(t *testing.T, c *testcluster.Cluster, rev uint64) {
	t.Helper()
	c.WaitNamespaces(rev)
}

// A cluster founded by a release before namespaces may still have replicas
// that cannot read a socket publish's mark: nodes mark only once the
// cluster records that it uses the new room options.
func TestClientPublishesMarkedOnlyOnceRoomOptionsAreOn(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{NoAppSettings: true})
	n := c.Node(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Set as an earlier admin could not, straight through the log.
	if _, err := n.Host().Propose(ctx, n.Host().GroupForKey("feed"), (&fsm.Command{Op: fsm.OpRoomConfig, Room: "feed",
		Config: fsm.RoomConfig{NoClientPublish: true}, ConfigMask: fsm.FieldNoClientPublish}).Encode()); err != nil {
		t.Fatal(err)
	}
	u := wstest.Login(t, c.URL(1), "alice")
	u.MustOK(u.Call("publish", wstest.Obj{"room": "feed", "data": "unmarked"}))
	if err := n.Rooms().EnableRoomOptions(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "socket publishes refused", func() bool {
		return wstest.ErrCode(u.Call("publish", wstest.Obj{"room": "feed", "data": "marked"})) == "forbidden"
	})
}
