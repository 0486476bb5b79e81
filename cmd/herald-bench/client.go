package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

// reply is what the generator keeps of a reply: whether it succeeded, and
// the error code when it did not.
type reply struct {
	ok   bool
	code string
}

// Client-side outcomes, counted next to the protocol's error codes.
const (
	codeDisconnected = "disconnected" // the socket closed with the request in flight
	codeTimeout      = "timeout"      // no reply within the generator's own bound
	codeSendFailed   = "send_failed"  // the frame could not be written
)

type pendingCall struct {
	start time.Time
	done  func(r reply, now time.Time)
}

// wsClient is one herald.v1 socket of the load generator. Thousands run at
// once, so it parses only what it measures: a reply's id, ok and error
// code, and hands event frames to onEvent without decoding them.
type wsClient struct {
	conn    *gws.Conn
	onEvent func(frame []byte, now time.Time)

	wmu sync.Mutex // orders frames and guards buf
	buf []byte

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]pendingCall
	ended   bool

	closed    chan struct{}
	closeCode atomic.Int32 // the close frame's code, 0 if none came
}

type clientHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

var (
	evPrefix = []byte(`{"ev":`)
	idPrefix = []byte(`{"id":`)
	okTrue   = []byte(`,"ok":true`)
	codeKey  = []byte(`"code":"`)
)

func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	now := time.Now()
	if bytes.HasPrefix(b, evPrefix) {
		if h.c.onEvent != nil {
			h.c.onEvent(b, now)
		}
		return
	}
	if !bytes.HasPrefix(b, idPrefix) {
		return
	}
	rest := b[len(idPrefix):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	id, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	if err != nil {
		return
	}
	r := reply{ok: bytes.HasPrefix(rest[n:], okTrue)}
	if !r.ok {
		r.code = "error"
		if i := bytes.Index(rest, codeKey); i >= 0 {
			s := rest[i+len(codeKey):]
			if j := bytes.IndexByte(s, '"'); j >= 0 {
				r.code = string(s[:j])
			}
		}
	}
	h.c.mu.Lock()
	call, ok := h.c.pending[id]
	delete(h.c.pending, id)
	h.c.mu.Unlock()
	if ok {
		call.done(r, now)
	}
}

func (h clientHandler) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		h.c.closeCode.Store(int32(ce.Code))
	}
	h.c.end()
}

// end fails every request in flight and marks the socket closed.
func (c *wsClient) end() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	calls := c.pending
	c.pending = nil
	c.mu.Unlock()
	close(c.closed)
	now := time.Now()
	for _, call := range calls {
		call.done(reply{code: codeDisconnected}, now)
	}
}

// isClosed reports whether the socket has ended.
func (c *wsClient) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// send writes one request: the frame is {"id":N, followed by what body
// appends (the rest of the object, closing brace included). done runs once,
// with the reply or a client-side outcome; start is what latency counts
// from (the intended send time in open-loop runs).
func (c *wsClient) send(start time.Time, body func(b []byte) []byte, done func(reply, time.Time)) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		done(reply{code: codeDisconnected}, time.Now())
		return
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = pendingCall{start: start, done: done}
	c.mu.Unlock()

	c.wmu.Lock()
	c.buf = append(c.buf[:0], idPrefix...)
	c.buf = strconv.AppendUint(c.buf, id, 10)
	c.buf = append(c.buf, ',')
	c.buf = body(c.buf)
	err := c.conn.WriteMessage(gws.OpcodeText, c.buf)
	c.wmu.Unlock()
	if err != nil {
		if call, ok := c.take(id); ok {
			call.done(reply{code: codeSendFailed}, time.Now())
		}
		_ = c.conn.NetConn().Close()
	}
}

func (c *wsClient) take(id uint64) (pendingCall, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call, ok := c.pending[id]
	delete(c.pending, id)
	return call, ok
}

// call sends a request and waits for its reply.
func (c *wsClient) call(ctx context.Context, body func(b []byte) []byte) (reply, error) {
	ch := make(chan reply, 1)
	c.send(time.Now(), body, func(r reply, _ time.Time) { ch <- r })
	select {
	case r := <-ch:
		if !r.ok {
			return r, fmt.Errorf("%s", r.code)
		}
		return r, nil
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// expire fails the requests in flight for longer than timeout.
func (c *wsClient) expire(now time.Time, timeout time.Duration) {
	var late []pendingCall
	c.mu.Lock()
	for id, call := range c.pending {
		if now.Sub(call.start) > timeout {
			late = append(late, call)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	for _, call := range late {
		call.done(reply{code: codeTimeout}, now)
	}
}

func (c *wsClient) inflight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *wsClient) close() { _ = c.conn.NetConn().Close() }

// dialer opens the generator's sockets. On loopback it spreads them over
// source addresses 127.0.0.1, 127.0.0.2, ... once one address has used up
// its ephemeral ports towards a destination (or from the start, with
// sourceIPs > 1), so a run is bounded by open files, not by ports.
type dialer struct {
	sourceIPs   int // forced spread over this many addresses; 0: as needed
	portsPerSrc int

	mu      sync.Mutex
	perDest map[string]*destState
}

type destState struct {
	conns int // sockets dialed to the destination
	src   int // source address in use when spreading as needed
}

func newDialer(sourceIPs int) *dialer {
	return &dialer{sourceIPs: sourceIPs, portsPerSrc: max(ephemeralPorts()-512, 1024), perDest: map[string]*destState{}}
}

// source picks the source address for the next socket to addr, nil for
// the kernel's choice.
func (d *dialer) source(host string, addr string, bump bool) net.IP {
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.perDest[addr]
	if st == nil {
		st = &destState{}
		d.perDest[addr] = st
	}
	st.conns++
	var n int
	switch {
	case d.sourceIPs > 1:
		n = st.conns % d.sourceIPs
	default:
		if bump || st.conns > (st.src+1)*d.portsPerSrc {
			st.src++
		}
		n = st.src
	}
	if n == 0 {
		return nil
	}
	if n > 253 {
		n = 253
	}
	return net.IPv4(127, 0, 0, byte(1+n))
}

func (d *dialer) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	bump := false
	for attempt := 0; ; attempt++ {
		nd := net.Dialer{Timeout: 10 * time.Second}
		if src := d.source(host, addr, bump); src != nil {
			nd.LocalAddr = &net.TCPAddr{IP: src}
			nd.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = setBindNoPort(fd) }); err != nil {
					return err
				}
				return serr
			}
		}
		conn, err := nd.DialContext(ctx, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || attempt >= 8 {
			return conn, err
		}
		bump = true // this source address has no port left: next one
	}
}

// dial opens a socket to a herald.v1 endpoint.
func (d *dialer) dial(ctx context.Context, wsURL string, onEvent func([]byte, time.Time)) (*wsClient, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("%s: only ws:// targets are supported", wsURL)
	}
	netConn, err := d.dialTCP(ctx, u.Host)
	if err != nil {
		return nil, err
	}
	c := &wsClient{onEvent: onEvent, pending: map[uint64]pendingCall{}, closed: make(chan struct{}),
		buf: make([]byte, 0, 256)}
	conn, _, err := gws.NewClientFromConn(clientHandler{c: c}, &gws.ClientOption{
		Addr:               wsURL,
		RequestHeader:      http.Header{"Sec-WebSocket-Protocol": []string{"herald.v1"}},
		HandshakeTimeout:   10 * time.Second,
		ReadBufferSize:     1024,
		ReadMaxPayloadSize: 1 << 20,
	}, netConn)
	if err != nil {
		_ = netConn.Close()
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	return c, nil
}

// appendQuoted appends s as a JSON string; the generator's room and user
// names need no escaping.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// auth authenticates a socket: with the token when given, else by user
// name (the server's insecure mode).
func (c *wsClient) auth(ctx context.Context, user, token string) error {
	_, err := c.call(ctx, func(b []byte) []byte {
		if token != "" {
			b = append(b, `"op":"auth","token":`...)
			return append(appendQuoted(b, token), '}')
		}
		b = append(b, `"op":"auth","user":`...)
		return append(appendQuoted(b, user), '}')
	})
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

func subscribeBody(room string) func([]byte) []byte {
	return func(b []byte) []byte {
		b = append(b, `"op":"subscribe","room":`...)
		return append(appendQuoted(b, room), '}')
	}
}
