package transport

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

// TestIsolation_NoHeadOfLineBlocking shares one connection between two
// groups. Group 1's raft never reads its consumer; group 2 must still
// complete its AppendEntries and group 1's heartbeats must still be answered
// through the fast path.
func TestIsolation_NoHeadOfLineBlocking(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	a1, a2 := mustGroup(t, a, 1), mustGroup(t, a, 2)
	b1, b2 := mustGroup(t, b, 1), mustGroup(t, b, 2)
	a1.SetHeartbeatHandler(func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 10, Success: true}, nil)
	})
	// a1's consumer is never read.

	stop := make(chan struct{})
	defer close(stop)
	go serveAll(a2, stop)

	// Flood the stuck group with more requests than its queue holds.
	const flood = groupQueueLen + 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	var queueFull, timedOut int
	for i := 0; i < flood; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := makeAppendRPC()
			err := b1.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				t.Errorf("stuck group answered an AppendEntries")
			case strings.Contains(err.Error(), "inbound queue is full"):
				queueFull++
			case errors.Is(err, ErrTimeout) || strings.Contains(err.Error(), "did not answer"):
				timedOut++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}

	start := time.Now()
	for i := 0; i < 100; i++ {
		args := makeAppendRPC()
		args.PrevLogEntry = uint64(i)
		var out raft.AppendEntriesResponse
		if err := b2.AppendEntries("a", a.Addr(), &args, &out); err != nil {
			t.Fatalf("group 2 AppendEntries %d: %v", i, err)
		}
		if want := (raft.AppendEntriesResponse{Term: 1, LastLog: 1, Success: true}); !reflect.DeepEqual(out, want) {
			t.Fatalf("group 2 response %#v, want serveAll's %#v", out, want)
		}
	}
	for i := 0; i < 20; i++ {
		hb := heartbeatRPC()
		var out raft.AppendEntriesResponse
		if err := b1.AppendEntries("a", a.Addr(), &hb, &out); err != nil {
			t.Fatalf("group 1 heartbeat %d: %v", i, err)
		}
		if !out.Success {
			t.Fatalf("heartbeat response %#v", out)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("group 2 and heartbeats took %v; blocked behind group 1", d)
	}
	if out, _ := managerConns(b); out != 1 {
		t.Fatalf("%d outbound connections from b, want 1 shared by both groups", out)
	}
	wg.Wait()
	if queueFull == 0 {
		t.Fatalf("no request was refused with a full queue (timed out: %d)", timedOut)
	}
	t.Logf("stuck group: %d refused (queue full), %d timed out", queueFull, timedOut)
}

// TestGroupDetach closes one group's transport on each side in turn: its
// pending calls fail promptly, and the other group keeps working.
func TestGroupDetach(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	a1, a2 := mustGroup(t, a, 1), mustGroup(t, a, 2)
	b1, b2 := mustGroup(t, b, 1), mustGroup(t, b, 2)
	stop := make(chan struct{})
	defer close(stop)
	go serveAll(a2, stop)
	group2Works := func() {
		t.Helper()
		args := makeAppendRPC()
		if err := b2.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatalf("group 2: %v", err)
		}
	}
	group2Works()

	// Caller side: b1 has a call pending on a1, whose raft is stuck.
	// pending returns once the call is sent and waits for its answer: a
	// call made after the detach would fail without ever being pending.
	// Its arrival at a, which the receiving-side check below needs, is
	// not observable from outside; the pause gives it time.
	pending := func(g *GroupTransport) <-chan error {
		ch := make(chan error, 1)
		before := pendingCalls(b)
		go func() {
			args := makeAppendRPC()
			ch <- g.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse))
		}()
		eventually.True(t, 5*time.Second, "the call to be pending", func() bool { return pendingCalls(b) > before })
		time.Sleep(100 * time.Millisecond)
		return ch
	}
	ch := pending(b1)
	pipe, err := b1.AppendEntriesPipeline("a", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	args := makeAppendRPC()
	if _, err := pipe.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call after detach: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("pending call not failed by detach")
	}
	if _, err := pipe.AppendEntries(&args, new(raft.AppendEntriesResponse)); err == nil {
		t.Fatal("pipeline of a detached group still accepts requests")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("detach took %v", d)
	}
	group2Works()

	// Receiving side: a queued request for a1 gets an error reply when a1
	// detaches, and later requests hear the group is gone.
	b1, err = b.Group(1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b1.Close() }()
	ch = pending(b1)
	if err := a1.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		var re *RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Message, "closed") {
			t.Fatalf("queued call after remote detach: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("queued call not answered when the remote group detached")
	}
	err = b1.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse))
	if err == nil || !strings.Contains(err.Error(), "group 1 is not registered on node a") {
		t.Fatalf("call to detached group: %v", err)
	}
	group2Works()
}
