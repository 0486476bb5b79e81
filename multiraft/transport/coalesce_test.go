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
	stop := make(chan struct{})
	defer close(stop)
	go respondAll(ga, &resp, stop)
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

// Heartbeats of the term raft last accepted are answered on the reader;
// others (a new term may be persisted by raft) go through the queue.
func TestHeartbeatInlineOnlyForAcceptedTerm(t *testing.T) {
	_, _, ga, gb := pair(t, 1)
	handled := 0
	ga.SetHeartbeatHandler(func(rpc raft.RPC) {
		handled++
		req := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: req.Term >= 5}, nil)
	})
	hb := heartbeatRPC()
	in := &inboundRPC{c: nil, typ: ftAppendEntries, cmd: &hb, heartbeat: true}
	if ga.answerInline(in, &hb) {
		t.Fatal("answered inline before raft accepted any heartbeat")
	}
	var out raft.AppendEntriesResponse
	hb.Term = 4 // refused by the handler: no term is remembered
	if err := gb.AppendEntries("a", ga.LocalAddr(), &hb, &out); err != nil {
		t.Fatal(err)
	}
	if got := ga.hbTerm.Load(); got != 0 {
		t.Fatalf("remembered term %d of a refused heartbeat", got)
	}
	hb.Term = 5
	if err := gb.AppendEntries("a", ga.LocalAddr(), &hb, &out); err != nil {
		t.Fatal(err)
	}
	if got := ga.hbTerm.Load(); got != 5 {
		t.Fatalf("remembered term %d, want 5", got)
	}
	// Term 5 again goes inline and is answered (over the real connection).
	before := handled
	if err := gb.AppendEntries("a", ga.LocalAddr(), &hb, &out); err != nil || !out.Success {
		t.Fatalf("inline heartbeat: %v %+v", err, out)
	}
	if handled != before+1 {
		t.Fatalf("handler ran %d times for one heartbeat", handled-before)
	}
	next := hb
	next.Term = 6
	if ga.answerInline(&inboundRPC{cmd: &next, heartbeat: true}, &next) {
		t.Fatal("a heartbeat of a new term was answered inline")
	}
}
