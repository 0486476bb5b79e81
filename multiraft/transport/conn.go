package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// queueHighWater is the number of queued outbound bytes above which
	// stream senders wait: it turns a slow peer into backpressure instead of
	// memory growth.
	queueHighWater = 8 << 20

	// maxHandlersPerConn bounds concurrently running Call handlers per
	// inbound connection; beyond it calls are refused immediately, since the
	// reader must never wait.
	maxHandlersPerConn = 256

	// maxStreamsPerConn bounds concurrently open server-side streams per
	// inbound connection.
	maxStreamsPerConn = 4096
)

// receiver is an outstanding request on an outbound connection: a unary
// call, a pipelined AppendEntries or a stream. deliver runs on the reader
// goroutine and must not block.
type receiver interface {
	deliver(f frame)
	fail(err error)
}

// conn is one multiplexed connection. An outbound conn (dialed by us)
// carries our requests and their responses; an inbound conn carries the
// peer's requests and our responses.
type conn struct {
	// m to peerID are set at construction, read-only after.
	m        *Manager
	nc       net.Conn
	dc       *deadlineConn
	outbound bool
	addr     raft.ServerAddress // dialed address, or the remote address for inbound
	peerID   string
	// access is the inbound peer's PeerAccess; raised to AccessFull once
	// the peer becomes a member.
	access atomic.Int32

	nextID   atomic.Uint64
	lastRecv atomic.Int64 // unix nanos of the last bytes received

	// qmu guards the write queue: queue to waiting, and lazyArmed.
	qmu     sync.Mutex
	queue   [][]byte
	spare   [][]byte
	qbytes  int
	space   chan struct{} // closed when the queue drains; senders waiting for room
	waiting bool
	// lazyArmed: a timer will wake the writer for frames queued by
	// sendLazy; until it fires, they wait for company.
	lazyArmed bool
	wake      chan struct{} // wakes the writer; needs no lock

	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error // set before closed is closed

	// mu guards pending, active and streams.
	mu      sync.Mutex
	pending map[uint64]receiver // outbound only; nil once closed

	// Inbound only: running handlers and streams, cancelled on close.
	// ctx, cancel and sem are set at construction.
	ctx     context.Context
	cancel  context.CancelFunc
	active  map[uint64]context.CancelFunc // guarded by mu
	sem     chan struct{}
	streams int // guarded by mu
}

func newConn(m *Manager, nc net.Conn, outbound bool, addr raft.ServerAddress, peerID string) *conn {
	c := &conn{
		m:        m,
		nc:       nc,
		dc:       &deadlineConn{Conn: nc, readTimeout: m.cfg.RPCTimeout, writeTimeout: m.cfg.RPCTimeout},
		outbound: outbound,
		addr:     addr,
		peerID:   peerID,
		space:    make(chan struct{}),
		wake:     make(chan struct{}, 1),
		closed:   make(chan struct{}),
		pending:  make(map[uint64]receiver),
	}
	c.lastRecv.Store(time.Now().UnixNano())
	c.dc.lastRecv = &c.lastRecv
	if !outbound {
		c.ctx, c.cancel = context.WithCancel(m.ctx)
		c.active = make(map[uint64]context.CancelFunc)
		c.sem = make(chan struct{}, maxHandlersPerConn)
	}
	return c
}

func (c *conn) String() string {
	if c.outbound {
		return fmt.Sprintf("connection to %s (node %s)", c.addr, c.peerID)
	}
	return fmt.Sprintf("connection from %s (node %s)", c.addr, c.peerID)
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// close tears the connection down once: it fails every outstanding request
// with err and cancels running handlers.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		close(c.closed)
		_ = c.nc.Close()
		c.mu.Lock()
		pending := c.pending
		c.pending = nil
		c.mu.Unlock()
		for _, r := range pending {
			r.fail(err)
		}
		if c.cancel != nil {
			c.cancel()
		}
		c.m.removeConn(c)
	})
}

// addPending registers r under id; it fails once the connection is closed.
func (c *conn) addPending(id uint64, r receiver) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return c.closeErr
	}
	c.pending[id] = r
	return nil
}

func (c *conn) removePending(id uint64) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

func (c *conn) getPending(id uint64, take bool) receiver {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.pending[id]
	if take && r != nil {
		delete(c.pending, id)
	}
	return r
}

// send queues a frame for the writer without waiting for room.
func (c *conn) send(b []byte) error {
	c.qmu.Lock()
	err := c.push(b)
	c.qmu.Unlock()
	if err == nil {
		c.kick()
	}
	return err
}

// push appends b to the queue unless the conn is closed. c.qmu is held.
func (c *conn) push(b []byte) error {
	if c.isClosed() {
		return c.closeErr
	}
	c.queue = append(c.queue, b)
	c.qbytes += len(b)
	return nil
}

// kick wakes the writer unless a wake-up is already pending.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// sendLazy queues a frame that may wait up to HeartbeatCoalesce for other
// frames, so that many groups' heartbeats share one write. Any send wakes
// the writer at once and takes waiting lazy frames along.
func (c *conn) sendLazy(b []byte) error {
	linger := c.m.cfg.HeartbeatCoalesce
	if linger < 0 {
		return c.send(b)
	}
	c.qmu.Lock()
	if err := c.push(b); err != nil {
		c.qmu.Unlock()
		return err
	}
	arm := !c.lazyArmed
	c.lazyArmed = true
	c.qmu.Unlock()
	if arm {
		time.AfterFunc(linger, func() {
			c.qmu.Lock()
			c.lazyArmed = false
			c.qmu.Unlock()
			c.kick()
		})
	}
	return nil
}

// sendWait queues a frame once the queue is below its high-water mark,
// waiting for the writer to drain it otherwise.
func (c *conn) sendWait(ctx context.Context, b []byte) error {
	for {
		c.qmu.Lock()
		if c.isClosed() || c.qbytes < queueHighWater {
			err := c.push(b)
			c.qmu.Unlock()
			if err == nil {
				c.kick()
			}
			return err
		}
		space := c.space
		c.waiting = true
		c.qmu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return c.closeErr
		}
	}
}

// writeLoop drains the queue into a buffered writer and flushes only when
// the queue is empty, so frames from many groups share syscalls.
func (c *conn) writeLoop() {
	bw := bufio.NewWriterSize(c.dc, connBufferSize)
	for {
		select {
		case <-c.wake:
		case <-c.closed:
			return
		}
		// As the committer does before a sync (logstore): the goroutines
		// that are ready, often other groups' raft loops with frames for
		// this peer, queue them before this write, so one syscall carries
		// them all. With nothing else ready the yield returns at once.
		runtime.Gosched()
		for {
			c.qmu.Lock()
			batch := c.queue
			c.queue, c.spare = c.spare, nil
			c.qbytes = 0
			if c.waiting {
				close(c.space)
				c.space = make(chan struct{})
				c.waiting = false
			}
			c.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, b := range batch {
				if _, err := bw.Write(b); err != nil {
					c.close(fmt.Errorf("%w: writing to %s: %v", ErrUnreachable, c, err))
					return
				}
				batch[i] = nil
			}
			c.qmu.Lock()
			c.spare = batch[:0]
			c.qmu.Unlock()
		}
		if err := bw.Flush(); err != nil {
			c.close(fmt.Errorf("%w: writing to %s: %v", ErrUnreachable, c, err))
			return
		}
	}
}

func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.dc, connBufferSize)
	for {
		f, err := readFrame(br, c.dc)
		if err != nil {
			if !c.isClosed() && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.m.log.Error("transport: dropping connection", "conn", c.String(), "err", err)
			}
			c.close(fmt.Errorf("%w: %s lost: %v", ErrUnreachable, c, err))
			return
		}
		if c.outbound {
			err = c.handleResponse(f)
		} else {
			err = c.m.dispatch(c, f)
		}
		if err != nil {
			c.m.log.Error("transport: protocol violation, dropping connection", "conn", c.String(), "err", err)
			c.close(fmt.Errorf("%w: %s: %v", ErrUnreachable, c, err))
			return
		}
	}
}

// handleResponse routes a frame on an outbound connection to its request.
// Frames for requests that were abandoned are dropped.
func (c *conn) handleResponse(f frame) error {
	var r receiver
	switch f.typ {
	case ftRaftResp, ftCallResp, ftStreamEnd:
		r = c.getPending(f.id, true)
	case ftStreamMsg:
		r = c.getPending(f.id, false)
	default:
		return fmt.Errorf("unexpected %s frame on an outbound connection", frameTypeName(f.typ))
	}
	if r != nil {
		r.deliver(f)
	}
	return nil
}

// unary is a request waiting for exactly one response frame.
type unary struct {
	ch chan unaryResult
}

type unaryResult struct {
	f   frame
	err error
}

func newUnary() *unary { return &unary{ch: make(chan unaryResult, 1)} }

func (u *unary) deliver(f frame) {
	select {
	case u.ch <- unaryResult{f: f}:
	default:
	}
}

func (u *unary) fail(err error) {
	select {
	case u.ch <- unaryResult{err: err}:
	default:
	}
}

var (
	errWaitTimeout   = errors.New("wait timed out")
	errWaitCancelled = errors.New("wait cancelled")
)

// await waits for u's response, at most timeout, or until done closes.
// On timeout or cancellation the request is forgotten; a timeout on a
// connection that has received no bytes at all since the request was sent
// closes it, since the peer is presumably gone and the next request should
// redial.
func (c *conn) await(u *unary, id uint64, start time.Time, timeout time.Duration, done <-chan struct{}) (frame, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-u.ch:
		return r.f, r.err
	case <-t.C:
		c.removePending(id)
		if c.lastRecv.Load() < start.UnixNano() {
			c.close(fmt.Errorf("%w: %s: no frame received for %v", ErrUnreachable, c, timeout))
		}
		return frame{}, errWaitTimeout
	case <-done:
		c.removePending(id)
		return frame{}, errWaitCancelled
	}
}

// request sends a request frame and waits for its response.
func (c *conn) request(b []byte, id uint64, timeout time.Duration, done <-chan struct{}) (frame, error) {
	return c.requestWith(c.send, b, id, timeout, done)
}

// requestWith is request with the send function chosen (send or sendLazy).
func (c *conn) requestWith(send func([]byte) error, b []byte, id uint64, timeout time.Duration, done <-chan struct{}) (frame, error) {
	u := newUnary()
	if err := c.addPending(id, u); err != nil {
		return frame{}, err
	}
	start := time.Now()
	if err := send(b); err != nil {
		c.removePending(id)
		return frame{}, err
	}
	return c.await(u, id, start, timeout, done)
}

// Inbound handler bookkeeping.

func (c *conn) addActive(id uint64, cancel context.CancelFunc) {
	c.mu.Lock()
	c.active[id] = cancel
	c.mu.Unlock()
}

func (c *conn) removeActive(id uint64) {
	c.mu.Lock()
	delete(c.active, id)
	c.mu.Unlock()
}

func (c *conn) cancelActive(id uint64) {
	c.mu.Lock()
	cancel := c.active[id]
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}
