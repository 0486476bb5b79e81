package transport

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/hashicorp/raft"
)

// streamBuffer is how many messages a Stream buffers before it overflows.
const streamBuffer = 1024

// StreamHandler serves a server-push stream: it calls send for every
// message and returns nil to end the stream cleanly (the receiver sees
// io.EOF) or an error (the receiver sees a *RemoteError).
//
// send applies backpressure by blocking while the connection's outgoing
// queue is full, until ctx is done; it returns ctx's error once the
// receiver has closed the stream, the connection broke or the Manager is
// closing, and the handler should then return. A receiver that reads too
// slowly is not slowed down by send: its stream overflows instead.
type StreamHandler func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error

// HandleStream registers h for service, replacing any previous handler; a
// nil h removes it.
func (m *Manager) HandleStream(service string, h StreamHandler) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if h == nil {
		delete(m.streamHandlers, service)
		return
	}
	m.streamHandlers[service] = h
}

func (m *Manager) streamHandler(service string) StreamHandler {
	m.hmu.RLock()
	defer m.hmu.RUnlock()
	return m.streamHandlers[service]
}

// Stream is the receiving end of a server-push stream.
type Stream struct {
	c       *conn
	id      uint64
	group   uint64
	msgs    chan []byte
	end     chan struct{}
	endOnce sync.Once
	endErr  error // set before end is closed
	// local: ended by Close or ctx, so Recv stops returning buffered
	// messages; set before end is closed.
	local bool

	mu   sync.Mutex
	stop func() bool // unregisters the ctx watcher; guarded by mu
}

// OpenStream asks service on the node at target to stream to us. It does
// not wait for the server: an unknown service shows up as a *RemoteError
// from the first Recv. Cancelling ctx closes the stream like Close.
func (m *Manager) OpenStream(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := m.getConn(ctx, target)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	s := &Stream{
		c:     c,
		id:    c.nextID.Add(1),
		group: group,
		msgs:  make(chan []byte, streamBuffer),
		end:   make(chan struct{}),
	}
	b := newFrame(ftStreamOpen, group, s.id, 1+len(service)+len(req))
	b, err = finishFrame(appendServiceReq(b, service, req))
	if err != nil {
		return nil, fmt.Errorf("transport: stream %q: %w", service, err)
	}
	if err := c.addPending(s.id, s); err != nil {
		return nil, err
	}
	if err := c.send(b); err != nil {
		c.removePending(s.id)
		return nil, err
	}
	s.mu.Lock()
	s.stop = context.AfterFunc(ctx, func() { s.closeWith(ctx.Err()) })
	s.mu.Unlock()
	select {
	case <-s.end:
		s.stopWatch() // ended before the watcher was registered
	default:
	}
	return s, nil
}

// Recv returns the next message. After the stream ended it returns the
// messages still buffered, then: io.EOF if the handler returned nil, a
// *RemoteError if it returned an error, an error wrapping ErrUnreachable if
// the connection broke, ErrStreamOverflow if this receiver fell more than
// 1024 messages behind. After Close (or ctx cancellation) it returns an
// error wrapping ErrClosed (or ctx's error) at once.
func (s *Stream) Recv() ([]byte, error) {
	select {
	case <-s.end:
		if s.local {
			return nil, s.endErr
		}
	default:
	}
	select {
	case b := <-s.msgs:
		return b, nil
	default:
	}
	select {
	case b := <-s.msgs:
		return b, nil
	case <-s.end:
		if s.local {
			return nil, s.endErr
		}
		select {
		case b := <-s.msgs:
			return b, nil
		default:
			return nil, s.endErr
		}
	}
}

// Close ends the stream and tells the server, whose handler context is
// cancelled. It is idempotent and never blocks.
func (s *Stream) Close() error {
	s.closeWith(fmt.Errorf("%w: stream %d was closed", ErrClosed, s.id))
	return nil
}

func (s *Stream) closeWith(err error) {
	s.endOnce.Do(func() {
		s.local = true
		s.endErr = err
		close(s.end)
		s.c.removePending(s.id)
		_ = s.c.send(cancelFrame(s.group, s.id))
		s.stopWatch()
	})
}

func (s *Stream) finish(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		close(s.end)
		s.stopWatch()
	})
}

func (s *Stream) stopWatch() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// deliver runs on the connection's reader goroutine and never blocks: a
// full buffer ends the stream with ErrStreamOverflow.
func (s *Stream) deliver(f frame) {
	switch f.typ {
	case ftStreamMsg:
		select {
		case s.msgs <- f.payload:
		default:
			s.c.removePending(s.id)
			_ = s.c.send(cancelFrame(s.group, s.id))
			s.finish(ErrStreamOverflow)
		}
	case ftStreamEnd:
		_, err := parseStatus(f.payload)
		if err == nil {
			err = io.EOF
		}
		s.finish(err)
	default:
		s.finish(fmt.Errorf("transport: stream answered with a %s frame", frameTypeName(f.typ)))
	}
}

func (s *Stream) fail(err error) { s.finish(err) }

func (m *Manager) dispatchStream(c *conn, f frame) {
	reply := func(err error) { _ = c.send(statusFrame(ftStreamEnd, f.group, f.id, nil, err)) }
	service, req, err := parseServiceReq(f.payload)
	if err != nil {
		reply(err)
		return
	}
	if err := m.allowed(c, f.typ, service); err != nil {
		reply(err)
		return
	}
	h := m.streamHandler(service)
	if h == nil {
		reply(fmt.Errorf("transport: unknown stream service %q on node %s", service, m.cfg.NodeID))
		return
	}
	c.mu.Lock()
	if c.streams >= maxStreamsPerConn {
		c.mu.Unlock()
		reply(fmt.Errorf("transport: node %s has too many open streams from node %s", m.cfg.NodeID, c.peerID))
		return
	}
	c.streams++
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(c.ctx)
	c.addActive(f.id, cancel)
	release := func() {
		c.mu.Lock()
		c.streams--
		delete(c.active, f.id)
		c.mu.Unlock()
		cancel()
	}
	send := func(b []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		fb, err := finishFrame(append(newFrame(ftStreamMsg, f.group, f.id, len(b)), b...))
		if err != nil {
			return err
		}
		return c.sendWait(ctx, fb)
	}
	ok := m.goFunc(func() {
		defer release()
		err := m.runStreamHandler(ctx, h, service, c.peerID, f.group, req, send)
		reply(err)
	})
	if !ok {
		release()
		reply(fmt.Errorf("%w: node %s is shutting down", ErrClosed, m.cfg.NodeID))
	}
}

func (m *Manager) runStreamHandler(ctx context.Context, h StreamHandler, service, from string, group uint64, req []byte, send func([]byte) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("transport: stream handler panicked", "service", service, "from", from, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("transport: stream handler for %q panicked on node %s", service, m.cfg.NodeID)
		}
	}()
	return h(ctx, from, group, req, send)
}
