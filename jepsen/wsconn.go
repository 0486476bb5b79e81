package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
	"github.com/lxzan/gws"
)

// The harness speaks herald.v1 frame by frame rather than through package
// client: a history needs every attempt with its own outcome, where the
// client hides retries and reconnections on purpose.

var (
	// errConnLost: the socket died with the request unanswered.
	errConnLost = errors.New("connection lost")
	// errTimeout: no reply within the harness's own bound.
	errTimeout = errors.New("timeout")
)

// code is a reply's error code, "" for success.
func replyCode(f *protocol.Frame) string {
	if e := f.Err(); e != nil {
		return e.Code
	}
	return ""
}

// dataValue turns an event's data back into the value the harness
// published (a JSON string); anything else is kept as its JSON text, so
// a value nobody sent still shows up as unexpected.
func dataValue(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func events(f *protocol.Frame) []Ev {
	evs := make([]Ev, len(f.Events))
	for i, e := range f.Events {
		evs[i] = Ev{Seq: e.Seq, Type: evType(e.Type), Member: e.Member}
		if evs[i].Type == "" {
			evs[i].Value = dataValue(e.Data)
		}
	}
	return evs
}

// evType keeps non-message types only, to keep histories small.
func evType(t string) string {
	if t == "message" {
		return ""
	}
	return t
}

// wsConn is one herald.v1 socket: requests matched to replies by id,
// pushes on a channel.
type wsConn struct {
	node string
	conn *gws.Conn

	// mu guards nextID, pending and closed.
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *protocol.Frame
	closed  bool

	pushes chan *protocol.Frame
	done   chan struct{}
}

type wsHandler struct {
	gws.BuiltinEventHandler
	c *wsConn
}

func (h wsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	f := new(protocol.Frame)
	if json.Unmarshal(m.Bytes(), f) != nil {
		return
	}
	c := h.c
	if f.Ev != "" {
		// Blocking here stalls the socket's reads, which is what a slow
		// reader does; subscribers drain their pushes continuously.
		select {
		case c.pushes <- f:
		case <-c.done:
		}
		return
	}
	id, ok := protocol.ParseID(f.ID)
	if !ok {
		return
	}
	c.mu.Lock()
	ch := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- f
	}
}

func (h wsHandler) OnClose(*gws.Conn, error) { h.c.shutdown() }

func (c *wsConn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
}

// dialWS opens a socket to a node's client address and authenticates as
// user (the nodes run with insecure auth).
func dialWS(ctx context.Context, node, addr, user string, timeout time.Duration) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &wsConn{node: node, pending: map[uint64]chan *protocol.Frame{}, pushes: make(chan *protocol.Frame, 4096), done: make(chan struct{})}
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	conn, _, err := gws.NewClientFromConn(wsHandler{c: c}, &gws.ClientOption{
		Addr:               "ws://" + addr + "/ws",
		RequestHeader:      http.Header{"Sec-WebSocket-Protocol": []string{protocol.Subprotocol}},
		ReadMaxPayloadSize: 64 << 20,
		HandshakeTimeout:   timeout,
	}, nc)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c.conn = conn
	go conn.ReadLoop()
	f, err := c.call(ctx, &protocol.Request{Op: protocol.OpAuth, User: user}, timeout)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("auth: %w", err)
	}
	if e := f.Err(); e != nil {
		c.close()
		return nil, fmt.Errorf("auth: %w", e)
	}
	return c, nil
}

// call sends req and waits for its reply, the socket's end or timeout.
func (c *wsConn) call(ctx context.Context, req *protocol.Request, timeout time.Duration) (*protocol.Frame, error) {
	ch := make(chan *protocol.Frame, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errConnLost
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	req.ID = protocol.NumericID(id)
	b, _ := json.Marshal(req)
	if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		c.close()
		return nil, errConnLost
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-ch:
		return f, nil
	case <-c.done:
		// A reply may have raced the close.
		select {
		case f := <-ch:
			return f, nil
		default:
		}
		return nil, errConnLost
	case <-t.C:
		return nil, errTimeout
	case <-ctx.Done():
		return nil, errTimeout
	}
}

// close drops the socket at once, without a close handshake: to the node
// it looks like a client that went away.
func (c *wsConn) close() {
	if c.conn != nil {
		_ = c.conn.NetConn().Close()
	}
	c.shutdown()
}

// errorCode names a failed call for the history.
func errorCode(err error) string {
	switch {
	case errors.Is(err, errConnLost):
		return "conn"
	case errors.Is(err, errTimeout):
		return "timeout"
	}
	s := err.Error()
	if strings.Contains(s, "connection refused") {
		return "refused"
	}
	return "dial"
}
