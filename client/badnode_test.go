package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/eventually"
)

// badNode is a websocket server that answers with whatever reply tells it
// to, for what no real node would send.
type badNode struct {
	gws.BuiltinEventHandler
	reply func(conn *gws.Conn, req map[string]any)
	// maxPayload, if set, is the largest frame the node reads; a bigger
	// one closes the socket with 1009. The node tells no limits at auth,
	// as nodes before the auth reply's limits did not.
	maxPayload int

	mu   sync.Mutex
	reqs []map[string]any
}

func (n *badNode) OnMessage(conn *gws.Conn, m *gws.Message) {
	defer m.Close()
	var req map[string]any
	if err := json.Unmarshal(m.Bytes(), &req); err != nil {
		return
	}
	n.mu.Lock()
	n.reqs = append(n.reqs, req)
	n.mu.Unlock()
	if req["op"] == "auth" {
		send(conn, `{"id":`+jsonString(req["id"])+`,"ok":true,"user":"alice","node":"bad"}`)
		return
	}
	n.reply(conn, req)
}

func (n *badNode) requests(op string) []map[string]any {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []map[string]any
	for _, r := range n.reqs {
		if r["op"] == op {
			out = append(out, r)
		}
	}
	return out
}

func send(conn *gws.Conn, frame string) { _ = conn.WriteMessage(gws.OpcodeText, []byte(frame)) }

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func startBadNode(t *testing.T, n *badNode) string {
	up := gws.NewUpgrader(n, &gws.ServerOption{SubProtocols: []string{"herald.v1"}, ReadMaxPayloadSize: n.maxPayload})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		go conn.ReadLoop()
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// Frames no node should send (not JSON, wrong types, unknown fields and
// pushes, binary) are ignored or fail only the request they answer; a
// publish whose reply was unreadable is repeated with the same key.
func TestBadFramesFromNode(t *testing.T) {
	n := &badNode{}
	n.reply = func(conn *gws.Conn, req map[string]any) {
		id := jsonString(req["id"])
		switch req["op"] {
		case "publish":
			_ = conn.WriteMessage(gws.OpcodeBinary, []byte{0, 1, 2})
			send(conn, `not json`)
			send(conn, `[1,2,3]`)
			send(conn, `{"ev":"event","room":"r","epoch":"not a number","seq":1}`)
			send(conn, `{"ev":"something new","room":"r"}`)
			send(conn, `{"id":"not ours","ok":true}`)
			send(conn, `{"id":null,"ok":false,"error":{"code":"bad_request","message":"?"}}`)
			if len(n.requests("publish")) == 1 {
				send(conn, `{"id":`+id+`,"ok":true,"seq":"seven"}`)
				return
			}
			send(conn, `{"id":`+id+`,"ok":true,"seq":7,"epoch":"3","duplicate":true,"new_field":{"x":1}}`)
		case "history":
			send(conn, `{"id":`+id+`,"ok":false,"error":"a string, not an object"}`)
		case "members":
			send(conn, `{"id":`+id+`,"ok":false}`)
		}
	}
	url := startBadNode(t, n)
	cl := dial(t, "alice", url)
	ctx := eventually.Within(t, 10*time.Second)

	res, err := cl.Publish(ctx, "r", "hi")
	if err != nil || res.Seq != 7 || !res.Duplicate || res.Epoch != "3" {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	pubs := n.requests("publish")
	if len(pubs) != 2 || pubs[0]["key"] != pubs[1]["key"] || pubs[0]["key"] == "" {
		t.Fatalf("publish attempts: %v", pubs)
	}

	// Errors in unexpected shapes still fail the request, as retryable
	// internal errors, so reads retry until their context ends.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = cl.History(short, "r", 0, 0)
	var he *client.Error
	if !errors.As(err, &he) || he.Code != client.CodeInternal || !strings.Contains(he.Message, "a string, not an object") ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("history: %v", err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := cl.Members(short, "r"); !errors.Is(err, client.ErrInternal) {
		t.Fatalf("members: %v", err)
	}
	if cl.Node() != "bad" {
		t.Fatalf("the client left the node: %q", cl.Node())
	}
}

// A frame the node closes the socket for (1009, over its hard limit) fails
// its request with too_large instead of being sent again on every new
// socket: a node that does not tell its limits at auth cannot be checked
// against beforehand, so the close is the only answer the client gets.
// That holds whether the close comes after the frame was written (small)
// or while it is still being written (megabytes).
func TestFrameClosedWith1009IsNotResent(t *testing.T) {
	n := &badNode{maxPayload: 4096}
	n.reply = func(conn *gws.Conn, req map[string]any) {
		if req["op"] == "publish" {
			send(conn, `{"id":`+jsonString(req["id"])+`,"ok":true,"seq":1,"epoch":"1"}`)
		}
	}
	url := startBadNode(t, n)
	var mu sync.Mutex
	var closes []uint16
	cl := dialOpts(t, client.Config{URLs: []string{url}, User: "alice", OnState: func(s client.StateChange) {
		if s.State == client.Disconnected {
			mu.Lock()
			closes = append(closes, s.CloseCode)
			mu.Unlock()
		}
	}})
	publish := func(ctx context.Context, size int) error {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			_, err := cl.Publish(ctx, "r", strings.Repeat("x", size))
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(45 * time.Second):
			// Encoding and writing megabytes under the race detector on a
			// busy machine takes seconds; a resend loop shows up in the
			// close count checked below, and as a hang here.
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("publish of %d bytes still going after 45s; sockets closed with %v", size, closes)
			return nil
		}
	}

	for i, size := range []int{5 * 4096, 8 << 20, 20 << 20} {
		err := publish(context.Background(), size)
		var he *client.Error
		if !errors.As(err, &he) || he.Code != client.CodeTooLarge || he.Retryable {
			t.Fatalf("publish of %d bytes: %v, want too_large", size, err)
		}
		// The client reconnects, for its other requests, and sends
		// nothing more of the oversized publish.
		if err := publish(eventually.Within(t, 10*time.Second), 10); err != nil {
			t.Fatalf("publish after the %d bytes: %v", size, err)
		}
		if pubs := n.requests("publish"); len(pubs) != i+1 {
			t.Fatalf("the node read %d publishes, want %d", len(pubs), i+1)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The last frame is over what the client writes at all: it fails
	// before it costs a socket.
	if !slices.Equal(closes, []uint16{1009, 1009}) {
		t.Fatalf("sockets closed with %v, want two 1009", closes)
	}
	if auths := n.requests("auth"); len(auths) != 3 {
		t.Fatalf("%d connections, want 3", len(auths))
	}
}

// A node that takes the client's own re-join or re-subscribe after a
// reconnection and never answers it does not hold them for good: each is
// sent again after RequestTimeout. The node's pings keep such a socket
// alive, and the re-join held the room's lock, so the application's own
// Leave of the room waited too.
func TestUnansweredRejoinAndResubscribeAreSentAgain(t *testing.T) {
	n := &badNode{}
	var mu sync.Mutex
	conns := map[*gws.Conn]map[string]int{} // per socket, the requests of each op
	var first *gws.Conn
	n.reply = func(conn *gws.Conn, req map[string]any) {
		op, _ := req["op"].(string)
		mu.Lock()
		if conns[conn] == nil {
			conns[conn] = map[string]int{}
			if first == nil {
				first = conn
			}
		}
		conns[conn][op]++
		// On the second socket, the first join and the first subscribe
		// go unanswered.
		silent := conn != first && conns[conn][op] == 1 && (op == "join" || op == "subscribe")
		mu.Unlock()
		id := jsonString(req["id"])
		switch {
		case silent:
		case op == "join" || op == "leave":
			send(conn, `{"id":`+id+`,"ok":true,"seq":1,"epoch":"1"}`)
		case op == "subscribe":
			send(conn, `{"id":`+id+`,"ok":true,"epoch":"1","first_seq":1,"last_seq":0}`)
		}
	}
	url := startBadNode(t, n)
	cl := dialOpts(t, client.Config{URLs: []string{url}, User: "alice", RequestTimeout: 300 * time.Millisecond})
	ctx := eventually.Within(t, 10*time.Second)
	if _, err := cl.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	sub, err := cl.Subscribe(ctx, "s", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	mu.Lock()
	_ = first.NetConn().Close()
	mu.Unlock()
	asked := func(op string) int {
		mu.Lock()
		defer mu.Unlock()
		for c, ops := range conns {
			if c != first {
				return ops[op]
			}
		}
		return 0
	}
	eventually.True(t, 5*time.Second, "the unanswered re-join and re-subscribe sent again",
		func() bool { return asked("join") >= 2 && asked("subscribe") >= 2 })
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := cl.Leave(lctx, "r"); err != nil {
		t.Fatalf("leave after the unanswered re-join: %v", err)
	}
}
