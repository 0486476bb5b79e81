package multiraft_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
)

// freezeNet puts a TCP proxy in front of every node's peer port and can
// freeze a node as SIGSTOP would: the connections it dialed and those
// dialed to it stay open but carry nothing, so no peer sees an error, only
// silence. A connection's dialer is read from the peer transport's
// plaintext hello (magic, version, kind, id length, id).
type freezeNet struct {
	t    *testing.T
	mu   sync.Mutex
	cond *sync.Cond
	// frozen nodes; closed ends every wait.
	frozen map[string]bool
	closed bool
	lns    []net.Listener
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezeNet(t *testing.T) *freezeNet {
	fn := &freezeNet{t: t, frozen: map[string]bool{}}
	fn.cond = sync.NewCond(&fn.mu)
	t.Cleanup(fn.close)
	return fn
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// front is a cluster.front: a proxy for node id's peer port at bound.
func (fn *freezeNet) front(id, bound string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fn.t.Fatal(err)
	}
	fn.mu.Lock()
	fn.lns = append(fn.lns, ln)
	fn.mu.Unlock()
	fn.wg.Add(1)
	go func() {
		defer fn.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			fn.wg.Add(1)
			go func() {
				defer fn.wg.Done()
				fn.serve(in, id, bound)
			}()
		}
	}()
	return ln.Addr().String()
}

func (fn *freezeNet) serve(in net.Conn, acceptor, bound string) {
	if !fn.track(in) {
		return
	}
	_ = in.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, 7)
	if _, err := io.ReadFull(in, head); err != nil || string(head[:4]) != "HRLD" {
		_ = in.Close()
		return
	}
	id := make([]byte, head[6])
	if _, err := io.ReadFull(in, id); err != nil {
		_ = in.Close()
		return
	}
	_ = in.SetReadDeadline(time.Time{})
	out, err := net.DialTimeout("tcp", bound, 5*time.Second)
	if err != nil || !fn.track(out) {
		_ = in.Close()
		return
	}
	dialer := string(id)
	if _, err := out.Write(append(head, id...)); err != nil {
		_ = in.Close()
		_ = out.Close()
		return
	}
	fn.wg.Add(1)
	go func() {
		defer fn.wg.Done()
		fn.pipe(out, in, dialer, acceptor)
	}()
	fn.pipe(in, out, dialer, acceptor)
}

// track records c for closing; false when the net is already closed.
func (fn *freezeNet) track(c net.Conn) bool {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if fn.closed {
		_ = c.Close()
		return false
	}
	fn.conns = append(fn.conns, c)
	return true
}

// pipe copies from one end to the other, holding every chunk while either
// node of the connection is frozen.
func (fn *freezeNet) pipe(from, to net.Conn, a, b string) {
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			fn.mu.Lock()
			for !fn.closed && (fn.frozen[a] || fn.frozen[b]) {
				fn.cond.Wait()
			}
			closed := fn.closed
			fn.mu.Unlock()
			if closed {
				return
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (fn *freezeNet) freeze(id string, on bool) {
	fn.mu.Lock()
	fn.frozen[id] = on
	fn.cond.Broadcast()
	fn.mu.Unlock()
}

func (fn *freezeNet) close() {
	fn.mu.Lock()
	fn.closed = true
	fn.cond.Broadcast()
	for _, ln := range fn.lns {
		_ = ln.Close()
	}
	for _, c := range fn.conns {
		_ = c.Close()
	}
	fn.mu.Unlock()
	fn.wg.Wait()
}

// A leader that goes silent without closing its sockets (SIGSTOP) holds
// what other nodes forwarded to it. Once the requesting node sees a new
// leader, a read waiting on the old one is sent to the new one at once,
// and a proposal returns ErrUnknownOutcome at once, never ErrUnavailable
// (it may have reached the old leader's log), so a retry with its key
// commits it exactly once. Without this both waited for the transport's
// liveness probe: at least 2 s of silence after the last bytes received.
func TestRequestsToAPausedLeaderMoveOnWhenANewLeaderIsSeen(t *testing.T) {
	c := newCluster(t)
	fnet := newFreezeNet(t)
	c.front = fnet.front
	c.bootstrap(1, 3, "n1", "n2", "n3")
	const g = 1
	room := roomFor(g, 1)
	old := c.waitLeader(g)
	var via *node
	for _, n := range c.running() {
		if n.id != old {
			via = n
			break
		}
	}
	changes, stopWatch := via.h().WatchLeaders()
	defer stopWatch()

	// The last reply from the old leader arrives just before it stops, as
	// under load, so its silence starts with the pause.
	if _, err := c.publish(via, g, room, "before", "before"); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	fnet.freeze(old, true)

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
			_, err := c.publish(via, g, room, "during", "during")
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

	var elected time.Time
	for elected.IsZero() {
		select {
		case ch := <-changes:
			if ch.Group == g && ch.LeaderID != "" && ch.LeaderID != old {
				elected = time.Now()
			}
		case <-ctx.Done():
			t.Fatalf("%s saw no new leader of group %d after %s paused", via.id, g, old)
		}
	}
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
	fnet.freeze(old, false)
	c.waitConverged(g)
	for _, n := range c.running() {
		count := 0
		for _, ev := range history(t, n, g, room, multiraft.Stale).Events {
			if ev.Type == fsm.EventMessage && string(ev.Data) == "during" {
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
// so routes sleep rather than wait on a connection.
func TestRoutesWaitingForAnElectionWakeWhenItEnds(t *testing.T) {
	c := newCluster(t)
	// Slow elections, so that the backoff reaches its cap before the
	// leader's loss is even noticed.
	c.timing.HeartbeatTimeout, c.timing.ElectionTimeout, c.timing.LeaderLeaseTimeout = 1500*time.Millisecond, 1500*time.Millisecond, 750*time.Millisecond
	c.bootstrap(1, 3, "n1", "n2", "n3")
	const g = 1
	old := c.waitLeader(g)
	var via *node
	for _, n := range c.running() {
		if n.id != old {
			via = n
			break
		}
	}
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
	var elected time.Time
	for elected.IsZero() {
		select {
		case ch := <-changes:
			if ch.Group == g && ch.LeaderID != "" && ch.LeaderID != old {
				elected = time.Now()
			}
		case err := <-errc:
			t.Fatalf("a read waiting for the election failed: %v", err)
		case <-ctx.Done():
			t.Fatalf("%s saw no new leader of group %d after %s stopped", via.id, g, old)
		}
	}
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
