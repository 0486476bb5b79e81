package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/hashicorp/raft"
)

// Handler serves a node-to-node call. from is the calling node's id (from
// its handshake; authenticated only as far as the TLS configuration
// authenticates peers), group is the group id the caller passed. Its error
// reaches the caller as a *RemoteError. ctx is cancelled when the caller
// gives up, the connection breaks, the Manager closes, or after
// Config.RPCTimeout.
type Handler func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error)

// Handle registers h for service, replacing any previous handler; a nil h
// removes it. Handlers run on their own goroutines, at most 256 at a time
// per calling node; calls beyond that are refused with a RemoteError.
func (m *Manager) Handle(service string, h Handler) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if h == nil {
		delete(m.handlers, service)
		return
	}
	m.handlers[service] = h
}

func (m *Manager) handler(service string) Handler {
	m.hmu.RLock()
	defer m.hmu.RUnlock()
	return m.handlers[service]
}

// Call sends req to service on the node at target and waits for the reply,
// at most Config.RPCTimeout. Errors: a *RemoteError for a handler error or
// unknown service; an error wrapping ErrUnreachable when the peer cannot be
// reached or the connection breaks; one wrapping ErrTimeout when no reply
// came in time; ctx.Err() when ctx ends first. Failures before the request
// left this node also wrap ErrNotSent.
func (m *Manager) Call(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	c, err := m.getConn(ctx, target)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	id := c.nextID.Add(1)
	b := newFrame(ftCall, group, id, 1+len(service)+len(req))
	b, err = finishFrame(appendServiceReq(b, service, req))
	if err != nil {
		return nil, fmt.Errorf("transport: call %q: %w", service, err)
	}
	f, err := c.request(b, id, m.cfg.RPCTimeout, ctx.Done())
	switch {
	case errors.Is(err, errWaitCancelled):
		_ = c.send(cancelFrame(group, id))
		return nil, ctx.Err()
	case errors.Is(err, errWaitTimeout):
		_ = c.send(cancelFrame(group, id))
		return nil, fmt.Errorf("%w: call %q (group %d) to %s got no reply within %v", ErrTimeout, service, group, target, m.cfg.RPCTimeout)
	case err != nil:
		return nil, err
	}
	if f.typ != ftCallResp {
		return nil, fmt.Errorf("transport: call %q to %s answered with a %s frame", service, target, frameTypeName(f.typ))
	}
	return parseStatus(f.payload)
}

func (m *Manager) dispatchCall(c *conn, f frame) {
	reply := func(resp []byte, err error) { _ = c.send(statusFrame(ftCallResp, f.group, f.id, resp, err)) }
	service, req, err := parseServiceReq(f.payload)
	if err != nil {
		reply(nil, err)
		return
	}
	if err := m.allowed(c, f.typ, service); err != nil {
		reply(nil, err)
		return
	}
	h := m.handler(service)
	if h == nil {
		reply(nil, fmt.Errorf("transport: unknown service %q on node %s", service, m.cfg.NodeID))
		return
	}
	select {
	case c.sem <- struct{}{}:
	default:
		reply(nil, fmt.Errorf("transport: node %s is running too many calls from node %s; retry later", m.cfg.NodeID, c.peerID))
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, m.cfg.RPCTimeout)
	c.addActive(f.id, cancel)
	release := func() {
		c.removeActive(f.id)
		cancel()
		<-c.sem
	}
	ok := m.goFunc(func() {
		defer release()
		resp, err := m.runHandler(ctx, h, service, c.peerID, f.group, req)
		reply(resp, err)
	})
	if !ok {
		release()
		reply(nil, fmt.Errorf("%w: node %s is shutting down", ErrClosed, m.cfg.NodeID))
	}
}

// runHandler turns a handler panic into an error reply: one bad request
// must not take the node down.
func (m *Manager) runHandler(ctx context.Context, h Handler, service, from string, group uint64, req []byte) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("transport: handler panicked", "service", service, "from", from, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, fmt.Errorf("transport: handler for %q panicked on node %s", service, m.cfg.NodeID)
		}
	}()
	return h(ctx, from, group, req)
}
