package multiraft_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/heraldhq/herald/multiraft"
)

// Nodes are stopped and restarted at random while clients publish with
// idempotency keys through whichever nodes are up. Afterwards every
// acknowledged message must be in its room's history exactly once at the
// seq it was acknowledged with, and all replicas must hold the same state.
func TestRandomRestartsLoseAndDuplicateNothing(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	c := newCluster(t)
	c.bootstrap(2, 3, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w1, stop1 := c.startWriter(ctx, 1, 2)
	w2, stop2 := c.startWriter(ctx, 2, 2)
	for round := range 6 {
		victim := c.ids()[rng.IntN(3)]
		c.nodes[victim].stop()
		down := time.Duration(200+rng.IntN(600)) * time.Millisecond
		t.Logf("round %d: %s down for %v", round, victim, down)
		time.Sleep(down)
		c.start(victim)
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
	}
	stop1()
	stop2()
	for _, g := range []uint64{1, 2} {
		c.waitLeader(g)
		c.waitConverged(g)
	}
	for _, w := range []*writer{w1, w2} {
		items := c.items(c.nodes["n1"], w.group, w.room, multiraft.Linearizable)
		w.check(items)
		t.Logf("group %d: %d messages acknowledged, history to seq %d", w.group, len(w.acked), len(items))
	}
}
