package metrics_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// wsClient speaks raw herald.v1 frames over a real websocket.
type wsClient struct {
	t      testing.TB
	conn   *gws.Conn
	frames chan []byte
	nextID atomic.Int64
	closed chan struct{}

	mu      sync.Mutex
	pending []obj // frames read while waiting for another one
}

type obj = map[string]any

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

func (h frameHandler) OnClose(*gws.Conn, error) { close(h.c.closed) }

// login dials and authenticates in insecure mode.
func login(t testing.TB, url, user string) *wsClient {
	t.Helper()
	c := &wsClient{t: t, frames: make(chan []byte, 1<<12), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(frameHandler{c: c}, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    http.Header{"Sec-WebSocket-Protocol": []string{"herald.v1"}},
		HandshakeTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	c.mustOK(c.call("auth", obj{"user": user}))
	return c
}

func (c *wsClient) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// call sends a request and returns its reply.
func (c *wsClient) call(op string, fields obj) obj {
	c.t.Helper()
	id := c.nextID.Add(1)
	req := obj{"id": id, "op": op}
	for k, v := range fields {
		req[k] = v
	}
	b, _ := json.Marshal(req)
	c.sendRaw(b)
	f, err := c.wait(func(f obj) bool { _, push := f["ev"]; return !push && f["id"] == float64(id) }, 20*time.Second)
	if err != nil {
		c.t.Fatalf("waiting for reply %d: %v", id, err)
	}
	return f
}

// event returns the next event push.
func (c *wsClient) event(timeout time.Duration) obj {
	c.t.Helper()
	f, err := c.wait(func(f obj) bool { return f["ev"] == "event" }, timeout)
	if err != nil {
		c.t.Fatalf("waiting for an event: %v", err)
	}
	return f
}

// wait returns the first frame, kept or new, that match accepts.
func (c *wsClient) wait(match func(obj) bool, timeout time.Duration) (obj, error) {
	c.mu.Lock()
	for i, f := range c.pending {
		if match(f) {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.mu.Unlock()
			return f, nil
		}
	}
	c.mu.Unlock()
	deadline := time.After(timeout)
	for {
		var b []byte
		select {
		case b = <-c.frames:
		case <-c.closed:
			return nil, errors.New("socket closed")
		case <-deadline:
			return nil, errors.New("timed out")
		}
		var f obj
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("server sent invalid JSON %q: %v", b, err)
		}
		if match(f) {
			return f, nil
		}
		c.mu.Lock()
		c.pending = append(c.pending, f)
		c.mu.Unlock()
	}
}

func (c *wsClient) mustOK(r obj) obj {
	c.t.Helper()
	if r["ok"] != true {
		c.t.Fatalf("request failed: %v", r)
	}
	return r
}

func (c *wsClient) close() { _ = c.conn.NetConn().Close() }

func errCode(r obj) string {
	e, _ := r["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// rawConn is a websocket client that never reads, to play a consumer that
// falls behind.
type rawConn struct{ conn net.Conn }

func dialRaw(t *testing.T, base string) *rawConn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	// A small receive buffer makes the socket fall behind sooner.
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(key))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &rawConn{conn: conn}
}

// send writes one masked text frame, as clients must.
func (c *rawConn) send(t *testing.T, text string) {
	t.Helper()
	frame := []byte{0x81}
	n := len(text)
	switch {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	default:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	}
	mask := []byte{1, 2, 3, 4}
	frame = append(frame, mask...)
	for i := range n {
		frame = append(frame, text[i]^mask[i%4])
	}
	if _, err := c.conn.Write(frame); err != nil {
		t.Fatal(err)
	}
}
