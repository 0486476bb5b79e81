package multiraft_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/multiraft"
)

// A repair deletes the replica's data after taking it out of the running
// ones. The reconcile loop starts every replica the meta group gives the
// node that does not run, and the node is still listed: a round landing
// in that window (every second, or at any meta change) used to start a
// replica on the data being deleted. That replica kept the old applied
// index in memory, so once the log was re-sent from index 1 it skipped
// the entries its lost state held, and ended a voter without them.
func TestRepairIsNotRestartedWhileItsDataIsDropped(t *testing.T) {
	var hooked, startedInWindow atomic.Int32
	// Set before the hosts start and restored after they stop (cleanups
	// run last in, first out), so their goroutines read it race-free.
	t.Cleanup(multiraft.SetDropHookForTest(func(h *multiraft.Host, group uint64) {
		h.ReconcileForTest() // what a reconcile round in the window does
		if _, ok := h.LocalStateMachine(group); ok {
			startedInWindow.Add(1)
		}
		hooked.Add(1)
	}))
	c := newTwinCluster(t)
	c.bootstrap(1, 3, "n1", "n2", "n3")
	leader := c.waitLeader(1)
	const key = "k"
	for i := range 5 {
		if _, err := c.write(c.nodes[leader], 1, key, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(1)
	victim := "n1"
	if leader == victim {
		victim = "n2"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.nodes[leader].h().RepairReplica(ctx, 1, victim); err != nil {
		t.Fatal(err)
	}
	if hooked.Load() != 1 {
		t.Fatalf("the reset hook ran %d times, want 1: the test did not run", hooked.Load())
	}
	if n := startedInWindow.Load(); n != 0 {
		t.Errorf("the reconcile loop started the replica while its data was being deleted")
	}
	c.waitConverged(1)
	if got := c.items(c.nodes[victim], 1, key, multiraft.Stale); len(got) != 5 {
		t.Fatalf("the rebuilt replica holds %d writes, want 5", len(got))
	}
}
