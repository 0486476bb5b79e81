package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
	"github.com/lxzan/gws"
)

// maxWriteFrame is the largest frame the client writes. gws refuses a
// bigger one by closing the socket, which would lose every request on it
// and, resent, lose the next socket too; so it is checked before writing.
// It is far above any frame a node takes (data is at most 1 MiB).
const maxWriteFrame = 16 << 20

// writeTimeout bounds one frame's write, so a node that stopped reading
// costs a reconnect instead of a stuck caller.
const writeTimeout = 10 * time.Second

// conn is one socket to one node. Its ctx ends when the socket is gone,
// which is how everything working on it learns to stop.
type conn struct {
	// c to maxFrame are set by dial before the socket is published in
	// Client.cur, read-only after.
	c    *Client
	ws   *gws.Conn
	url  string
	node string
	born time.Time

	// maxFrame is the node's max_frame from the auth reply (0: not told).
	// Set once before the socket is handed to requests.
	maxFrame int

	ctx    context.Context
	cancel context.CancelFunc

	// mu guards pending, gone and closeErr.
	mu       sync.Mutex
	pending  map[uint64]*call
	gone     bool
	closeErr error
}

// call is a request waiting for its reply.
type call struct {
	reply chan *protocol.Frame
	// apply, if set, runs on the read goroutine as a successful reply
	// arrives, before any later frame of the socket is handled: a
	// subscription must learn its position before its first event.
	apply func(*protocol.Frame) error
	err   error // set by apply's failure, read after reply is received
	size  int   // bytes of the request's frame
}

// handler receives one socket's frames on its read goroutine, in order.
type handler struct {
	gws.BuiltinEventHandler
	cn *conn
}

func (h handler) OnPing(_ *gws.Conn, payload []byte) {
	h.cn.alive()
	_ = h.cn.writeControl(gws.OpcodePong, payload)
}

func (h handler) OnPong(*gws.Conn, []byte) { h.cn.alive() }

func (h handler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	h.cn.alive()
	if m.Opcode != gws.OpcodeText {
		h.cn.c.log.Warn("herald: ignoring a binary frame", "url", h.cn.url)
		return
	}
	h.cn.c.dispatch(h.cn, m.Bytes())
}

func (h handler) OnClose(_ *gws.Conn, err error) {
	cn := h.cn
	// Stop handing the socket out first: a request that finds it gone
	// must then wait for the next one instead of finding it again.
	cn.c.unpublish(cn)
	if closeCode(err) == closeTooLarge {
		cn.failOversized()
	}
	cn.mu.Lock()
	cn.gone = true
	cn.closeErr = err
	cn.mu.Unlock()
	cn.cancel()
}

// closeTooLarge is the close code of a node that read a frame header over
// its hard limit (4 × max_frame).
const closeTooLarge = 1009

// failOversized fails, with too_large, the requests a 1009 close may be
// about, so that they are not sent again on the next socket, where the
// node would close it again. The node closes at the first frame over its
// limit and reads nothing after it, so the culprit is still waiting for a
// reply; the largest waiting frame is at least as large, hence over the
// limit too. Smaller ones are retried as after any lost socket; should one
// also be over the limit, the next 1009 fails it.
func (cn *conn) failOversized() {
	cn.mu.Lock()
	largest := 0
	for _, cl := range cn.pending {
		largest = max(largest, cl.size)
	}
	var ids []uint64
	for id, cl := range cn.pending {
		if cl.size == largest {
			ids = append(ids, id)
		}
	}
	cn.mu.Unlock()
	for _, id := range ids {
		cn.deliver(id, &protocol.Frame{}, &Error{Code: CodeTooLarge,
			Message: fmt.Sprintf("the node closed the socket (1009) for a frame of %d bytes, over its hard frame limit", largest)})
	}
}

// closeCode returns the websocket close code err carries, or 0.
func closeCode(err error) uint16 {
	code, _ := closeFrame(err)
	return code
}

// closeFrame returns the websocket close code and reason err carries.
func closeFrame(err error) (uint16, string) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		return ce.Code, string(ce.Reason)
	}
	return 0, ""
}

func (cn *conn) err() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.closeErr
}

// alive pushes the read deadline out: a socket that brings nothing, not
// even the pong to the client's ping, for three ping intervals is taken
// as dead (a partitioned node does not close its TCP connections).
func (cn *conn) alive() {
	_ = cn.ws.SetReadDeadline(time.Now().Add(3 * cn.c.opts.PingInterval))
}

func (cn *conn) write(b []byte) error {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return cn.ws.WriteMessage(gws.OpcodeText, b)
}

func (cn *conn) writeControl(op gws.Opcode, payload []byte) error {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return cn.ws.WriteMessage(op, payload)
}

// close ends the socket with a normal close frame.
func (cn *conn) close() {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = cn.ws.WriteClose(1000, nil)
	_ = cn.ws.NetConn().Close()
}

func (cn *conn) keepalive() {
	t := time.NewTicker(cn.c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-cn.ctx.Done():
			return
		case <-t.C:
			_ = cn.writeControl(gws.OpcodePing, nil)
		}
	}
}

// connect opens a socket to rawURL and authenticates on it.
func (c *Client) connect(rawURL string) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	defer cancel()
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("herald: bad url %q: %w", rawURL, err)
	}
	var port string
	switch u.Scheme {
	case "ws":
		port = "80"
	case "wss":
		port = "443"
	default:
		return nil, fmt.Errorf("herald: url %q: scheme must be ws or wss", rawURL)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	nc, err := c.opts.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	if u.Scheme == "wss" {
		cfg := &tls.Config{}
		if c.opts.TLSConfig != nil {
			cfg = c.opts.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, err
		}
		nc = tc
	}
	cn := &conn{c: c, url: rawURL, born: time.Now(), pending: make(map[uint64]*call)}
	cn.ctx, cn.cancel = context.WithCancel(c.ctx)
	// The handshake reads without a context: closing the socket is how the
	// dial timeout or Close interrupts it.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	ws, _, err := gws.NewClientFromConn(handler{cn: cn}, &gws.ClientOption{
		Addr:                rawURL,
		RequestHeader:       http.Header{"Sec-WebSocket-Protocol": []string{protocol.Subprotocol}},
		HandshakeTimeout:    c.opts.DialTimeout,
		ReadMaxPayloadSize:  c.opts.MaxFrame,
		WriteMaxPayloadSize: maxWriteFrame,
		Logger:              gwsLogger{c.log},
	}, nc)
	if !stop() && err == nil {
		err = ctx.Err()
		_ = nc.Close()
	}
	if err != nil {
		cn.cancel()
		return nil, err
	}
	cn.ws = ws
	cn.alive()
	if !c.goRun(ws.ReadLoop) {
		cn.close()
		cn.cancel()
		return nil, ErrClosed
	}
	c.goRun(cn.keepalive)

	req := protocol.Request{Op: protocol.OpAuth, User: c.opts.User, Token: c.opts.Token}
	if c.opts.TokenSource != nil {
		if req.Token, err = c.opts.TokenSource(ctx); err != nil {
			cn.close()
			return nil, fmt.Errorf("herald: token source: %w", err)
		}
		req.User = ""
	}
	f, _, err := c.roundTrip(ctx, cn, &req, nil)
	if err != nil {
		cn.close()
		return nil, err
	}
	cn.node = f.Node
	cn.maxFrame = f.Limits.MaxFrame
	return cn, nil
}

// roundTrip sends req on cn and waits for its reply. sent reports whether
// the request may have reached the node, so whether it may have taken
// effect when no reply came.
func (c *Client) roundTrip(ctx context.Context, cn *conn, req *protocol.Request, apply func(*protocol.Frame) error) (f *protocol.Frame, sent bool, err error) {
	id := c.ids.Add(1)
	req.ID = protocol.NumericID(id)
	b, err := json.Marshal(req)
	if err != nil {
		return nil, false, fmt.Errorf("herald: encode %s: %w", req.Op, err)
	}
	if limit := cn.maxFrame; (limit > 0 && len(b) > limit) || len(b) > maxWriteFrame {
		// The node would refuse it, and past 4 × max_frame close the
		// socket for it: refuse it here, where the caller learns why.
		if limit > 0 && limit < maxWriteFrame {
			return nil, false, &Error{Code: CodeTooLarge, Message: fmt.Sprintf(
				"the %s request is %d bytes as JSON; node %s takes frames of at most %d bytes (its max_frame)",
				req.Op, len(b), cn.node, limit)}
		}
		return nil, false, &Error{Code: CodeTooLarge, Message: fmt.Sprintf(
			"the %s request is %d bytes as JSON; this client writes frames of at most %d bytes",
			req.Op, len(b), maxWriteFrame)}
	}
	cl := &call{reply: make(chan *protocol.Frame, 1), apply: apply, size: len(b)}
	cn.mu.Lock()
	if cn.gone {
		cn.mu.Unlock()
		return nil, false, errConnLost
	}
	cn.pending[id] = cl
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		delete(cn.pending, id)
		cn.mu.Unlock()
	}()
	received := func(f *protocol.Frame) (*protocol.Frame, bool, error) {
		if cl.err != nil {
			return nil, true, cl.err
		}
		if err := replyError(f); err != nil {
			return nil, true, err
		}
		return f, true, nil
	}
	if err := cn.write(b); err != nil {
		// A node that closes the socket (1009) at the header of a frame
		// over its hard limit may do so while the frame is still being
		// written. If the socket's end says so, the frame must fail with
		// too_large rather than be sent again; the read loop reports the
		// end promptly, since a failed write closes the connection.
		wait := time.NewTimer(time.Second)
		defer wait.Stop()
		select {
		case <-cn.ctx.Done():
		case <-wait.C:
		case <-ctx.Done():
		}
		select {
		case f := <-cl.reply:
			return received(f)
		default:
		}
		// A frame is applied only once it arrived whole, and a failed
		// write did not hand all of it to the kernel.
		return nil, false, errConnLost
	}
	select {
	case f := <-cl.reply:
		return received(f)
	case <-cn.ctx.Done():
		select {
		case f := <-cl.reply:
			return received(f)
		default:
		}
		if c.ctx.Err() != nil {
			return nil, true, c.fatalErr()
		}
		return nil, true, errConnLost
	case <-ctx.Done():
		return nil, true, ctx.Err()
	}
}

// dispatch handles one text frame on the socket's read goroutine. It never
// blocks: replies go to buffered channels and events to subscription
// queues.
func (c *Client) dispatch(cn *conn, b []byte) {
	var f protocol.Frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.log.Warn("herald: unreadable frame", "url", cn.url, "err", err)
		// Fail the request it answers, if that much can be read, rather
		// than leave it waiting.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(b, &idOnly) == nil {
			if id, ok := protocol.ParseID(idOnly.ID); ok {
				cn.deliver(id, &protocol.Frame{OK: true}, &Error{Code: CodeInternal, Retryable: true,
					Message: fmt.Sprintf("unreadable reply: %v", err)})
			}
		}
		return
	}
	if f.Ev != "" {
		c.push(cn, &f)
		return
	}
	id, ok := protocol.ParseID(f.ID)
	if !ok {
		// Replies to frames the node could not attribute (id null).
		c.log.Warn("herald: reply to no request of this client", "url", cn.url, "id", string(f.ID), "err", replyError(&f))
		return
	}
	cn.deliver(id, &f, nil)
}

func (cn *conn) deliver(id uint64, f *protocol.Frame, err error) {
	cn.mu.Lock()
	cl := cn.pending[id]
	delete(cn.pending, id)
	cn.mu.Unlock()
	if cl == nil {
		return // its caller stopped waiting
	}
	cl.err = err
	if err == nil && f.OK && cl.apply != nil {
		cl.err = cl.apply(f)
	}
	cl.reply <- f
}

// gwsLogger sends gws's own complaints to the client's logger.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Warn("herald: websocket", "detail", fmt.Sprint(v...)) }
