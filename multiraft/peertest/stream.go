package peertest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/transport"
)

// streamBuffer is how many messages a stream holds for its receiver before
// it overflows, as the TCP transport's does.
const streamBuffer = 1024

// stream is the receiving end of a stream served by another port.
type stream struct {
	msgs chan []byte
	end  chan struct{}
	once sync.Once
	// err and local are written once, before end is closed; local: ended
	// by this end (Close, its context), so buffered messages are dropped.
	err   error
	local bool
	// stopServe ends the serving handler's context.
	stopServe context.CancelFunc
	// unwatch stops the watches of the receiver's context and port.
	mu      sync.Mutex
	unwatch []func() bool // guarded by mu
}

// OpenStream implements multiraft.Peers. The handler runs on the target's
// port; every message it sends waits for the link back.
func (p *Port) OpenStream(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) (multiraft.EventStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := p.net.port(target)
	if t == nil {
		return nil, fmt.Errorf("peertest: %w: stream %q to %s: no port is open there", transport.ErrUnreachable, service, target)
	}
	s := &stream{msgs: make(chan []byte, streamBuffer), end: make(chan struct{})}
	hctx, hcancel := context.WithCancel(t.ctx)
	s.stopServe = hcancel
	req = slices.Clone(req)
	ok := t.spawn(func() {
		defer hcancel()
		if p.net.pass(hctx, p.id, t.id) != nil {
			s.finish(fmt.Errorf("peertest: %w: stream %q to %s ended before it opened", transport.ErrUnreachable, service, target), false)
			return
		}
		if err := t.allowed(p.id, ""); err != nil {
			s.finish(err, false)
			return
		}
		t.mu.Lock()
		h := t.streams[service]
		t.mu.Unlock()
		if h == nil {
			s.finish(&transport.RemoteError{Message: fmt.Sprintf("unknown stream service %q", service)}, false)
			return
		}
		send := func(b []byte) error {
			if err := p.net.pass(hctx, t.id, p.id); err != nil {
				return err
			}
			select {
			case s.msgs <- slices.Clone(b):
				return nil
			case <-s.end:
				return context.Canceled
			default:
				s.finish(transport.ErrStreamOverflow, false)
				return transport.ErrStreamOverflow
			}
		}
		err := h(hctx, p.id, group, req, send)
		if err != nil {
			s.finish(&transport.RemoteError{Message: err.Error()}, false)
			return
		}
		s.finish(io.EOF, false)
	})
	if !ok {
		hcancel()
		return nil, fmt.Errorf("peertest: %w: stream %q to %s: the port closed", transport.ErrUnreachable, service, target)
	}
	s.mu.Lock()
	s.unwatch = append(s.unwatch,
		context.AfterFunc(ctx, func() { s.finish(ctx.Err(), true) }),
		context.AfterFunc(p.ctx, func() { s.finish(p.errClosed(), true) }),
		context.AfterFunc(t.ctx, func() {
			s.finish(fmt.Errorf("peertest: %w: the port of %s closed", transport.ErrUnreachable, t.id), false)
		}),
	)
	s.mu.Unlock()
	select {
	case <-s.end:
		s.stopWatches() // ended before the watches were registered
	default:
	}
	return s, nil
}

// finish ends the stream once, with err for Recv.
func (s *stream) finish(err error, local bool) {
	s.once.Do(func() {
		s.err, s.local = err, local
		close(s.end)
		s.stopServe()
		s.stopWatches()
	})
}

func (s *stream) stopWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, stop := range s.unwatch {
		stop()
	}
	s.unwatch = nil
}

// Recv returns the next message; after the stream ended, those still
// buffered (unless this end closed it), then why it ended.
func (s *stream) Recv() ([]byte, error) {
	select {
	case <-s.end:
		if s.local {
			return nil, s.err
		}
	default:
	}
	select {
	case m := <-s.msgs:
		return m, nil
	case <-s.end:
	}
	if !s.local {
		select {
		case m := <-s.msgs:
			return m, nil
		default:
		}
	}
	return nil, s.err
}

// Close ends the stream and the handler serving it.
func (s *stream) Close() error {
	s.finish(fmt.Errorf("peertest: %w: stream closed", transport.ErrClosed), true)
	return nil
}
