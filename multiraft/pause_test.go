package multiraft_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/multiraft"
)

// A leader that goes silent without closing its sockets (SIGSTOP, or a
// network that drops its packets: here its links are cut, which holds
// what is sent over them) holds what other nodes forwarded to it. Once
// the requesting node sees a new leader, a read waiting on the old one is
// sent to the new one at once, and a proposal returns ErrUnknownOutcome at
// once, never ErrUnavailable (it may have reached the old leader's log),
// so a retry with its key commits it exactly once. Without this both waited for the transport's
// liveness probe: at least 2 s of silence after the last bytes received
// (peertest.DefaultRPCTimeout here).
func TestRequestsToAPausedLeaderMoveOnWhenANewLeaderIsSeen(t *testing.T) {
	c := newTwinCluster(t)
	c.bootstrap(1, 3, "n1", "n2", "n3")
	const g = 1
	const key = "k"
	old, followers := c.followers(g)
	via := followers[0]
	changes, stopWatch := via.h().WatchLeaders()
	defer stopWatch()

	// The last reply from the old leader arrives just before it stops, as
	// under load, so its silence starts with the pause.
	if _, err := c.write(via, g, key, "before"); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	c.net.Isolate(old)

	type outcome struct {
		done     time.Time
		err      error
		firstErr error // a proposal's first failed attempt
	}
	pubc, readc := make(chan outcome, 1), make(chan outcome, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() {
		// What wsfront does for a publish with a key: retry while the
		// outcome is unknown or nothing was proposed.
		var o outcome
		for {
			_, err := c.writeOnce(via, g, key, "during")
			if err != nil && o.firstErr == nil {
				o.firstErr = err
			}
			retry := errors.Is(err, multiraft.ErrUnknownOutcome) || errors.Is(err, multiraft.ErrUnavailable)
			if !retry || ctx.Err() != nil {
				o.done, o.err = time.Now(), err
				pubc <- o
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		err := via.h().Read(ctx, g, multiraft.Linearizable, func(multiraft.StateMachine) error { return nil })
		readc <- outcome{done: time.Now(), err: err}
	}()

	elected := newLeaderSeen(ctx, t, changes, g, old)
	t.Logf("%s paused; %s saw a new leader after %v", old, via.id, elected.Sub(paused).Round(time.Millisecond))

	// Generous for a loaded machine; the probe alone would take 2 s from
	// the pause, which is more than a second after a 300 ms election.
	const bound = 500 * time.Millisecond
	for name, ch := range map[string]chan outcome{"publish": pubc, "linearizable read": readc} {
		o := <-ch
		if o.err != nil {
			t.Errorf("%s issued during the pause failed: %v", name, o.err)
			continue
		}
		after := o.done.Sub(elected)
		t.Logf("%s done %v after the new leader was seen (%v after the pause; first error: %v)",
			name, after.Round(time.Millisecond), o.done.Sub(paused).Round(time.Millisecond), o.firstErr)
		if after > bound {
			t.Errorf("%s issued during the pause took %v after the new leader was seen, want at most %v", name, after.Round(time.Millisecond), bound)
		}
		if o.firstErr != nil && !errors.Is(o.firstErr, multiraft.ErrUnknownOutcome) && !errors.Is(o.firstErr, multiraft.ErrUnavailable) {
			t.Errorf("%s: first error %v", name, o.firstErr)
		}
		if name == "publish" && errors.Is(o.firstErr, multiraft.ErrUnavailable) && !errors.Is(o.firstErr, multiraft.ErrUnknownOutcome) {
			t.Errorf("a proposal abandoned after it was sent was reported as not proposed: %v", o.firstErr)
		}
	}

	// The old leader gets what it was sent when it resumes; the key keeps
	// the retried publish at one copy.
	c.net.HealAll()
	c.waitConverged(g)
	for _, n := range c.running() {
		count := 0
		for _, item := range c.items(n, g, key, multiraft.Stale) {
			if item == "during" {
				count++
			}
		}
		if count != 1 {
			t.Errorf("%s holds the publish issued during the pause %d times, want once", n.id, count)
		}
	}
}

// While a group has no leader, a route backs off between tries, up to
// 750 ms. It wakes as soon as a local replica observes a leader instead
// of finishing its sleep, so the end of an election ends the wait. A
// stopped leader shows it best: its closed port refuses every try at once,
// so routes sleep rather than wait on a connection (as a stopped node's
// port on the in-memory network does).
func TestRoutesWaitingForAnElectionWakeWhenItEnds(t *testing.T) {
	c := newTwinCluster(t)
	// Slow elections, so that the backoff reaches its cap before the
	// leader's loss is even noticed.
	c.timing.HeartbeatTimeout, c.timing.ElectionTimeout, c.timing.LeaderLeaseTimeout = 1500*time.Millisecond, 1500*time.Millisecond, 750*time.Millisecond
	c.bootstrap(1, 3, "n1", "n2", "n3")
	const g = 1
	old, followers := c.followers(g)
	via := followers[0]
	changes, stopWatch := via.h().WatchLeaders()
	defer stopWatch()
	c.nodes[old].stop()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Several reads, so that one of them is deep in a sleep when the
	// leader comes: each is with probability above one half.
	const reads = 8
	done := make(chan time.Time, reads)
	errc := make(chan error, reads)
	for range reads {
		go func() {
			err := via.h().Read(ctx, g, multiraft.Linearizable, func(multiraft.StateMachine) error { return nil })
			if err != nil {
				errc <- err
				return
			}
			done <- time.Now()
		}()
	}
	// A read that fails meanwhile fails the test below, once the new
	// leader is seen.
	elected := newLeaderSeen(ctx, t, changes, g, old)
	const bound = 250 * time.Millisecond
	var worst time.Duration
	for range reads {
		select {
		case tm := <-done:
			worst = max(worst, tm.Sub(elected))
		case err := <-errc:
			t.Fatalf("a read waiting for the election failed: %v", err)
		}
	}
	t.Logf("the last of %d reads answered %v after %s saw the new leader", reads, worst.Round(time.Millisecond), via.id)
	if worst > bound {
		t.Errorf("a read waiting for an election answered %v after the leader was seen, want at most %v", worst.Round(time.Millisecond), bound)
	}
}

// newLeaderSeen waits until changes (a WatchLeaders channel) names a
// leader of group other than old, and returns when it did.
func newLeaderSeen(ctx context.Context, t *testing.T, changes <-chan multiraft.LeaderChange, group uint64, old string) time.Time {
	t.Helper()
	for {
		select {
		case ch := <-changes:
			if ch.Group == group && ch.LeaderID != "" && ch.LeaderID != old {
				return time.Now()
			}
		case <-ctx.Done():
			t.Fatalf("no new leader of group %d seen after %s left", group, old)
		}
	}
}
