package transport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

func TestGroupTransport_StartStop(t *testing.T) {
	m := newTestManager(t, "a")
	g := mustGroup(t, m, 1)
	if g.LocalAddr() != m.Addr() || m.Addr() == "" {
		t.Fatalf("LocalAddr %q, manager Addr %q", g.LocalAddr(), m.Addr())
	}
	if _, err := m.Group(1); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second Group(1): %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	g2, err := m.Group(1)
	if err != nil {
		t.Fatalf("re-register after Close: %v", err)
	}
	_ = g2
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Group(2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Group after Close: %v", err)
	}
	var out raft.AppendEntriesResponse
	args := makeAppendRPC()
	if err := g2.AppendEntries("x", "127.0.0.1:1", &args, &out); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendEntries after Close: %v", err)
	}
}

func TestNew_Validation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no node id":  {ListenAddr: "127.0.0.1:0"},
		"no address":  {NodeID: "a"},
		"long id":     {NodeID: strings.Repeat("x", 256), ListenAddr: "127.0.0.1:0"},
		"bad timeout": {NodeID: "a", ListenAddr: "127.0.0.1:0", RPCTimeout: -1},
		"bad listen":  {NodeID: "a", ListenAddr: "256.0.0.1:0"},
	} {
		if m, err := New(cfg); err == nil {
			_ = m.Close()
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestGroupTransport_HeartbeatFastPath(t *testing.T) {
	_, _, ga, gb := pair(t, 1)
	args := heartbeatRPC()
	resp := makeAppendRPCResponse()

	invoked := make(chan struct{}, 1)
	ga.SetHeartbeatHandler(func(rpc raft.RPC) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		if !reflect.DeepEqual(req, &args) {
			t.Errorf("command mismatch: %#v %#v", *req, args)
		}
		rpc.Respond(&resp, nil)
		invoked <- struct{}{}
	})

	var out raft.AppendEntriesResponse
	if err := gb.AppendEntries("id1", ga.LocalAddr(), &args, &out); err != nil {
		t.Fatalf("err: %v", err)
	}
	if !reflect.DeepEqual(resp, out) {
		t.Fatalf("response mismatch: %#v %#v", resp, out)
	}
	select {
	case <-invoked:
	default:
		t.Fatal("fast path not used")
	}
	// Nothing may have reached the consumer.
	select {
	case rpc := <-ga.Consumer():
		t.Fatalf("heartbeat delivered to the consumer: %#v", rpc.Command)
	default:
	}
}

func TestGroupTransport_HeartbeatWithoutHandler(t *testing.T) {
	_, _, ga, gb := pair(t, 1)
	args := heartbeatRPC()
	resp := makeAppendRPCResponse()
	go func() {
		select {
		case rpc := <-ga.Consumer():
			rpc.Respond(&resp, nil)
		case <-time.After(2 * time.Second):
			t.Errorf("timeout")
		}
	}()
	var out raft.AppendEntriesResponse
	if err := gb.AppendEntries("id1", ga.LocalAddr(), &args, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(resp, out) {
		t.Fatalf("response mismatch: %#v %#v", resp, out)
	}
}

// serveOne answers n requests on g's consumer with resp, checking each
// against want.
func serveN(t *testing.T, g *GroupTransport, n int, want, resp any) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			select {
			case rpc := <-g.Consumer():
				if !reflect.DeepEqual(rpc.Command, want) {
					t.Errorf("command mismatch:\n got %#v\nwant %#v", rpc.Command, want)
					rpc.Respond(nil, errors.New("mismatch"))
					return
				}
				rpc.Respond(resp, nil)
			case <-time.After(5 * time.Second):
				t.Errorf("timeout waiting for request %d", i)
				return
			}
		}
	}()
	return done
}

// roundTrip has g answer one request, which must equal args, with answer,
// while call sends args to it; call must get want back.
func roundTrip[R any](t *testing.T, g *GroupTransport, args, answer any, want R, call func(out *R) error) {
	t.Helper()
	done := serveN(t, g, 1, args, answer)
	var out R
	if err := call(&out); err != nil {
		t.Fatalf("err: %v", err)
	}
	<-done
	if !reflect.DeepEqual(want, out) {
		t.Fatalf("response mismatch: %#v %#v", want, out)
	}
}

func TestGroupTransport_AppendEntries(t *testing.T) {
	_, _, ga, gb := pair(t, 7)
	args := makeAppendRPC()
	resp := makeAppendRPCResponse()
	roundTrip(t, ga, &args, &resp, resp, func(out *raft.AppendEntriesResponse) error {
		return gb.AppendEntries("id1", ga.LocalAddr(), &args, out)
	})
}

func TestGroupTransport_AppendEntriesRaftError(t *testing.T) {
	_, _, ga, gb := pair(t, 7)
	go func() {
		rpc := <-ga.Consumer()
		rpc.Respond(nil, errors.New("unexpected command"))
	}()
	args := makeAppendRPC()
	var out raft.AppendEntriesResponse
	err := gb.AppendEntries("id1", ga.LocalAddr(), &args, &out)
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "unexpected command" {
		t.Fatalf("want RemoteError(unexpected command), got %v", err)
	}
}

func TestGroupTransport_UnknownGroup(t *testing.T) {
	a := newTestManager(t, "n2")
	b := newTestManager(t, "n1")
	_ = mustGroup(t, a, 1)
	gb := mustGroup(t, b, 17)
	args := makeAppendRPC()
	var out raft.AppendEntriesResponse
	err := gb.AppendEntries("id1", a.Addr(), &args, &out)
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "group 17 is not registered on node n2") {
		t.Fatalf("got %v", err)
	}
}

func TestGroupTransport_AppendEntriesPipeline(t *testing.T) {
	_, _, ga, gb := pair(t, 3)
	args := makeAppendRPC()
	resp := makeAppendRPCResponse()
	done := serveN(t, ga, 10, &args, &resp)

	pipeline, err := gb.AppendEntriesPipeline("id1", ga.LocalAddr())
	if err != nil {
		t.Fatalf("err: %v", err)
	}
	respCh := pipeline.Consumer()
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < 10; i++ {
			out := new(raft.AppendEntriesResponse)
			if _, err := pipeline.AppendEntries(&args, out); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := 0; i < 10; i++ {
		select {
		case ready := <-respCh:
			if err := ready.Error(); err != nil {
				t.Fatalf("future %d: %v", i, err)
			}
			if !reflect.DeepEqual(&resp, ready.Response()) {
				t.Fatalf("response mismatch: %#v %#v", &resp, ready.Response())
			}
			if ready.Request() != &args || ready.Start().IsZero() {
				t.Fatal("future lost its request or start time")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timeout")
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	<-done
	if err := pipeline.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.AppendEntries(&args, new(raft.AppendEntriesResponse)); !errors.Is(err, raft.ErrPipelineShutdown) {
		t.Fatalf("AppendEntries after Close: %v", err)
	}
	_ = pipeline.Close()
}

// TestGroupTransport_PipelineOrder checks futures come back in send order,
// each carrying its own response.
func TestGroupTransport_PipelineOrder(t *testing.T) {
	_, _, ga, gb := pair(t, 3)
	const n = 3 * pipelineMaxInFlight
	go func() {
		for i := 0; i < n; i++ {
			select {
			case rpc := <-ga.Consumer():
				req := rpc.Command.(*raft.AppendEntriesRequest)
				rpc.Respond(&raft.AppendEntriesResponse{LastLog: req.PrevLogEntry, Success: true}, nil)
			case <-time.After(5 * time.Second):
				t.Errorf("timeout")
				return
			}
		}
	}()
	p, err := gb.AppendEntriesPipeline("id1", ga.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	go func() {
		for i := 0; i < n; i++ {
			args := makeAppendRPC()
			args.PrevLogEntry = uint64(i + 1)
			if _, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		select {
		case f := <-p.Consumer():
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
			if f.Response().LastLog != uint64(i+1) || f.Request().PrevLogEntry != uint64(i+1) {
				t.Fatalf("future %d out of order: response %d, request %d", i, f.Response().LastLog, f.Request().PrevLogEntry)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("timeout")
		}
	}
}

// TestGroupTransport_PipelineMaxInFlight checks AppendEntries blocks once
// pipelineMaxInFlight requests are unanswered, and unblocks when one is.
func TestGroupTransport_PipelineMaxInFlight(t *testing.T) {
	_, _, ga, gb := pair(t, 3)
	args := makeAppendRPC()
	resp := makeAppendRPCResponse()
	p, err := gb.AppendEntriesPipeline("id1", ga.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	for i := 0; i < pipelineMaxInFlight; i++ {
		if _, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	errCh := make(chan error, 1)
	go func() {
		_, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse))
		errCh <- err
	}()
	select {
	case err := <-errCh:
		t.Fatalf("AppendEntries did not block with %d in flight (err %v)", pipelineMaxInFlight, err)
	case <-time.After(100 * time.Millisecond):
	}
	rpc := <-ga.Consumer()
	rpc.Respond(&resp, nil)
	select {
	case err := <-errCh:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("AppendEntries did not unblock after a response")
	}
	if f := <-p.Consumer(); f.Error() != nil {
		t.Fatal(f.Error())
	}
}

// TestGroupTransport_PipelineConnectionBreaks mirrors NetworkTransport's
// CloseStreams test: when the connection breaks mid-pipeline, in-flight
// futures fail and a fresh pipeline works again.
func TestGroupTransport_PipelineConnectionBreaks(t *testing.T) {
	a, b, ga, gb := pair(t, 3)
	args := makeAppendRPC()
	resp := makeAppendRPCResponse()
	stop := make(chan struct{})
	defer close(stop)
	go respondAll(ga, &resp, stop)
	for _, breakConn := range []bool{true, false} {
		p, err := gb.AppendEntriesPipeline("id1", ga.LocalAddr())
		if err != nil {
			t.Fatalf("err: %v", err)
		}
		sendErr := make(chan error, 1)
		go func() {
			for i := 0; i < 100; i++ {
				if breakConn && i == 10 {
					// Drop the acceptor's side of the shared connection.
					a.mu.RLock()
					for c := range a.conns {
						go c.nc.Close()
					}
					a.mu.RUnlock()
					time.Sleep(10 * time.Millisecond)
				}
				if _, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}()
		var futureErr error
	OUTER:
		for i := 0; i < 100; i++ {
			select {
			case ready := <-p.Consumer():
				if err := ready.Error(); err != nil {
					futureErr = err
					break OUTER
				}
				if !reflect.DeepEqual(&resp, ready.Response()) {
					t.Fatalf("response mismatch: %#v", ready.Response())
				}
			case err := <-sendErr:
				if err != nil {
					futureErr = err
					break OUTER
				}
				sendErr <- nil
				time.Sleep(time.Millisecond)
			case <-time.After(5 * time.Second):
				t.Fatalf("timeout when breaking conn is %v", breakConn)
			}
		}
		if breakConn && futureErr == nil {
			t.Fatal("expected an error after the connection broke")
		}
		if breakConn && !errors.Is(futureErr, ErrUnreachable) && !errors.Is(futureErr, raft.ErrPipelineShutdown) {
			t.Fatalf("error does not wrap ErrUnreachable: %v", futureErr)
		}
		if !breakConn && futureErr != nil {
			t.Fatalf("unexpected error: %v", futureErr)
		}
		_ = p.Close()
		if breakConn {
			// The next pipeline redials.
			eventually.True(t, 2*time.Second, "the broken connection to be dropped", func() bool {
				out, _ := managerConns(b)
				return out == 0
			})
		}
	}
}

func TestGroupTransport_RequestVote(t *testing.T) {
	for _, transfer := range []bool{false, true} {
		_, _, ga, gb := pair(t, 1)
		args := raft.RequestVoteRequest{
			Term:               20,
			LastLogIndex:       100,
			LastLogTerm:        19,
			RPCHeader:          raft.RPCHeader{Addr: []byte("butters")},
			LeadershipTransfer: transfer,
		}
		resp := raft.RequestVoteResponse{Term: 100, Granted: transfer}
		var seen bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			select {
			case rpc := <-ga.Consumer():
				req := rpc.Command.(*raft.RequestVoteRequest)
				seen = req.LeadershipTransfer
				if !reflect.DeepEqual(req, &args) {
					t.Errorf("command mismatch: %#v %#v", *req, args)
				}
				rpc.Respond(&resp, nil)
			case <-time.After(5 * time.Second):
				t.Errorf("timeout")
			}
		}()
		var out raft.RequestVoteResponse
		if err := gb.RequestVote("id1", ga.LocalAddr(), &args, &out); err != nil {
			t.Fatalf("err: %v", err)
		}
		<-done
		if !reflect.DeepEqual(resp, out) {
			t.Fatalf("response mismatch: %#v %#v", resp, out)
		}
		if seen != transfer {
			t.Fatalf("LeadershipTransfer %v arrived as %v", transfer, seen)
		}
	}
}

func TestGroupTransport_RequestPreVote(t *testing.T) {
	_, _, ga, gb := pair(t, 1)
	args := raft.RequestPreVoteRequest{
		Term:         20,
		LastLogIndex: 100,
		LastLogTerm:  19,
		RPCHeader:    raft.RPCHeader{ID: []byte("id2"), Addr: []byte("butters")},
	}
	resp := raft.RequestPreVoteResponse{Term: 100, Granted: true}
	roundTrip(t, ga, &args, &resp, resp, func(out *raft.RequestPreVoteResponse) error {
		return gb.RequestPreVote("id1", ga.LocalAddr(), &args, out)
	})
}

func TestGroupTransport_TimeoutNow(t *testing.T) {
	_, _, ga, gb := pair(t, 1)
	args := raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("leader"), Addr: []byte("kyle")}}
	resp := raft.TimeoutNowResponse{RPCHeader: raft.RPCHeader{ID: []byte("target")}}
	// The consumer answers with a value, not a pointer: that is accepted too.
	roundTrip(t, ga, &args, resp, resp, func(out *raft.TimeoutNowResponse) error {
		return gb.TimeoutNow("id1", ga.LocalAddr(), &args, out)
	})
}

func TestGroupTransport_InstallSnapshot(t *testing.T) {
	a, b, ga, gb := pair(t, 1)
	body := make([]byte, 5<<20+123)
	_, _ = rand.Read(body)
	args := raft.InstallSnapshotRequest{
		Term:               10,
		LastLogIndex:       100,
		LastLogTerm:        9,
		Peers:              []byte("blah blah"),
		Configuration:      []byte("config"),
		ConfigurationIndex: 50,
		Size:               int64(len(body)),
		RPCHeader:          raft.RPCHeader{Addr: []byte("kyle")},
	}
	resp := raft.InstallSnapshotResponse{Term: 10, Success: true}

	// Keep a heartbeat handler busy on the shared connection meanwhile to
	// show the snapshot does not travel on it.
	ga.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })

	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case rpc := <-ga.Consumer():
			req := rpc.Command.(*raft.InstallSnapshotRequest)
			if !reflect.DeepEqual(req, &args) {
				t.Errorf("command mismatch: %#v %#v", *req, args)
			}
			// A heartbeat on the shared connection while the data is
			// still unread.
			hb := heartbeatRPC()
			if err := gb.AppendEntries("id1", a.Addr(), &hb, new(raft.AppendEntriesResponse)); err != nil {
				t.Errorf("heartbeat during snapshot: %v", err)
			}
			got, err := io.ReadAll(rpc.Reader)
			if err != nil {
				t.Errorf("reading snapshot: %v", err)
			}
			if !bytes.Equal(got, body) {
				t.Errorf("snapshot body mismatch: %d bytes, want %d", len(got), len(body))
			}
			rpc.Respond(&resp, nil)
		case <-time.After(10 * time.Second):
			t.Errorf("timeout")
		}
	}()
	var out raft.InstallSnapshotResponse
	if err := gb.InstallSnapshot("id1", ga.LocalAddr(), &args, &out, bytes.NewReader(body)); err != nil {
		t.Fatalf("err: %v", err)
	}
	<-done
	if !reflect.DeepEqual(resp, out) {
		t.Fatalf("response mismatch: %#v %#v", resp, out)
	}
	// The snapshot connection is gone; only the shared one remains.
	eventually.True(t, 2*time.Second, "snapshot connection to close", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return len(a.rawConn) == 0
	})
	if out, _ := managerConns(b); out != 1 {
		t.Fatalf("%d outbound connections, want 1", out)
	}

	// Short data is reported as such, not sent as a truncated snapshot.
	args.Size = 100
	err := gb.InstallSnapshot("id1", ga.LocalAddr(), &args, &out, bytes.NewReader(body[:10]))
	if err == nil || !strings.Contains(err.Error(), "ended after 10 of 100 bytes") {
		t.Fatalf("short snapshot data: %v", err)
	}
}

func TestGroupTransport_EncodeDecodePeer(t *testing.T) {
	m := newTestManager(t, "a")
	g := mustGroup(t, m, 1)
	local := g.LocalAddr()
	if dec := g.DecodePeer(g.EncodePeer("id1", local)); dec != local {
		t.Fatalf("enc/dec fail: %v %v", dec, local)
	}
}

func TestManager_AdvertiseAddr(t *testing.T) {
	m := newTestManager(t, "a", func(c *Config) { c.AdvertiseAddr = "herald-1.internal:7000" })
	if m.Addr() != "herald-1.internal:7000" {
		t.Fatalf("Addr %q", m.Addr())
	}
}
