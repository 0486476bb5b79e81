package wsfront_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/wsfront"
)

// A node full of sockets refuses more with 503, and keeps answering
// /readyz, the admin API and /metrics; closing a socket lets a new one in.
// Filling it warns once, not once per socket.
func TestNodeSocketLimit(t *testing.T) {
	const limit = 20
	lim := wsfront.DefaultLimits()
	lim.MaxSockets = limit
	logs := &logBuffer{}
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Groups: 2, Limits: &lim,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	const adminToken = "admin-secret"
	c.Node(0).Front().Handle(admin.Prefix, admin.Handler(c.Node(0), admin.Options{Token: adminToken}))
	if got := c.Node(0).Front().MaxSockets(); got != limit {
		t.Fatalf("MaxSockets() = %d, want %d", got, limit)
	}

	socks := make([]*wstest.Client, 0, limit)
	for i := range limit {
		socks = append(socks, wstest.Login(t, c.URL(0), fmt.Sprintf("u%d", i)))
	}
	const refusals = 3
	for range refusals {
		status, body, closes := upgrade(t, c.URL(0), "")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "maximum of 20 websockets") || !closes {
			t.Fatalf("upgrade on a full node: %d %q (connection close: %v), want 503 naming the limit", status, body, closes)
		}
	}
	socks[limit-1].MustOK(socks[limit-1].Call("ping", nil))

	if status, body := get(t, c.HTTP(0)+"/readyz", ""); status != http.StatusOK {
		t.Fatalf("/readyz on a full node: %d %s", status, body)
	}
	if status, body := get(t, c.HTTP(0)+admin.Prefix+"status", adminToken); status != http.StatusOK {
		t.Fatalf("admin status on a full node: %d %s", status, body)
	}
	_, m := get(t, c.HTTP(0)+"/metrics", "")
	for _, want := range []string{
		fmt.Sprintf(`herald_ws_sockets_refused_total{reason="max_sockets"} %d`, refusals),
		fmt.Sprintf("herald_ws_sockets_max %d", limit),
		fmt.Sprintf("herald_ws_sockets_open %d", limit),
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if n := logs.count("socket limits"); n != 1 {
		t.Fatalf("%d warnings about socket limits, want 1 (rate-limited):\n%s", n, logs.String())
	}

	_ = socks[0].Conn.WriteClose(1000, nil)
	eventually.Nil(t, 10*time.Second, "a socket once one closed", func() error {
		s, err := wstest.TryDial(t, c.URL(0))
		if err != nil {
			return err
		}
		s.MustOK(s.Call("auth", wstest.Obj{"user": "late"}))
		return nil
	})
}

// Sockets beyond MaxSocketsPerIP from one address are refused with 429;
// other addresses are not affected.
func TestSocketLimitPerIP(t *testing.T) {
	requireLoopbackAlias(t, "127.0.0.2")
	lim := wsfront.DefaultLimits()
	lim.MaxSocketsPerIP = 3
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Groups: 2, Limits: &lim})
	var fromTwo []*wstest.Client
	for i := range lim.MaxSocketsPerIP {
		s, err := wstest.TryDialFrom(t, c.URL(0), "127.0.0.2")
		if err != nil {
			t.Fatalf("socket %d from 127.0.0.2: %v", i, err)
		}
		s.MustOK(s.Call("auth", wstest.Obj{"user": fmt.Sprintf("u%d", i)}))
		fromTwo = append(fromTwo, s)
	}
	status, body, closes := upgrade(t, c.URL(0), "127.0.0.2")
	if status != http.StatusTooManyRequests || !strings.Contains(body, "your address holds its maximum of 3") || !closes {
		t.Fatalf("4th socket from one address: %d %q (connection close: %v), want 429 naming the limit", status, body, closes)
	}
	other, err := wstest.TryDialFrom(t, c.URL(0), "127.0.0.3")
	if err != nil {
		t.Fatalf("socket from another address: %v", err)
	}
	other.MustOK(other.Call("auth", wstest.Obj{"user": "other"}))

	_ = fromTwo[0].Conn.WriteClose(1000, nil)
	eventually.Nil(t, 10*time.Second, "a socket from the address once one closed", func() error {
		_, err := wstest.TryDialFrom(t, c.URL(0), "127.0.0.2")
		return err
	})
	if _, m := get(t, c.HTTP(0)+"/metrics", ""); !strings.Contains(m, `herald_ws_sockets_refused_total{reason="per_ip"}`) {
		t.Errorf("/metrics counts no per_ip refusal")
	}
}

// The user is known at auth: an auth beyond MaxSocketsPerUser is answered
// limit_exceeded and its socket closed with 4029. Authenticating again on a
// counted socket does not count twice; closing one lets a new one in.
func TestSocketLimitPerUser(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxSocketsPerUser = 2
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Groups: 2, Limits: &lim})
	a1 := wstest.Login(t, c.URL(0), "alice")
	a2 := wstest.Login(t, c.URL(0), "alice")
	a1.MustOK(a1.Call("auth", wstest.Obj{"user": "alice"}))

	a3 := wstest.Dial(t, c.URL(0))
	a3.MustOK(a3.Call("ping", nil)) // unauthenticated, the socket is fine
	r := a3.Call("auth", wstest.Obj{"user": "alice"})
	if wstest.ErrCode(r) != "limit_exceeded" || !strings.Contains(fmt.Sprint(r["error"]), "maximum of 2 sockets") {
		t.Fatalf("3rd auth of one user: %v, want limit_exceeded naming the limit", r)
	}
	if code := a3.CloseCode(5 * time.Second); code != 4029 {
		t.Fatalf("refused socket closed with %d, want 4029", code)
	}
	wstest.Login(t, c.URL(0), "bob")
	a2.MustOK(a2.Call("ping", nil))

	_ = a1.Conn.WriteClose(1000, nil)
	eventually.Nil(t, 10*time.Second, "an auth of the user once one socket closed", func() error {
		s := wstest.Dial(t, c.URL(0))
		if r := s.Call("auth", wstest.Obj{"user": "alice"}); r["ok"] != true {
			return fmt.Errorf("auth: %v", r)
		}
		return nil
	})
	_, m := get(t, c.HTTP(0)+"/metrics", "")
	for _, want := range []string{`herald_ws_sockets_refused_total{reason="per_user"}`, `herald_ws_server_closes_total{code="4029"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// upgrade asks for a websocket from the local address from ("" for any)
// and returns the answer's status and body, and whether the node closes the
// connection after it.
func upgrade(t *testing.T, wsURL, from string) (status int, body string, closes bool) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http"+strings.TrimPrefix(wsURL, "ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", wsfront.Subprotocol)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("upgrade request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, "", false
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Close
}

func get(t *testing.T, url, bearer string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// requireLoopbackAlias skips the test where the loopback interface does
// not answer for ip (every 127/8 address does on Linux).
func requireLoopbackAlias(t *testing.T, ip string) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Skipf("loopback address %s unavailable: %v", ip, err)
	}
	_ = l.Close()
}

// logBuffer collects a node's log lines; safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(substr string) int { return strings.Count(b.String(), substr) }
