package peertest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/leakcheck"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
	"github.com/heraldhq/herald/multiraft/peertest"
	"github.com/heraldhq/herald/multiraft/transport"
)

// Every goroutine a Net starts must be stopped by its Close.
func TestMain(m *testing.M) { leakcheck.Main(m) }

const rpcTimeout = 300 * time.Millisecond

// open opens a port for each id on a new Net closed at the test's end.
func open(t *testing.T, ids ...string) (*peertest.Net, map[string]multiraft.Peers) {
	t.Helper()
	n := peertest.New(rpcTimeout)
	t.Cleanup(n.Close)
	ports := map[string]multiraft.Peers{}
	for _, id := range ids {
		p, err := n.Open(multiraft.PeersConfig{NodeID: id})
		if err != nil {
			t.Fatal(err)
		}
		ports[id] = p
	}
	return n, ports
}

func echo(_ context.Context, from string, group uint64, req []byte) ([]byte, error) {
	return fmt.Appendf(nil, "%s/%d/%s", from, group, req), nil
}

// The network's timing is its own (held calls, the RPC timeout, delays):
// in a synctest bubble its timers are exact and take no real time, and
// synctest.Wait says when a call is held rather than a sleep guessing it.
func TestCallsWaitOnCutLinksAndGoOnWhenHealed(t *testing.T) {
	synctest.Test(t, testCallsWaitOnCutLinksAndGoOnWhenHealed)
}

func testCallsWaitOnCutLinksAndGoOnWhenHealed(t *testing.T) {
	n, ports := open(t, "a", "b")
	ports["b"].Handle("echo", echo)
	to := ports["b"].Addr()
	ctx := context.Background()
	got, err := ports["a"].Call(ctx, to, "echo", 7, []byte("hi"))
	if err != nil || string(got) != "a/7/hi" {
		t.Fatalf("call: %q, %v", got, err)
	}

	// One way is enough to silence a call: its reply cannot come back.
	n.Cut("b", "a")
	start := time.Now()
	_, err = ports["a"].Call(ctx, to, "echo", 7, nil)
	if !errors.Is(err, transport.ErrTimeout) || errors.Is(err, transport.ErrNotSent) {
		t.Fatalf("call with the way back cut: %v, want a timeout (the request was sent)", err)
	}
	if took := time.Since(start); took != rpcTimeout {
		t.Fatalf("call with the way back cut failed after %v, want the RPC timeout %v", took, rpcTimeout)
	}

	// A call held on a cut link goes on once the link heals.
	done := make(chan error, 1)
	go func() {
		_, err := ports["a"].Call(ctx, to, "echo", 7, nil)
		done <- err
	}()
	synctest.Wait() // the call is held on the cut link
	select {
	case err := <-done:
		t.Fatalf("a call over a cut link returned at once: %v", err)
	default:
	}
	n.HealAll()
	if err := <-done; err != nil {
		t.Fatalf("call held until the link healed: %v", err)
	}

	// The caller's context ends a held call with its own error.
	n.Partition("a", "b")
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout/3)
	defer cancel()
	if _, err := ports["a"].Call(cctx, to, "echo", 7, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("held call whose context ended: %v", err)
	}
	if ports["a"].Answers(cctx, to) {
		t.Fatal("a partitioned peer answers")
	}
	n.HealAll()
	actx, acancel := context.WithTimeout(ctx, time.Second)
	defer acancel()
	if !ports["a"].Answers(actx, to) {
		t.Fatal("a reachable peer does not answer")
	}

	// A stopped node refuses at once: the request was not sent.
	if err := ports["b"].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ports["a"].Call(ctx, to, "echo", 7, nil); !errors.Is(err, transport.ErrNotSent) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("call to a closed port: %v", err)
	}
}

func TestDelaysApplyEachWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ports := open(t, "a", "b")
		ports["b"].Handle("echo", echo)
		const d = 50 * time.Millisecond
		n.Delay("a", "b", d)
		n.Delay("b", "a", d)
		start := time.Now()
		if _, err := ports["a"].Call(context.Background(), ports["b"].Addr(), "echo", 0, nil); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 2*d {
			t.Fatalf("a call over links delayed %v each way took %v, want %v", d, took, 2*d)
		}
	})
}

func TestJoiningNodesMayOnlyJoin(t *testing.T) {
	n := peertest.New(rpcTimeout)
	t.Cleanup(n.Close)
	member, err := n.Open(multiraft.PeersConfig{NodeID: "m", JoinServices: []string{"join"},
		Authorize: func(id string) (transport.PeerAccess, error) {
			if id == "newcomer" {
				return transport.AccessJoin, nil
			}
			return transport.AccessFull, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	newcomer, err := n.Open(multiraft.PeersConfig{NodeID: "newcomer"})
	if err != nil {
		t.Fatal(err)
	}
	member.Handle("join", echo)
	member.Handle("other", echo)
	ctx := context.Background()
	if _, err := newcomer.Call(ctx, member.Addr(), "join", 0, nil); err != nil {
		t.Fatalf("join service: %v", err)
	}
	if _, err := newcomer.Call(ctx, member.Addr(), "other", 0, nil); !errors.Is(err, transport.ErrNotMember) {
		t.Fatalf("other service from a node that may only join: %v, want ErrNotMember", err)
	}
}

func TestStreamsDeliverInOrderAndEnd(t *testing.T) {
	n, ports := open(t, "a", "b")
	served := make(chan error, 1)
	ports["b"].HandleStream("count", func(ctx context.Context, _ string, _ uint64, req []byte, send func([]byte) error) error {
		for i := range int(req[0]) {
			if err := send([]byte{byte(i)}); err != nil {
				return err
			}
		}
		if req[0] == 3 {
			return nil
		}
		<-ctx.Done() // until the receiver closes the stream
		served <- ctx.Err()
		return ctx.Err()
	})
	ctx := context.Background()
	s, err := ports["a"].OpenStream(ctx, ports["b"].Addr(), "count", 1, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if m, err := s.Recv(); err != nil || m[0] != byte(i) {
			t.Fatalf("message %d: %v, %v", i, m, err)
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}

	// Closing the receiving end ends the handler.
	s, err = ports["a"].OpenStream(ctx, ports["b"].Addr(), "count", 1, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler of a closed stream still runs")
	}
	if _, err := s.Recv(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}

	// A cut link holds the stream's messages.
	n.Cut("b", "a")
	s, err = ports["a"].OpenStream(ctx, ports["b"].Addr(), "count", 1, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a message crossed a cut link (%v)", err)
	case <-time.After(rpcTimeout):
	}
	n.HealAll()
	if err := <-got; err != nil {
		t.Fatalf("first message after healing: %v", err)
	}
	s.Close()
}

// Three raft replicas of one group on the Net elect a leader and commit;
// an isolated leader is replaced, and catches up when it is back.
func TestRaftGroupsFailOverOnAPartition(t *testing.T) {
	n, ports := open(t, "a", "b", "c")
	conf := raft.Configuration{}
	for _, id := range []string{"a", "b", "c"} {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(id), Address: ports[id].Addr()})
	}
	rafts := map[string]*raft.Raft{}
	machines := map[string]*kvtest.Machine{}
	for _, id := range []string{"a", "b", "c"} {
		tr, err := ports[id].Group(1)
		if err != nil {
			t.Fatal(err)
		}
		c := raft.DefaultConfig()
		c.LocalID = raft.ServerID(id)
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		c.Logger = nil
		c.LogOutput = io.Discard
		store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(c, store, store, snaps, tr, conf); err != nil {
			t.Fatal(err)
		}
		sm, _ := (&kvtest.App{}).NewStateMachine(1)
		machines[id] = sm.(*kvtest.Machine)
		r, err := raft.NewRaft(c, sm, store, store, snaps, tr)
		if err != nil {
			t.Fatal(err)
		}
		rafts[id] = r
		t.Cleanup(func() { r.Shutdown().Error() })
	}
	leader := func(not string) string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for id, r := range rafts {
				if id != not && r.State() == raft.Leader {
					return id
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no leader other than %q", not)
		return ""
	}
	apply := func(id, item string) {
		t.Helper()
		if err := rafts[id].Apply(kvtest.Append("k", item), 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %s on %s: %v", item, id, err)
		}
	}
	first := leader("")
	apply(first, "1")
	n.Isolate(first)
	second := leader(first)
	apply(second, "2")
	n.HealAll()
	deadline := time.Now().Add(10 * time.Second)
	for len(machines[first].Items("k")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the old leader %s holds %v after healing, want both items", first, machines[first].Items("k"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
