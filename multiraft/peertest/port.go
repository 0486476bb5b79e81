package peertest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/transport"
)

// Port is one node's end of a Net: a multiraft.Peers.
type Port struct {
	net       *Net
	id        string
	addr      raft.ServerAddress
	authorize func(string) (transport.PeerAccess, error)
	join      []string

	// ctx ends with Close; every wait of the port's observes it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine the port runs: handlers of requests to
	// it, streams it serves, pipelines of its groups.
	wg sync.WaitGroup

	// mu guards closed, handlers, streams and groups.
	mu       sync.Mutex
	closed   bool
	handlers map[string]transport.Handler
	streams  map[string]transport.StreamHandler
	groups   map[uint64]*group
}

var _ multiraft.Peers = (*Port)(nil)

// Addr implements multiraft.Peers.
func (p *Port) Addr() raft.ServerAddress { return p.addr }

// Handle implements multiraft.Peers.
func (p *Port) Handle(service string, h transport.Handler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h == nil {
		delete(p.handlers, service)
		return
	}
	p.handlers[service] = h
}

// HandleStream implements multiraft.Peers.
func (p *Port) HandleStream(service string, h transport.StreamHandler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h == nil {
		delete(p.streams, service)
		return
	}
	p.streams[service] = h
}

// Reauthorize implements multiraft.Peers; a Port asks Authorize on every
// request, so there is nothing to redo.
func (p *Port) Reauthorize() {}

// Close closes the port and its groups and waits for every goroutine it
// runs; requests to it are refused from now on.
func (p *Port) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	groups := p.groups
	p.groups = map[uint64]*group{}
	p.mu.Unlock()
	p.net.remove(p)
	for _, g := range groups {
		g.cancel()
	}
	p.wg.Wait()
	return nil
}

// spawn runs f on a goroutine of the port's; false when it is closed.
func (p *Port) spawn(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// Call implements multiraft.Peers.
func (p *Port) Call(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) ([]byte, error) {
	out, err := p.exchange(ctx, target, fmt.Sprintf("call %q (group %d)", service, group), func(ctx context.Context, t *Port) (any, error) {
		if err := t.allowed(p.id, service); err != nil {
			return nil, err
		}
		t.mu.Lock()
		h := t.handlers[service]
		t.mu.Unlock()
		if h == nil {
			return nil, &transport.RemoteError{Message: fmt.Sprintf("unknown service %q", service)}
		}
		resp, err := h(ctx, p.id, group, slices.Clone(req))
		if err != nil {
			return nil, &transport.RemoteError{Message: err.Error()}
		}
		return resp, nil
	})
	if err != nil {
		return nil, err
	}
	return out.([]byte), nil
}

// Answers implements multiraft.Peers: the node at target is heard from
// when its port is open and both links to it pass.
func (p *Port) Answers(ctx context.Context, target raft.ServerAddress) bool {
	t := p.net.port(target)
	if t == nil {
		return false
	}
	return p.net.pass(ctx, p.id, t.id) == nil && p.net.pass(ctx, t.id, p.id) == nil && t.ctx.Err() == nil
}

// exchange carries one request from p to the port at target, runs serve
// on a goroutine of that port's, and carries its answer back. Each way
// waits for its link; the whole is bounded by ctx and the Net's RPC
// timeout.
func (p *Port) exchange(parent context.Context, target raft.ServerAddress, what string, serve func(ctx context.Context, t *Port) (any, error)) (any, error) {
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrNotSent, err)
	}
	if p.ctx.Err() != nil {
		return nil, p.errClosed()
	}
	t := p.net.port(target)
	if t == nil {
		return nil, fmt.Errorf("peertest: %w: %w: %s to %s: no port is open there", transport.ErrNotSent, transport.ErrUnreachable, what, target)
	}
	ctx, cancel := context.WithTimeout(parent, p.net.rpcTimeout)
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()
	if p.net.pass(ctx, p.id, t.id) != nil {
		return nil, p.failure(parent, target, what)
	}
	type answer struct {
		v   any
		err error
	}
	answered := make(chan answer, 1)
	ok := t.spawn(func() {
		hctx, hcancel := context.WithCancel(t.ctx)
		defer hcancel()
		defer context.AfterFunc(ctx, hcancel)()
		v, err := serve(hctx, t)
		answered <- answer{v, err}
	})
	if !ok {
		return nil, fmt.Errorf("peertest: %w: %w: %s to %s: the port closed", transport.ErrNotSent, transport.ErrUnreachable, what, target)
	}
	var a answer
	select {
	case a = <-answered:
	case <-t.ctx.Done():
		return nil, fmt.Errorf("peertest: %w: %s to %s: the port closed while the request ran", transport.ErrUnreachable, what, target)
	case <-ctx.Done():
		return nil, p.failure(parent, target, what)
	}
	if p.net.pass(ctx, t.id, p.id) != nil {
		return nil, p.failure(parent, target, what)
	}
	return a.v, a.err
}

// failure is why a request's context ended: the caller's, this port's
// closing, or the Net's RPC timeout.
func (p *Port) failure(parent context.Context, target raft.ServerAddress, what string) error {
	switch {
	case parent.Err() != nil:
		return parent.Err()
	case p.ctx.Err() != nil:
		return p.errClosed()
	}
	return fmt.Errorf("peertest: %w: %s to %s got no reply within %v", transport.ErrTimeout, what, target, p.net.rpcTimeout)
}

func (p *Port) errClosed() error {
	return fmt.Errorf("peertest: %w: the port of node %s", transport.ErrClosed, p.id)
}

// allowed decides a request from node from as transport's Manager does
// with its Authorize: full members may do anything, nodes that may only
// join may call the join services. service is empty for raft's RPCs and
// streams.
func (p *Port) allowed(from, service string) error {
	if p.authorize == nil {
		return nil
	}
	access, err := p.authorize(from)
	if err != nil {
		return fmt.Errorf("peertest: %w: %w: node %s refused node %s: %v", transport.ErrNotSent, transport.ErrUnreachable, p.id, from, err)
	}
	if access == transport.AccessFull || (service != "" && slices.Contains(p.join, service)) {
		return nil
	}
	return fmt.Errorf("peertest: %w: node %s is not a member of the cluster on node %s (yet); it may only join", transport.ErrNotMember, from, p.id)
}

// errNoGroup answers a raft RPC for a group the port does not have open.
func (p *Port) errNoGroup(id uint64) error {
	return &transport.RemoteError{Message: fmt.Sprintf("group %d is not open on node %s", id, p.id)}
}
