package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/client"
)

// badNode is a websocket server that answers with whatever reply tells it
// to, for what no real node would send.
type badNode struct {
	gws.BuiltinEventHandler
	reply func(conn *gws.Conn, req map[string]any)

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
	up := gws.NewUpgrader(n, &gws.ServerOption{SubProtocols: []string{"herald.v1"}})
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
	ctx := timeout(t, 10*time.Second)

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
