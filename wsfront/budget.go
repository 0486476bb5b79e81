package wsfront

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// History pages are the one reply a client can make the node build at
// will and in bulk, so their bytes are held against two budgets from
// before a page is read until its frames are written to the socket: the
// socket's outgoing queue (Limits.MaxQueueBytes, shared with what is
// already queued) and the node's read budget (Limits.MaxReadBytes, shared
// by every socket). A read that does not fit is not started: a history
// request is answered rate_limited, a subscription catching up waits.
// Counting only after a reply is built would let a socket that does not
// read make the node build pages without bound first.

// Suggested waits of a history request refused for lack of budget. The
// socket's own budget frees as fast as the client reads; the node's as
// other sockets' reads finish, which takes longer under load.
const (
	socketBudgetRetry = 100 * time.Millisecond
	nodeBudgetRetry   = 250 * time.Millisecond
)

// readGrant is budget held for one history page. Frames sent through it
// turn its bytes into queued bytes, which the node's budget keeps holding
// until they are written; release returns what was not sent.
type readGrant struct {
	sess *session
	n    int64 // bytes still held for the page, not yet sent
}

// tryRead takes n bytes of the socket's and the node's budgets for a page,
// or says which budget is exhausted. A socket with nothing queued or
// reserved, and a node with no read in flight, always get their grant, so
// that a page bound above the budget slows reads instead of stopping them.
func (sess *session) tryRead(n int) (*readGrant, *protocol.Error) {
	lim := sess.srv.cfg.Limits
	need := int64(n)
	for {
		held := sess.reservedBytes.Load()
		used := held + sess.queuedBytes.Load()
		if used > 0 && used+need > int64(lim.MaxQueueBytes) {
			return nil, &protocol.Error{Code: protocol.CodeRateLimited, Retryable: true, RetryAfter: socketBudgetRetry,
				Message: fmt.Sprintf("this socket has %d bytes of replies queued or being read (at most %d); read them, then retry",
					used, lim.MaxQueueBytes)}
		}
		if sess.reservedBytes.CompareAndSwap(held, held+need) {
			break
		}
	}
	if !sess.srv.reads.take(need, int64(lim.readBytes())) {
		sess.reservedBytes.Add(-need)
		return nil, &protocol.Error{Code: protocol.CodeRateLimited, Retryable: true, RetryAfter: nodeBudgetRetry,
			Message: fmt.Sprintf("this node is reading %d bytes of history for its sockets (at most %d); retry",
				sess.srv.reads.load(), lim.readBytes())}
	}
	return &readGrant{sess: sess, n: need}, nil
}

// waitRead is tryRead for reads no client waits on (a subscription
// catching up): it waits for budget instead of failing, until ctx ends or
// the socket closes.
func (sess *session) waitRead(ctx context.Context, n int) (*readGrant, bool) {
	backoff := 5 * time.Millisecond
	for {
		if g, perr := sess.tryRead(n); perr == nil {
			return g, true
		}
		if sess.closing.Load() || !wait.Sleep(ctx, backoff) {
			return nil, false
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// release returns the bytes the grant still holds. It is safe on nil and
// after everything was sent.
func (g *readGrant) release() {
	if g == nil || g.n == 0 {
		return
	}
	g.sess.reservedBytes.Add(-g.n)
	g.sess.srv.reads.give(g.n)
	g.n = 0
}

// send queues a frame paid for by the grant. It never closes the socket
// for its queue's size: the bytes were admitted before the page was read,
// so this frame is one the client asked for and the budget allowed. A
// frame bigger than what the grant holds (an event above the page bound)
// is queued all the same; the node's budget counts its real size.
func (g *readGrant) send(frame []byte) bool {
	sess := g.sess
	size := int64(len(frame))
	paid := min(size, g.n)
	g.n -= paid
	sess.reservedBytes.Add(-paid)
	// The node's budget keeps the frame's bytes until it is written.
	sess.srv.reads.add(size - paid)
	f := outFrame{b: validPayload(frame), then: func() { sess.srv.reads.give(size) }}
	if sess.closing.Load() {
		sess.srv.reads.give(size)
		return false
	}
	sess.queuedFrames.Add(1)
	sess.queuedBytes.Add(int64(len(f.b)))
	if !sess.enqueue(f) {
		sess.queuedFrames.Add(-1)
		sess.queuedBytes.Add(-int64(len(f.b)))
		sess.srv.reads.give(size)
		return false
	}
	return true
}

// byteBudget counts bytes against a limit shared by many goroutines.
type byteBudget struct {
	used atomic.Int64
}

// take adds n if the total stays within limit, or if nothing is held at
// all (so one oversized read can still run alone).
func (b *byteBudget) take(n, limit int64) bool {
	for {
		u := b.used.Load()
		if u > 0 && u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// add counts n more bytes without checking the limit, for bytes already
// in memory that must be accounted for.
func (b *byteBudget) add(n int64) { b.used.Add(n) }

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

func (b *byteBudget) load() int64 { return b.used.Load() }

// ReadBytesInFlight is the bytes of history pages the node is reading,
// building or holding in socket queues now (see Limits.MaxReadBytes).
func (s *Server) ReadBytesInFlight() int64 { return s.reads.load() }
