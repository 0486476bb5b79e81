package peertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/transport"
)

// group is one group's raft transport on a Port.
type group struct {
	port      *Port
	id        uint64
	consumer  chan raft.RPC
	heartbeat atomic.Pointer[func(raft.RPC)]
	// ctx ends with Close or the port's; sends and pipelines stop then.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ multiraft.GroupTransport = (*group)(nil)

// pipelineDepth is how many appends a pipeline holds before AppendEntries
// blocks, as the TCP transport's does.
const pipelineDepth = 128

// Group implements multiraft.Peers.
func (p *Port) Group(id uint64) (multiraft.GroupTransport, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.errClosed()
	}
	if p.groups[id] != nil {
		return nil, fmt.Errorf("peertest: group %d is open on node %s already", id, p.id)
	}
	ctx, cancel := context.WithCancel(p.ctx)
	g := &group{port: p, id: id, consumer: make(chan raft.RPC), ctx: ctx, cancel: cancel}
	p.groups[id] = g
	return g, nil
}

func (p *Port) group(id uint64) *group {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.groups[id]
}

func (g *group) Consumer() <-chan raft.RPC                               { return g.consumer }
func (g *group) LocalAddr() raft.ServerAddress                           { return g.port.addr }
func (g *group) EncodePeer(_ raft.ServerID, a raft.ServerAddress) []byte { return []byte(a) }
func (g *group) DecodePeer(b []byte) raft.ServerAddress                  { return raft.ServerAddress(b) }

// BeginLeaderCheck does nothing: heartbeats are never held back here.
func (g *group) BeginLeaderCheck() (end func()) { return func() {} }

func (g *group) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		g.heartbeat.Store(nil)
		return
	}
	g.heartbeat.Store(&cb)
}

// Close detaches the group from its port: its sends and pipelines end and
// RPCs for it are answered with an error.
func (g *group) Close() error {
	g.port.mu.Lock()
	if g.port.groups[g.id] == g {
		delete(g.port.groups, g.id)
	}
	g.port.mu.Unlock()
	g.cancel()
	return nil
}

func (g *group) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return g.send(g.ctx, target, "AppendEntries", copyAppend(args), nil, resp)
}

func (g *group) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	a := *args
	return g.send(g.ctx, target, "RequestVote", &a, nil, resp)
}

func (g *group) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	a := *args
	return g.send(g.ctx, target, "RequestPreVote", &a, nil, resp)
}

func (g *group) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	a := *args
	return g.send(g.ctx, target, "TimeoutNow", &a, nil, resp)
}

func (g *group) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	// The receiver reads the data inside the exchange; reading it here
	// first keeps the sender's reader on the sender's goroutine.
	buf, err := io.ReadAll(io.LimitReader(data, args.Size))
	if err != nil {
		return fmt.Errorf("peertest: read snapshot of group %d: %w", g.id, err)
	}
	a := *args
	return g.send(g.ctx, target, "InstallSnapshot", &a, bytes.NewReader(buf), resp)
}

// copyAppend copies what a wire would: the receiver must not share the
// sender's log entries.
func copyAppend(args *raft.AppendEntriesRequest) *raft.AppendEntriesRequest {
	a := *args
	if args.Entries != nil {
		a.Entries = make([]*raft.Log, len(args.Entries))
		for i, l := range args.Entries {
			c := *l
			a.Entries[i] = &c
		}
	}
	return &a
}

// send delivers one raft RPC to the group's replica at target and copies
// its answer into resp.
func (g *group) send(ctx context.Context, target raft.ServerAddress, what string, args any, data io.Reader, resp any) error {
	out, err := g.port.exchange(ctx, target, fmt.Sprintf("%s (group %d)", what, g.id), func(ctx context.Context, t *Port) (any, error) {
		if err := t.allowed(g.port.id, ""); err != nil {
			return nil, err
		}
		tg := t.group(g.id)
		if tg == nil {
			return nil, t.errNoGroup(g.id)
		}
		return tg.deliver(ctx, args, data)
	})
	if err != nil {
		return err
	}
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		*r = *out.(*raft.AppendEntriesResponse)
	case *raft.RequestVoteResponse:
		*r = *out.(*raft.RequestVoteResponse)
	case *raft.RequestPreVoteResponse:
		*r = *out.(*raft.RequestPreVoteResponse)
	case *raft.TimeoutNowResponse:
		*r = *out.(*raft.TimeoutNowResponse)
	case *raft.InstallSnapshotResponse:
		*r = *out.(*raft.InstallSnapshotResponse)
	}
	return nil
}

// deliver hands an RPC to this replica's raft and waits for its answer:
// heartbeats to the heartbeat handler when raft set one (as the TCP
// transport does, so a replica busy with its log still answers them),
// the rest through Consumer.
func (g *group) deliver(ctx context.Context, args any, data io.Reader) (any, error) {
	answer := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: args, Reader: data, RespChan: answer}
	if hb := g.heartbeat.Load(); hb != nil && isHeartbeat(args) {
		(*hb)(rpc)
	} else {
		select {
		case g.consumer <- rpc:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-g.ctx.Done():
			return nil, g.port.errNoGroup(g.id)
		}
	}
	select {
	case r := <-answer:
		if r.Error != nil {
			return nil, &transport.RemoteError{Message: r.Error.Error()}
		}
		return r.Response, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-g.ctx.Done():
		return nil, g.port.errNoGroup(g.id)
	}
}

// isHeartbeat tells raft's heartbeats apart as its own NetworkTransport does.
func isHeartbeat(args any) bool {
	a, ok := args.(*raft.AppendEntriesRequest)
	return ok && a.Term != 0 && len(a.Addr) != 0 && a.PrevLogEntry == 0 &&
		a.PrevLogTerm == 0 && len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// AppendEntriesPipeline implements raft.Transport: appends to target go
// out one after another, in order, without raft waiting for each.
func (g *group) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	ctx, cancel := context.WithCancel(g.ctx)
	p := &pipeline{g: g, target: target, ctx: ctx, cancel: cancel,
		queue: make(chan *future, pipelineDepth), done: make(chan raft.AppendFuture, pipelineDepth)}
	if !g.port.spawn(p.run) {
		cancel()
		return nil, g.port.errClosed()
	}
	return p, nil
}

type pipeline struct {
	g      *group
	target raft.ServerAddress
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *future
	done   chan raft.AppendFuture
}

func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &future{start: time.Now(), args: args, resp: resp, done: make(chan struct{}), stop: p.ctx.Done()}
	select {
	case p.queue <- f:
		return f, nil
	case <-p.ctx.Done():
		return nil, raft.ErrPipelineShutdown
	}
}

func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close ends the pipeline; appends under way fail.
func (p *pipeline) Close() error {
	p.cancel()
	return nil
}

func (p *pipeline) run() {
	defer func() {
		for {
			select {
			case f := <-p.queue:
				f.finish(raft.ErrPipelineShutdown)
			default:
				return
			}
		}
	}()
	for {
		select {
		case f := <-p.queue:
			f.finish(p.g.send(p.ctx, p.target, "AppendEntries", copyAppend(f.args), nil, f.resp))
			select {
			case p.done <- f:
			case <-p.ctx.Done():
				return
			}
		case <-p.ctx.Done():
			return
		}
	}
}

type future struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error // written once, before done is closed
	done  chan struct{}
	// stop is the pipeline's end: a future queued as it ended may never
	// be sent.
	stop <-chan struct{}
}

func (f *future) finish(err error) {
	f.err = err
	close(f.done)
}

func (f *future) Error() error {
	select {
	case <-f.done:
		return f.err
	case <-f.stop:
		select {
		case <-f.done:
			return f.err
		default:
			return raft.ErrPipelineShutdown
		}
	}
}
func (f *future) Start() time.Time                      { return f.start }
func (f *future) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *future) Response() *raft.AppendEntriesResponse { return f.resp }
