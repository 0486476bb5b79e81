package wsfront

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/wsfront/auth"
)

// session is the state of one socket. It doubles as the socket's
// gws.SessionStorage, so that finding it costs nothing per frame.
type session struct {
	srv    *Server
	conn   *gws.Conn
	opened time.Time
	addr   netip.Prefix // the client address its socket counts against
	remote string       // the client's address and port, for logs

	lastRead atomic.Int64 // unix nanoseconds
	// writingSince is when the write in progress began (unix
	// nanoseconds; 0: none), for the sweeper to find a client that takes
	// nothing.
	writingSince atomic.Int64
	queuedFrames atomic.Int64
	queuedBytes  atomic.Int64
	// reservedBytes is held for history pages being read or built for
	// this socket; with queuedBytes it is the socket's budget (budget.go).
	reservedBytes atomic.Int64
	inflight      atomic.Int32
	closing       atomic.Bool

	mu       sync.Mutex
	ident    *auth.Identity
	subs     subSet
	joined   map[string]uint64 // room -> seq of this socket's latest join
	tokens   float64           // publish token bucket
	tokensAt time.Time
	ended    bool
	// userCounted: ident.User holds one of its MaxSocketsPerUser through
	// this socket until the socket closes.
	userCounted bool
	// expires, when set, is the expiry the server API gave the socket in
	// place of its token's (RefreshUser); expiryTimer closes it then.
	expires     time.Time
	expiryTimer *time.Timer
	// runs lists the goroutines working for the socket (requests,
	// catch-ups) so that its close cancels them. The socket has no
	// context of its own: a context per socket, with the child map and
	// done channel its first request leaves behind, cost every idle
	// socket about 0.5 KB (docs/benchmarks.md); the list is empty then.
	runs *run

	// The socket's outgoing frames (outbox.go).
	outMu    sync.Mutex
	out      []outFrame
	outBusy  bool          // a writer goroutine is draining out
	outEnded bool          // a write failed or the close frame went out: nothing more is written
	outClose *closeRequest // the close frame to write once out is drained
}

// run is one goroutine working for a socket, in the socket's runs list.
type run struct {
	cancel     context.CancelFunc
	prev, next *run
}

func (sess *session) init(srv *Server, conn *gws.Conn, addr netip.Prefix, remote string) {
	sess.srv = srv
	sess.conn = conn
	sess.addr, sess.remote = addr, remote
	sess.opened = time.Now()
	sess.lastRead.Store(sess.opened.UnixNano())
	sess.tokens = float64(srv.cfg.Limits.PublishBurst)
	sess.tokensAt = sess.opened
}

// gws.SessionStorage: the front keeps its state in fields instead.
func (sess *session) Len() int                     { return 0 }
func (sess *session) Load(string) (any, bool)      { return nil, false }
func (sess *session) Delete(string)                {}
func (sess *session) Store(string, any)            {}
func (sess *session) Range(func(string, any) bool) {}
func (sess *session) touch()                       { sess.lastRead.Store(time.Now().UnixNano()) }
func (sess *session) identity() *auth.Identity {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.ident
}

// goOwned runs fn in a goroutine the server waits for at shutdown, with a
// context that ends when the socket closes, the node stops or, if timeout
// is not zero, after timeout. On a socket already closed fn gets a
// context that has ended.
func (sess *session) goOwned(timeout time.Duration, fn func(context.Context)) {
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(sess.srv.ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(sess.srv.ctx)
	}
	r := &run{cancel: cancel}
	sess.mu.Lock()
	if sess.ended {
		cancel()
	} else {
		r.next = sess.runs
		if r.next != nil {
			r.next.prev = r
		}
		sess.runs = r
	}
	sess.mu.Unlock()
	sess.srv.goOwned(ctx, func(ctx context.Context) {
		defer func() {
			sess.mu.Lock()
			sess.unlinkLocked(r)
			sess.mu.Unlock()
			cancel()
		}()
		fn(ctx)
	})
}

// unlinkLocked takes r out of the socket's runs; taking it out twice, or
// after closed emptied the list, does nothing.
func (sess *session) unlinkLocked(r *run) {
	switch {
	case r.prev != nil:
		r.prev.next = r.next
	case sess.runs == r:
		sess.runs = r.next
	default:
		return
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	r.prev, r.next = nil, nil
}

// goOwned runs fn in a goroutine the server waits for at shutdown.
func (s *Server) goOwned(ctx context.Context, fn func(context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(ctx)
	}()
}

// send queues a frame for the socket and reports whether it did. Past the
// queue's bound the client is too slow to keep up: the socket is closed
// with 4008 and the client resumes from its last seq, instead of the node
// buffering without end.
func (sess *session) send(frame []byte) bool { return sess.sendThen(frame, nil) }

// sendThen is send, calling then (when not nil) once the frame is written
// or has failed.
func (sess *session) sendThen(frame []byte, then func()) bool {
	return sess.queue(outFrame{b: validPayload(frame), then: then})
}

// queue counts frames against the socket's bound and puts them in the
// outbox, in order, at once.
func (sess *session) queue(frames ...outFrame) bool {
	if sess.closing.Load() {
		return false
	}
	lim := sess.srv.cfg.Limits
	var size int64
	for i := range frames {
		size += int64(len(frames[i].b))
	}
	count := int64(len(frames))
	n := sess.queuedFrames.Add(count)
	b := sess.queuedBytes.Add(size)
	if n > int64(lim.MaxQueueFrames) || b > int64(lim.MaxQueueBytes) {
		sess.queuedFrames.Add(-count)
		sess.queuedBytes.Add(-size)
		sess.closeWith(closeSlowConsumer, "slow consumer: outgoing queue is full; reconnect and resume from your last seq")
		return false
	}
	if !sess.enqueue(frames...) {
		sess.queuedFrames.Add(-count)
		sess.queuedBytes.Add(-size)
		return false
	}
	return true
}

// sendEvent queues an event's frame, built once for every socket by
// wireFrame, and counts it as delivered.
func (sess *session) sendEvent(wire []byte) {
	if sess.queue(outFrame{b: wire, wire: true}) {
		sess.srv.obs.EventsDelivered(1)
	}
}

// closeWith sends a close frame and closes the socket, without blocking
// the caller on a client that does not read. It reports whether this call
// closed it (false: it was closing already).
func (sess *session) closeWith(code uint16, reason string) bool {
	if !sess.closing.CompareAndSwap(false, true) {
		return false
	}
	sess.srv.obs.ServerClosed(int(code))
	sess.srv.goOwned(context.Background(), func(context.Context) {
		sess.requestClose(code, reason)
	})
	return true
}

// closed runs once the socket is gone: subscriptions end, and the rooms the
// socket joined are left, within LeaveTimeout.
func (sess *session) closed(error) {
	sess.closing.Store(true)
	sess.mu.Lock()
	if sess.ended {
		sess.mu.Unlock()
		return
	}
	sess.ended = true
	subs := sess.subs
	joined := sess.joined
	ident := sess.ident
	userCounted := sess.userCounted
	sess.subs, sess.joined, sess.userCounted = subSet{}, nil, false
	sess.stopExpiryLocked()
	// The runs are cancelled outside the lock, since a context's cancel
	// runs whatever was registered on it; unlinked here, a run ending
	// meanwhile finds itself out of the list already.
	var cancels []context.CancelFunc
	for r := sess.runs; r != nil; {
		next := r.next
		cancels = append(cancels, r.cancel)
		r.prev, r.next = nil, nil
		r = next
	}
	sess.runs = nil
	sess.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
	// The connection is gone, and with it the file descriptor the limits
	// protect: the leaves below need none of their own.
	sess.srv.adm.releaseConn(sess.addr)
	if userCounted {
		sess.srv.adm.releaseUser(ident.User)
	}
	subs.each(func(sub *subscription) {
		sub.close()
		sess.srv.hub.remove(sub)
	})
	srv := sess.srv
	if len(joined) == 0 || ident == nil {
		srv.removeSession(sess)
		return
	}
	srv.goOwned(context.Background(), func(context.Context) {
		defer srv.removeSession(sess)
		ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.Limits.LeaveTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for room, joinSeq := range joined {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := srv.leaveJoin(ctx, ident.User, room, joinSeq); err != nil {
					srv.log.Info("leave on socket close failed; the node's lease expiry will remove the member",
						"room", room, "member", ident.User, "err", err)
				}
			}()
		}
		wg.Wait()
	})
}

// sweep enforces the auth and idle timeouts and pings the socket.
func (sess *session) sweep(now time.Time, ping bool) {
	if sess.closing.Load() {
		return
	}
	lim := sess.srv.cfg.Limits
	if sess.identity() == nil && now.Sub(sess.opened) > lim.AuthTimeout {
		sess.closeWith(closeAuthTimeout, "not authenticated in time")
		return
	}
	if now.Sub(time.Unix(0, sess.lastRead.Load())) > lim.IdleTimeout {
		sess.closeWith(closeIdle, "idle: nothing received for too long")
		return
	}
	// A client that takes nothing while the kernel's buffers are full
	// blocks its writer, which holds its queued bytes (and the node's
	// read budget they count against); its own pings keep it from being
	// idle. The close's write deadline ends the blocked write.
	if w := sess.writingSince.Load(); w != 0 && now.Sub(time.Unix(0, w)) > lim.IdleTimeout {
		sess.closeWith(closeSlowConsumer, "slow consumer: took nothing for too long; reconnect and resume from your last seq")
		return
	}
	if ping {
		sess.conn.Async(func() { _ = sess.conn.WritePing(nil) })
	}
}

// takePublishToken spends one publish from the socket's rate budget, or
// says how long until one is available.
func (sess *session) takePublishToken(now time.Time) (time.Duration, bool) {
	lim := sess.srv.cfg.Limits
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.tokens = min(float64(lim.PublishBurst), sess.tokens+now.Sub(sess.tokensAt).Seconds()*lim.PublishRate)
	sess.tokensAt = now
	if sess.tokens < 1 {
		return time.Duration((1 - sess.tokens) / lim.PublishRate * float64(time.Second)), false
	}
	sess.tokens--
	return 0, true
}

// abort drops the socket without a close frame and forgets its joins.
func (sess *session) abort() {
	sess.closing.Store(true)
	sess.mu.Lock()
	sess.joined = nil
	sess.mu.Unlock()
	_ = sess.conn.NetConn().Close()
}

// backlogged reports that the socket's queue is half full: history being
// caught up waits for it to drain, so that a subscription resuming far
// behind is paced by its socket instead of being closed as too slow.
func (sess *session) backlogged() bool {
	lim := sess.srv.cfg.Limits
	return sess.queuedFrames.Load() > int64(lim.MaxQueueFrames/2) || sess.queuedBytes.Load() > int64(lim.MaxQueueBytes/2)
}

// waitDrained waits until the socket is no longer backlogged; false means
// the session ended first.
func (sess *session) waitDrained(ctx context.Context) bool {
	for sess.backlogged() {
		if sess.closing.Load() || !wait.Sleep(ctx, 5*time.Millisecond) {
			return false
		}
	}
	return ctx.Err() == nil
}
