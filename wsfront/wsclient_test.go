package wsfront_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// wsClient speaks raw herald.v1 frames over a real websocket, so tests see
// exactly what a client would.
type wsClient struct {
	t      testing.TB
	conn   *gws.Conn
	frames chan []byte
	nextID atomic.Int64

	mu       sync.Mutex
	pending  []map[string]any // pushes and replies read while waiting for another reply
	closed   chan struct{}
	closeErr error
}

type frameHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h frameHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := append([]byte(nil), m.Bytes()...)
	m.Close()
	select {
	case h.c.frames <- b:
	default:
		h.c.t.Errorf("test client buffer full: frame dropped")
	}
}

func (h frameHandler) OnClose(_ *gws.Conn, err error) {
	h.c.mu.Lock()
	h.c.closeErr = err
	h.c.mu.Unlock()
	close(h.c.closed)
}

func dialWS(t testing.TB, url string) *wsClient {
	t.Helper()
	c, err := tryDial(t, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func tryDial(t testing.TB, url string) (*wsClient, error) { return tryDialFrom(t, url, "") }

// tryDialFrom dials from the local IP address from ("" for any).
func tryDialFrom(t testing.TB, url, from string) (*wsClient, error) {
	c := &wsClient{t: t, frames: make(chan []byte, 1<<16), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(frameHandler{c: c}, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    http.Header{"Sec-WebSocket-Protocol": []string{"herald.v1"}},
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
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, nil
}

// login dials and authenticates in insecure mode.
func login(t testing.TB, url, user string) *wsClient {
	t.Helper()
	c := dialWS(t, url)
	c.mustOK(c.call("auth", obj{"user": user}))
	return c
}

type obj = map[string]any

func (c *wsClient) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// call sends a request and returns its reply; frames read meanwhile are
// kept for next.
func (c *wsClient) call(op string, fields obj) obj {
	c.t.Helper()
	id := c.nextID.Add(1)
	req := obj{"id": id, "op": op}
	for k, v := range fields {
		req[k] = v
	}
	b, _ := json.Marshal(req)
	c.sendRaw(b)
	return c.replyTo(float64(id), 20*time.Second)
}

func (c *wsClient) replyTo(id any, timeout time.Duration) obj {
	c.t.Helper()
	c.mu.Lock()
	for i, f := range c.pending {
		if _, isPush := f["ev"]; !isPush && f["id"] == id {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.mu.Unlock()
			return f
		}
	}
	c.mu.Unlock()
	deadline := time.After(timeout)
	for {
		f, err := c.read(deadline)
		if err != nil {
			c.t.Fatalf("waiting for reply %v: %v", id, err)
		}
		if _, isPush := f["ev"]; !isPush && f["id"] == id {
			return f
		}
		c.mu.Lock()
		c.pending = append(c.pending, f)
		c.mu.Unlock()
	}
}

func (c *wsClient) read(deadline <-chan time.Time) (obj, error) {
	select {
	case b := <-c.frames:
		var f obj
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("server sent invalid JSON %q: %v", b, err)
		}
		return f, nil
	case <-c.closed:
		select {
		case b := <-c.frames:
			var f obj
			err := json.Unmarshal(b, &f)
			return f, err
		default:
		}
		return nil, fmt.Errorf("socket closed: %v", c.closeErr)
	case <-deadline:
		return nil, errors.New("timed out")
	}
}

// next returns the next push (event or notice), in arrival order.
func (c *wsClient) next(timeout time.Duration) (obj, error) {
	c.mu.Lock()
	for i, f := range c.pending {
		if _, isPush := f["ev"]; isPush {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.mu.Unlock()
			return f, nil
		}
	}
	c.mu.Unlock()
	deadline := time.After(timeout)
	for {
		f, err := c.read(deadline)
		if err != nil {
			return nil, err
		}
		if _, isPush := f["ev"]; isPush {
			return f, nil
		}
		c.mu.Lock()
		c.pending = append(c.pending, f)
		c.mu.Unlock()
	}
}

// events collects n event pushes, failing on anything else.
func (c *wsClient) events(n int, timeout time.Duration) []obj {
	c.t.Helper()
	var out []obj
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		f, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		if f["ev"] != "event" {
			c.t.Fatalf("expected an event, got %v", f)
		}
		out = append(out, f)
	}
	return out
}

// quiet checks that no push arrives for d.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	if f, err := c.next(d); err == nil {
		c.t.Fatalf("unexpected push %v", f)
	}
}

// closeCode waits for the server to close the socket and returns its code.
func (c *wsClient) closeCode(timeout time.Duration) uint16 {
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

func (c *wsClient) mustOK(r obj) obj {
	c.t.Helper()
	if r["ok"] != true {
		c.t.Fatalf("request failed: %v", r)
	}
	return r
}

func errCode(r obj) string {
	e, _ := r["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func num(v any) uint64 {
	f, _ := v.(float64)
	return uint64(f)
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
