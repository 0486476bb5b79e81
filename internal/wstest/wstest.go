// Package wstest is the websocket client of Herald's tests: it speaks raw
// herald.v1 frames over a real socket, so a test sees exactly what a
// client would, mistakes included.
//
// Frames are decoded into maps rather than protocol.Frame, so that a test
// can tell an absent field from a zero one and send what no well-behaved
// client sends. Client matches replies to requests and keeps the frames
// read while it waited for another one; RawConn writes and reads frames by
// hand, to play a client that falls behind or breaks the framing.
package wstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/protocol"
	"github.com/lxzan/gws"
)

// Obj is a JSON object: a request's fields, or a frame as the node sent it
// (numbers are float64).
type Obj = map[string]any

// replyTimeout bounds Call's wait for its reply.
const replyTimeout = 20 * time.Second

// Client is a herald.v1 socket of a test.
type Client struct {
	// Conn is the socket, for what the helpers do not cover (a close
	// frame, a binary frame).
	Conn *gws.Conn

	t      testing.TB
	frames chan []byte
	nextID atomic.Int64
	closed chan struct{}

	mu       sync.Mutex
	pending  []Obj // guarded by mu: pushes and replies read while waiting for another frame
	closeErr error // guarded by mu: why the socket ended, once closed is closed
}

type handler struct {
	gws.BuiltinEventHandler
	c *Client
}

func (h handler) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := append([]byte(nil), m.Bytes()...)
	m.Close()
	select {
	case h.c.frames <- b:
	default:
		h.c.t.Errorf("test client buffer full: frame dropped")
	}
}

func (h handler) OnClose(_ *gws.Conn, err error) {
	h.c.mu.Lock()
	h.c.closeErr = err
	h.c.mu.Unlock()
	close(h.c.closed)
}

// Dial opens a socket to url (ws://host:port/ws) offering herald.v1.
func Dial(t testing.TB, url string) *Client {
	t.Helper()
	c, err := TryDial(t, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// TryDial is Dial that returns the error, for tests that expect one.
func TryDial(t testing.TB, url string) (*Client, error) { return TryDialFrom(t, url, "") }

// TryDialFrom dials from the local IP address from ("" for any).
func TryDialFrom(t testing.TB, url, from string) (*Client, error) {
	c := &Client{t: t, frames: make(chan []byte, 1<<16), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(handler{c: c}, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    http.Header{"Sec-WebSocket-Protocol": []string{protocol.Subprotocol}},
		HandshakeTimeout: 5 * time.Second,
		NewDialer: func() (gws.Dialer, error) {
			d := &net.Dialer{Timeout: 5 * time.Second}
			if from != "" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
			}
			return d, nil
		},
	})
	if err != nil {
		return nil, err
	}
	c.Conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, nil
}

// Login dials and authenticates as user, which a node in insecure mode
// takes without a token.
func Login(t testing.TB, url, user string) *Client {
	t.Helper()
	c := Dial(t, url)
	c.MustOK(c.Call(protocol.OpAuth, Obj{"user": user}))
	return c
}

// Close drops the connection without a close handshake.
func (c *Client) Close() { _ = c.Conn.NetConn().Close() }

// SendRaw writes b as one text frame.
func (c *Client) SendRaw(b []byte) {
	c.t.Helper()
	if err := c.Conn.WriteMessage(gws.OpcodeText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// send writes a request of op with fields and a fresh numeric id, and
// returns the id as the reply carries it.
func (c *Client) send(op string, fields Obj) (float64, error) {
	id := c.nextID.Add(1)
	req := Obj{"id": id, "op": op}
	for k, v := range fields {
		req[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.t.Fatalf("encode %s: %v", op, err)
	}
	return float64(id), c.Conn.WriteMessage(gws.OpcodeText, b)
}

// Call sends a request and returns its reply; frames read meanwhile are
// kept for Next and later calls.
func (c *Client) Call(op string, fields Obj) Obj {
	c.t.Helper()
	r, err := c.TryCall(op, fields)
	if err != nil {
		c.t.Fatalf("%s: %v", op, err)
	}
	return r
}

// TryCall is Call that returns the error instead of failing the test:
// for sockets to nodes that a test stops.
func (c *Client) TryCall(op string, fields Obj) (Obj, error) {
	id, err := c.send(op, fields)
	if err != nil {
		return nil, err
	}
	return c.wait(func(f Obj) bool { return !isPush(f) && f["id"] == id }, replyTimeout)
}

// ReplyTo waits for the reply with id (a float64 for a numeric id, a
// string for a string one).
func (c *Client) ReplyTo(id any, timeout time.Duration) Obj {
	c.t.Helper()
	f, err := c.wait(func(f Obj) bool { return !isPush(f) && f["id"] == id }, timeout)
	if err != nil {
		c.t.Fatalf("waiting for reply %v: %v", id, err)
	}
	return f
}

// Read returns the next frame, reply or push.
func (c *Client) Read(timeout time.Duration) (Obj, error) {
	return c.wait(func(Obj) bool { return true }, timeout)
}

// Next returns the next push (event or notice), in arrival order.
func (c *Client) Next(timeout time.Duration) (Obj, error) { return c.wait(isPush, timeout) }

// Event returns the next event push, leaving other pushes for Next.
func (c *Client) Event(timeout time.Duration) Obj {
	c.t.Helper()
	f, err := c.wait(func(f Obj) bool { return f["ev"] == protocol.EvEvent }, timeout)
	if err != nil {
		c.t.Fatalf("waiting for an event: %v", err)
	}
	return f
}

// Events collects n event pushes, failing on any other push.
func (c *Client) Events(n int, timeout time.Duration) []Obj {
	c.t.Helper()
	var out []Obj
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		f, err := c.Next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		if f["ev"] != protocol.EvEvent {
			c.t.Fatalf("expected an event, got %v", f)
		}
		out = append(out, f)
	}
	return out
}

// Quiet checks that no push arrives for d.
func (c *Client) Quiet(d time.Duration) {
	c.t.Helper()
	if f, err := c.Next(d); err == nil {
		c.t.Fatalf("unexpected push %v", f)
	}
}

// CloseCode waits for the node to close the socket and returns the code
// of its close frame, 0 if it sent none.
func (c *Client) CloseCode(timeout time.Duration) uint16 {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(timeout):
		c.t.Fatalf("socket not closed within %v", timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce *gws.CloseError
	if errors.As(c.closeErr, &ce) {
		return ce.Code
	}
	return 0
}

// MustOK fails the test unless r is a successful reply, and returns it.
func (c *Client) MustOK(r Obj) Obj {
	c.t.Helper()
	if r["ok"] != true {
		c.t.Fatalf("request failed: %v", r)
	}
	return r
}

func isPush(f Obj) bool {
	_, push := f["ev"]
	return push
}

// wait returns the first frame, kept or new, that match accepts, and keeps
// the others.
func (c *Client) wait(match func(Obj) bool, timeout time.Duration) (Obj, error) {
	c.mu.Lock()
	for i, f := range c.pending {
		if match(f) {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.mu.Unlock()
			return f, nil
		}
	}
	c.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f, err := c.read(deadline.C)
		if err != nil {
			return nil, err
		}
		if match(f) {
			return f, nil
		}
		c.mu.Lock()
		c.pending = append(c.pending, f)
		c.mu.Unlock()
	}
}

// read returns the next frame off the socket; once the socket ended, the
// frames it read before still come first.
func (c *Client) read(deadline <-chan time.Time) (Obj, error) {
	var b []byte
	select {
	case b = <-c.frames:
	case <-c.closed:
		select {
		case b = <-c.frames:
		default:
			c.mu.Lock()
			defer c.mu.Unlock()
			return nil, fmt.Errorf("socket closed: %v", c.closeErr)
		}
	case <-deadline:
		return nil, errors.New("timed out")
	}
	var f Obj
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("server sent invalid JSON %q: %v", b, err)
	}
	return f, nil
}

// ErrCode is the error code of reply r, "" if it has none.
func ErrCode(r Obj) string {
	e, _ := r["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// Num reads a JSON number of a frame as an unsigned integer.
func Num(v any) uint64 {
	f, _ := v.(float64)
	return uint64(f)
}
