package transport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

// Tests of the guarantee that a heartbeat waiting for a batch is always
// answered or released, within a bound (heartbeat.go).

const (
	waitTestInterval = 50 * time.Millisecond
	waitTestRPC      = 500 * time.Millisecond
	waitTestDial     = time.Second
)

// maxHeartbeatCall is the longest a raft heartbeat may take in these tests:
// the wait for a batch, then (released) a dial and an RPC of its own, plus
// slack for a loaded machine running the race detector.
const maxHeartbeatCall = heartbeatWaitIntervals*waitTestInterval + waitTestDial + waitTestRPC + time.Second

// hbLeader is the node whose groups send heartbeats through batches.
func hbLeader(t testing.TB, groups int) (*Manager, []*GroupTransport) {
	t.Helper()
	m := newTestManager(t, "leader", func(c *Config) {
		c.HeartbeatInterval = waitTestInterval
		c.RPCTimeout = waitTestRPC
		c.DialTimeout = waitTestDial
	})
	var gs []*GroupTransport
	for g := 1; g <= groups; g++ {
		gs = append(gs, mustGroup(t, m, uint64(g)))
	}
	return m, gs
}

// hbFollower starts a follower node on addr ("127.0.0.1:0" for any) whose
// groups answer every heartbeat the way raft's heartbeat handler answers
// one of a term it accepts, after delay() if delay is set.
func hbFollower(t testing.TB, id, addr string, groups int, delay func() time.Duration) *Manager {
	t.Helper()
	var ln net.Listener
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := newTestManager(t, id, func(c *Config) { c.Listener = ln })
	for g := 1; g <= groups; g++ {
		tr := mustGroup(t, m, uint64(g))
		tr.SetHeartbeatHandler(func(rpc raft.RPC) {
			if delay != nil {
				time.Sleep(delay())
			}
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
		})
	}
	return m
}

type beatResult struct {
	took time.Duration
	err  error
}

// beat sends one raft heartbeat from g to target, as raft's heartbeat loop
// does, and reports how long the call took.
func beat(g *GroupTransport, target raft.ServerAddress) beatResult {
	req := heartbeatRPC()
	var resp raft.AppendEntriesResponse
	start := time.Now()
	err := g.AppendEntries("", target, &req, &resp)
	if err == nil && !resp.Success {
		err = fmt.Errorf("heartbeat answered without success: %+v", resp)
	}
	return beatResult{time.Since(start), err}
}

func goBeat(g *GroupTransport, target raft.ServerAddress) <-chan beatResult {
	ch := make(chan beatResult, 1)
	go func() { ch <- beat(g, target) }()
	return ch
}

// awaitBeat fails the test if the heartbeat has not returned within d.
func awaitBeat(t *testing.T, ch <-chan beatResult, d time.Duration, what string) (beatResult, bool) {
	t.Helper()
	select {
	case r := <-ch:
		return r, true
	case <-time.After(d):
		t.Errorf("%s: still waiting after %v", what, d)
		return beatResult{}, false
	}
}

// stallBatches keeps m's heartbeat loop from collecting waiting heartbeats
// (it lists the groups under m.mu) until the returned function is called.
func stallBatches(m *Manager) (resume func()) {
	m.mu.Lock()
	var once sync.Once
	return func() { once.Do(m.mu.Unlock) }
}

// waitingFor reports whether a heartbeat of g to target waits for a batch.
func waitingFor(g *GroupTransport, target raft.ServerAddress) *hbWaiter {
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	return g.waiters[target]
}

// twoWaiting starts two heartbeats of g to target and returns once both
// wait for a batch, the second behind the first; the caller has stalled
// the batches.
func twoWaiting(t *testing.T, g *GroupTransport, target raft.ServerAddress) (first, second <-chan beatResult) {
	t.Helper()
	first = goBeat(g, target)
	eventually.True(t, 5*time.Second, "the first heartbeat to wait for a batch", func() bool { return waitingFor(g, target) != nil })
	w1 := waitingFor(g, target)
	second = goBeat(g, target)
	eventually.True(t, 5*time.Second, "the second heartbeat to wait for a batch", func() bool {
		w := waitingFor(g, target)
		return w != nil && w != w1
	})
	return first, second
}

// establish gets a heartbeat of g to f answered, so f's group accepted the
// term and answers the next ones through batches.
func establish(t *testing.T, g *GroupTransport, f *Manager) {
	t.Helper()
	if r := beat(g, f.Addr()); r.err != nil {
		t.Fatalf("first heartbeat: %v", r.err)
	}
}

// TestHeartbeatTwiceToOneTarget: raft stops a follower's heartbeat loop
// without waiting for its call to return (the leader lost its leadership,
// or the follower left the configuration), so when the next loop for that
// follower starts, two heartbeats of one group to one target can wait at
// once. Both must be answered; the first used to be replaced in the
// waiting set and wait forever, and with it raft's Shutdown.
func TestHeartbeatTwiceToOneTarget(t *testing.T) {
	_, gs := hbLeader(t, 1)
	lm := gs[0].m
	f := hbFollower(t, "f", "127.0.0.1:0", 1, nil)
	establish(t, gs[0], f)

	resume := stallBatches(lm)
	defer resume()
	first, second := twoWaiting(t, gs[0], f.Addr())
	resume()
	for name, ch := range map[string]<-chan beatResult{"first": first, "second": second} {
		if r, ok := awaitBeat(t, ch, maxHeartbeatCall, name+" heartbeat"); ok && r.err != nil {
			t.Errorf("%s heartbeat: %v", name, r.err)
		}
	}
}

// TestHeartbeatGroupStopped: a group whose raft shuts down while
// heartbeats wait must finish stopping. raft closes the transport only
// after every heartbeat call has returned, so a heartbeat waiting behind
// another to the same target used to hold the shutdown forever; and one
// waiting when the transport closes returns ErrClosed.
func TestHeartbeatGroupStopped(t *testing.T) {
	_, gs := hbLeader(t, 2)
	f := hbFollower(t, "f", "127.0.0.1:0", 2, nil)
	for _, g := range gs {
		establish(t, g, f)
	}
	lm := gs[0].m

	// Group 1: raft stops with two heartbeats waiting (as after a
	// leadership change); it waits for both, then closes the transport.
	resume := stallBatches(lm)
	old, cur := twoWaiting(t, gs[0], f.Addr())
	resume()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-old
		<-cur
		_ = gs[0].Close()
	}()
	select {
	case <-stopped:
	case <-time.After(maxHeartbeatCall):
		t.Errorf("group 1 did not stop within %v: a heartbeat call never returned", maxHeartbeatCall)
		_ = gs[0].Close() // let the stuck call go before cleanup
	}

	// Group 2: the transport closes under a waiting heartbeat.
	resume = stallBatches(lm)
	defer resume()
	waiting := goBeat(gs[1], f.Addr())
	eventually.True(t, 5*time.Second, "a heartbeat to wait", func() bool { return waitingFor(gs[1], f.Addr()) != nil })
	closed := make(chan struct{})
	go func() { // Close takes lm.mu (removeGroup), held by the stall
		defer close(closed)
		_ = gs[1].Close()
	}()
	if r, ok := awaitBeat(t, waiting, maxHeartbeatCall, "heartbeat of a closed group"); ok && !errors.Is(r.err, ErrClosed) {
		t.Errorf("heartbeat of a closed group returned %v, want ErrClosed", r.err)
	}
	resume()
	<-closed
	if r := beat(gs[1], f.Addr()); !errors.Is(r.err, ErrClosed) || r.took > time.Second {
		t.Errorf("heartbeat after close: %v after %v, want ErrClosed at once", r.err, r.took)
	}
}

// TestHeartbeatBatchLoopStalled: a heartbeat that no batch collects (here
// the heartbeat loop is held up) gives up after heartbeatWaitIntervals
// intervals with an error, which makes raft back off and retry, instead
// of waiting for the loop.
func TestHeartbeatBatchLoopStalled(t *testing.T) {
	_, gs := hbLeader(t, 1)
	f := hbFollower(t, "f", "127.0.0.1:0", 1, nil)
	establish(t, gs[0], f)
	resume := stallBatches(gs[0].m)
	defer resume()
	ch := goBeat(gs[0], f.Addr())
	stall := 3 * maxHeartbeatCall
	r, ok := awaitBeat(t, ch, maxHeartbeatCall, "heartbeat while no batch goes out")
	if !ok {
		time.Sleep(stall - maxHeartbeatCall)
		resume()
		<-ch
		return
	}
	if !errors.Is(r.err, ErrTimeout) {
		t.Errorf("heartbeat no batch collected returned %v after %v, want ErrTimeout", r.err, r.took)
	}
	if r.took < heartbeatWaitIntervals*waitTestInterval {
		t.Errorf("heartbeat gave up after %v, before its bound %v", r.took, heartbeatWaitIntervals*waitTestInterval)
	}
	if w := waitingFor(gs[0], f.Addr()); w != nil {
		t.Error("a heartbeat that gave up is still in the waiting set")
	}
}

// beatLoops runs, for every group and target, a loop that heartbeats like
// raft's (a pause, then a call) until stop is closed, recording every
// call's duration and how many succeeded. A call in progress when stop
// closes finishes (raft does not interrupt it either); wait returns when
// every call returned or d passed, reporting the calls still running.
type beatLoops struct {
	mu       sync.Mutex
	longest  time.Duration
	calls    int
	ok       atomic.Int64
	running  atomic.Int64
	lastErrs map[string]error
	wg       sync.WaitGroup
}

func (b *beatLoops) call(g *GroupTransport, target raft.ServerAddress) {
	b.running.Add(1)
	defer b.running.Add(-1)
	r := beat(g, target)
	b.mu.Lock()
	b.calls++
	b.longest = max(b.longest, r.took)
	b.lastErrs[fmt.Sprintf("g%d->%s", g.id, target)] = r.err
	b.mu.Unlock()
	if r.err == nil {
		b.ok.Add(1)
	}
}

func (b *beatLoops) start(stop <-chan struct{}, gs []*GroupTransport, targets []raft.ServerAddress, pause func() time.Duration) {
	for _, g := range gs {
		for _, target := range targets {
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				for {
					if !idle(stop, pause()) {
						return
					}
					b.call(g, target)
				}
			}()
		}
	}
}

func (b *beatLoops) wait(t *testing.T, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("%d heartbeat calls still running %v after the loops were stopped", b.running.Load(), d)
	}
}

// idle waits d unless stop closes first, and reports whether d passed.
func idle(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

func newBeatLoops() *beatLoops { return &beatLoops{lastErrs: make(map[string]error)} }

// raftPause is raft's pause between heartbeats to one follower
// (HeartbeatTimeout/10 to /5) for a heartbeat timeout of four intervals.
func raftPause(rng func(int64) int64) func() time.Duration {
	return func() time.Duration {
		lo := int64(4 * waitTestInterval / 10)
		return time.Duration(lo + rng(lo))
	}
}

func lockedRand(seed uint64) func(int64) int64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Int64N(max(n, 1))
	}
}

// TestHeartbeatPeerKilledAndRestarted: heartbeats of several groups to a
// follower that is killed and later restarted on the same address all
// return within the bound, fail while it is down, and go through batches
// again once it is back.
func TestHeartbeatPeerKilledAndRestarted(t *testing.T) {
	const groups = 4
	lm, gs := hbLeader(t, groups)
	f := hbFollower(t, "f", "127.0.0.1:0", groups, nil)
	addr := f.Addr()
	for _, g := range gs {
		establish(t, g, f)
	}
	loops := newBeatLoops()
	stop := make(chan struct{})
	loops.start(stop, gs, []raft.ServerAddress{addr}, raftPause(lockedRand(1)))
	defer func() {
		close(stop)
		loops.wait(t, 2*maxHeartbeatCall)
	}()

	eventually.True(t, 10*time.Second, "heartbeats answered before the kill", func() bool { return loops.ok.Load() >= groups })
	_ = f.Close() // killed: its sockets close, nothing answers
	loops.mu.Lock()
	clear(loops.lastErrs)
	loops.mu.Unlock()
	// A call that began before the kill may still succeed. Once each
	// group's loop has failed a call that ended after the kill, its next
	// call begins after the kill.
	eventually.True(t, 10*time.Second, "every group's heartbeat to fail after the kill", func() bool {
		loops.mu.Lock()
		defer loops.mu.Unlock()
		failed := 0
		for _, err := range loops.lastErrs {
			if err != nil {
				failed++
			}
		}
		return failed == groups
	})
	okDown := loops.ok.Load()
	time.Sleep(5 * waitTestInterval) // heartbeats go on failing for a while
	if n := loops.ok.Load() - okDown; n != 0 {
		t.Errorf("%d heartbeats to a dead follower succeeded", n)
	}
	batched := lm.HeartbeatStats().Batched

	f = hbFollower(t, "f", string(addr), groups, nil)
	eventually.True(t, 10*time.Second, "heartbeats to go through batches again after the restart", func() bool {
		return lm.HeartbeatStats().Batched > batched+groups
	})
	loops.mu.Lock()
	longest, calls := loops.longest, loops.calls
	loops.mu.Unlock()
	t.Logf("%d heartbeat calls, the longest took %v", calls, longest)
	if longest > maxHeartbeatCall {
		t.Errorf("a heartbeat call took %v, more than %v", longest, maxHeartbeatCall)
	}
	_ = f
}

// TestHeartbeatBatcherStress drives the batcher from many groups to two
// followers that flap (their Managers are closed and started again on the
// same address) and answer after random delays, while stale duplicate
// heartbeats (as after leadership changes) and leader checks come and go.
// Every heartbeat call must return within the bound, and none may be left
// running once the loops stop.
func TestHeartbeatBatcherStress(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const (
		groups   = 12
		duration = 3 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := lockedRand(seed)
	delay := func() time.Duration {
		// Mostly prompt, sometimes slower than a batch's own timeout.
		if rng(10) == 0 {
			return time.Duration(rng(int64(3 * waitTestInterval)))
		}
		return time.Duration(rng(int64(2 * time.Millisecond)))
	}
	lm, gs := hbLeader(t, groups)
	var fmu sync.Mutex
	followers := []*Manager{
		hbFollower(t, "f1", "127.0.0.1:0", groups, delay),
		hbFollower(t, "f2", "127.0.0.1:0", groups, delay),
	}
	targets := []raft.ServerAddress{followers[0].Addr(), followers[1].Addr()}

	stop := make(chan struct{})
	loops := newBeatLoops()
	loops.start(stop, gs, targets, raftPause(rng))

	var helpers sync.WaitGroup
	// Flapping followers.
	for i := range followers {
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			for {
				if !idle(stop, time.Duration(200+rng(400))*time.Millisecond) {
					return
				}
				fmu.Lock()
				_ = followers[i].Close()
				fmu.Unlock()
				if !idle(stop, time.Duration(rng(200))*time.Millisecond) {
					return
				}
				f := hbFollower(t, fmt.Sprintf("f%d", i+1), string(targets[i]), groups, delay)
				fmu.Lock()
				followers[i] = f
				fmu.Unlock()
			}
		}()
	}
	// Stale duplicate heartbeats and leader checks.
	helpers.Add(1)
	go func() {
		defer helpers.Done()
		for {
			if !idle(stop, time.Duration(rng(int64(waitTestInterval)))) {
				return
			}
			g := gs[rng(groups)]
			if rng(4) == 0 {
				end := g.BeginLeaderCheck()
				time.Sleep(time.Duration(rng(int64(waitTestInterval))))
				end()
				continue
			}
			loops.wg.Add(1)
			go func() {
				defer loops.wg.Done()
				loops.call(g, targets[rng(2)])
			}()
		}
	}()

	time.Sleep(duration)
	close(stop)
	helpers.Wait()
	loops.wait(t, 2*maxHeartbeatCall)
	loops.mu.Lock()
	defer loops.mu.Unlock()
	st := lm.HeartbeatStats()
	t.Logf("%d heartbeat calls (%d answered), the longest took %v; %d batched in %d batches, %d sent alone",
		loops.calls, loops.ok.Load(), loops.longest, st.Batched, st.Batches, st.Sent)
	if loops.longest > maxHeartbeatCall {
		t.Errorf("a heartbeat call took %v, more than %v", loops.longest, maxHeartbeatCall)
	}
	if st.Batched == 0 || loops.ok.Load() == 0 {
		t.Error("no heartbeat was answered: the test did not exercise the batcher")
	}
}
