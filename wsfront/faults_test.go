package wsfront_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/rooms"
)

// The front's guarantees under what consensus does to a request, injected
// deterministically into the in-memory room layer.

// A keyed publish whose outcome is lost after it committed is retried by
// the front with its key, and the client sees one publish with its seq.
func TestKeyedPublishWithLostOutcomeLandsOnce(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := wstest.Login(t, c.URL(0), "alice")
	c.Rooms().FailNext(rooms.ErrUnknownOutcome, true)
	r := a.MustOK(a.Call("publish", wstest.Obj{"room": "k", "data": 1, "key": "once"}))
	if wstest.Num(r["seq"]) != 1 {
		t.Fatalf("publish: %v", r)
	}
	checkLandedOnce(t, a, "k")
}

// Without a key the front cannot tell a retry from a second publish, so a
// lost outcome reaches the client as unknown_outcome, retryable, and is
// not repeated.
func TestUnkeyedPublishWithLostOutcomeIsUnknown(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := wstest.Login(t, c.URL(0), "alice")
	c.Rooms().FailNext(rooms.ErrUnknownOutcome, true)
	r := a.Call("publish", wstest.Obj{"room": "u", "data": 1})
	if wstest.ErrCode(r) != "unknown_outcome" || r["error"].(wstest.Obj)["retryable"] != true {
		t.Fatalf("publish with a lost outcome: %v", r)
	}
	checkLandedOnce(t, a, "u")
}

// checkLandedOnce fails t unless room's history, as a reads it, holds one
// event.
func checkLandedOnce(t *testing.T, a *wstest.Client, room string) {
	t.Helper()
	h := a.MustOK(a.Call("history", wstest.Obj{"room": room}))
	if evs := h["events"].([]any); len(evs) != 1 {
		t.Fatalf("the publish to %s landed %d times, want once", room, len(evs))
	}
}

// A write that found no leader did not happen: the front retries it within
// the request's time, and the client sees only the success.
func TestPublishWaitsOutAnElection(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := wstest.Login(t, c.URL(0), "alice")
	c.Rooms().NoLeaderFor("n1", 300*time.Millisecond)
	r := a.MustOK(a.Call("publish", wstest.Obj{"room": "e", "data": 1}))
	if wstest.Num(r["seq"]) != 1 {
		t.Fatalf("publish: %v", r)
	}
}

// When every group's leadership moves, the front reopens its feeds and a
// subscriber gets every event once, in order, across the moves.
func TestSubscriptionGapFreeAcrossLeaderMoves(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 2})
	sub := wstest.Login(t, c.URL(1), "bob")
	sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": "moves"}))
	pub := wstest.Login(t, c.URL(0), "alice")
	const n = 30
	for i := range n {
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": "moves", "data": i}))
		if i%5 == 2 {
			c.Rooms().MoveLeaders()
		}
	}
	evs := sub.Events(n, 10*time.Second)
	for i, ev := range evs {
		if wstest.Num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, wstest.Num(ev["seq"]))
		}
	}
	sub.Quiet(200 * time.Millisecond)
}
