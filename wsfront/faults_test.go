package wsfront_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/rooms"
)

// The front's guarantees under what consensus does to a request, injected
// deterministically into the in-memory room layer.

// A keyed publish whose outcome is lost after it committed is retried by
// the front with its key, and the client sees one publish with its seq.
func TestKeyedPublishWithLostOutcomeLandsOnce(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := login(t, c.URL(0), "alice")
	c.Rooms().FailNext(rooms.ErrUnknownOutcome, true)
	r := a.mustOK(a.call("publish", obj{"room": "k", "data": 1, "key": "once"}))
	if num(r["seq"]) != 1 {
		t.Fatalf("publish: %v", r)
	}
	h := a.mustOK(a.call("history", obj{"room": "k"}))
	if evs := h["events"].([]any); len(evs) != 1 {
		t.Fatalf("the publish landed %d times", len(evs))
	}
}

// Without a key the front cannot tell a retry from a second publish, so a
// lost outcome reaches the client as unknown_outcome, retryable, and is
// not repeated.
func TestUnkeyedPublishWithLostOutcomeIsUnknown(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := login(t, c.URL(0), "alice")
	c.Rooms().FailNext(rooms.ErrUnknownOutcome, true)
	r := a.call("publish", obj{"room": "u", "data": 1})
	if errCode(r) != "unknown_outcome" || r["error"].(obj)["retryable"] != true {
		t.Fatalf("publish with a lost outcome: %v", r)
	}
	h := a.mustOK(a.call("history", obj{"room": "u"}))
	if evs := h["events"].([]any); len(evs) != 1 {
		t.Fatalf("the publish landed %d times, want once (not repeated)", len(evs))
	}
}

// A write that found no leader did not happen: the front retries it within
// the request's time, and the client sees only the success.
func TestPublishWaitsOutAnElection(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	a := login(t, c.URL(0), "alice")
	c.Rooms().NoLeaderFor("n1", 300*time.Millisecond)
	r := a.mustOK(a.call("publish", obj{"room": "e", "data": 1}))
	if num(r["seq"]) != 1 {
		t.Fatalf("publish: %v", r)
	}
}

// When every group's leadership moves, the front reopens its feeds and a
// subscriber gets every event once, in order, across the moves.
func TestSubscriptionGapFreeAcrossLeaderMoves(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 2})
	sub := login(t, c.URL(1), "bob")
	sub.mustOK(sub.call("subscribe", obj{"room": "moves"}))
	pub := login(t, c.URL(0), "alice")
	const n = 30
	for i := range n {
		pub.mustOK(pub.call("publish", obj{"room": "moves", "data": i}))
		if i%5 == 2 {
			c.Rooms().MoveLeaders()
		}
	}
	evs := sub.events(n, 10*time.Second)
	for i, ev := range evs {
		if num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, num(ev["seq"]))
		}
	}
	sub.quiet(200 * time.Millisecond)
}
