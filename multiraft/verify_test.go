package multiraft_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/leakcheck"
	"github.com/heraldhq/herald/multiraft"
)

// raft never answers a VerifyLeader still queued for its main loop when it
// shuts down. Linearizable reads that keep arriving while the nodes stop
// must not leave a leader check waiting for that answer forever.
func TestStopWithLinearizableReadsInFlightLeavesNoGoroutine(t *testing.T) {
	leakcheck.After(t)
	c := newCluster(t)
	// Whether raft loses a VerifyLeader made as it shuts down is a coin
	// toss inside raft (a select between its shutdown and its queue), so
	// one group would catch a check left waiting only now and then; every
	// group's verifier is a toss of its own.
	const groups, readersPerGroup = 4, 8
	c.bootstrap(groups, 3, "n1", "n2", "n3")

	stop := make(chan struct{})
	var (
		readers sync.WaitGroup
		reads   atomic.Int64
	)
	for g := uint64(1); g <= groups; g++ {
		h := c.nodes[c.waitLeader(g)].h()
		for range readersPerGroup {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_ = h.Read(ctx, g, multiraft.Linearizable, func(multiraft.StateMachine) error { return nil })
					cancel()
					reads.Add(1)
				}
			}()
		}
	}
	eventually.True(t, 10*time.Second, "reads under way", func() bool { return reads.Load() >= 200 })
	for _, n := range c.running() {
		n.stop()
	}
	close(stop)
	readers.Wait()
}
