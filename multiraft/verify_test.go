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
	c.bootstrap(1, 3, "n1", "n2", "n3")
	leader := c.nodes[c.waitLeader(1)]
	h := leader.h()

	stop := make(chan struct{})
	var (
		readers sync.WaitGroup
		reads   atomic.Int64
	)
	for range 8 {
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
				_ = h.Read(ctx, 1, multiraft.Linearizable, func(multiraft.StateMachine) error { return nil })
				cancel()
				reads.Add(1)
			}
		}()
	}
	eventually.True(t, 10*time.Second, "reads under way", func() bool { return reads.Load() >= 50 })
	for _, n := range c.running() {
		n.stop()
	}
	close(stop)
	readers.Wait()
}
