package transport

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A heartbeat waits up to HeartbeatCoalesce for company on both ends, and
// any other frame takes waiting heartbeats along at once.
func TestHeartbeatCoalescing(t *testing.T) {
	const linger = time.Second
	slow := func(c *Config) { c.HeartbeatCoalesce = linger; c.RPCTimeout = 10 * time.Second }
	a := newTestManager(t, "a", slow)
	b := newTestManager(t, "b", slow)
	ga, gb := mustGroup(t, a, 1), mustGroup(t, b, 1)
	resp := makeAppendRPCResponse()
	ga.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&resp, nil) })
	go func() {
		for rpc := range ga.Consumer() {
			rpc.Respond(&resp, nil)
		}
	}()
	hb := heartbeatRPC()
	var out raft.AppendEntriesResponse
	// Warm the connection up so the dial is not measured.
	full := makeAppendRPC()
	if err := gb.AppendEntries("a", ga.LocalAddr(), &full, &out); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := gb.AppendEntries("a", ga.LocalAddr(), &hb, &out); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < linger {
		t.Fatalf("a lone heartbeat took %v; it should have waited %v for company", d, linger)
	}

	// With other traffic on the connection, ordinary frames carry the
	// heartbeat out and its reply back long before the linger ends.
	done := make(chan time.Duration, 1)
	start = time.Now()
	go func() {
		var out raft.AppendEntriesResponse
		if err := gb.AppendEntries("a", ga.LocalAddr(), &hb, &out); err != nil {
			t.Error(err)
		}
		done <- time.Since(start)
	}()
	for {
		select {
		case d := <-done:
			if d >= linger*3/4 {
				t.Fatalf("a heartbeat amid other traffic took %v; other frames should have flushed it", d)
			}
			return
		case <-time.After(20 * time.Millisecond):
			if err := gb.AppendEntries("a", ga.LocalAddr(), &full, &out); err != nil {
				t.Fatal(err)
			}
		}
	}
}
