package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testnet"
)

// peerBehindProxy starts managers a and b with mods, b serving "echo" and
// a "slow" call answered after slow, and a proxy to b that can freeze; it
// returns a, the proxy, and the address at which a reaches b through it.
func peerBehindProxy(t *testing.T, slow time.Duration, mods ...func(*Config)) (a *Manager, proxy *testnet.Proxy, target raft.ServerAddress) {
	t.Helper()
	a = newTestManager(t, "a", mods...)
	b := newTestManager(t, "b", mods...)
	b.Handle("slow", func(ctx context.Context, _ string, _ uint64, req []byte) ([]byte, error) {
		select {
		case <-time.After(slow):
			return req, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	b.Handle("echo", func(_ context.Context, _ string, _ uint64, req []byte) ([]byte, error) { return req, nil })
	proxy = testnet.NewProxy(t, string(b.Addr()))
	return a, proxy, raft.ServerAddress(proxy.Addr())
}

// TestProbeFailsRequestsToFrozenPeer: a call to a peer that stops moving
// bytes fails as unreachable after about two probe periods, long before the
// RPC timeout, while a slow call to a live peer is left alone.
func TestProbeFailsRequestsToFrozenPeer(t *testing.T) {
	probe := func(c *Config) { c.ProbeAfter = 200 * time.Millisecond; c.RPCTimeout = 10 * time.Second }
	a, proxy, target := peerBehindProxy(t, 1500*time.Millisecond, probe)

	// Slow but alive: the peer answers the probes, the call completes.
	if out, err := a.Call(t.Context(), target, "slow", 0, []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("slow call to a live peer: %q, %v", out, err)
	}

	proxy.Freeze()
	start := time.Now()
	_, err := a.Call(t.Context(), target, "echo", 0, []byte("y"))
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("call to a frozen peer: %v, want ErrUnreachable", err)
	}
	if took > 5*time.Second {
		t.Fatalf("call to a frozen peer failed after %v; the RPC timeout is 10s and probing should take about 0.5s", took)
	}
	t.Logf("call to a frozen peer failed after %v: %v", took.Round(time.Millisecond), err)

	// Once the peer moves again, a new connection works.
	proxy.Thaw()
	eventually.True(t, 5*time.Second, "a call after the peer thawed", func() bool {
		out, err := a.Call(t.Context(), target, "echo", 0, []byte("z"))
		return err == nil && string(out) == "z"
	})
}

// Answers tells a live peer, even one busy with a slow call, from a frozen
// one within its context, without waiting for the probe.
func TestAnswersTellsLiveFromFrozenPeer(t *testing.T) {
	a, proxy, target := peerBehindProxy(t, time.Second)
	answers := func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		return a.Answers(ctx, target)
	}
	if answers() {
		t.Fatal("Answers is true before any connection to the peer exists")
	}
	if _, err := a.Call(t.Context(), target, "echo", 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Call(t.Context(), target, "slow", 0, nil)
		done <- err
	}()
	if !answers() {
		t.Fatal("a live peer busy with a slow call did not answer")
	}
	if err := <-done; err != nil {
		t.Fatalf("slow call: %v", err)
	}
	proxy.Freeze()
	start := time.Now()
	if answers() {
		t.Fatal("a frozen peer answered")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Answers took %v with a 200ms context", took)
	}
	proxy.Thaw()
}
