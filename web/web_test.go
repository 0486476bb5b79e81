package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	heraldjs "github.com/heraldhq/herald/client/js"
	"github.com/heraldhq/herald/multiraft/meta"
)

func get(t *testing.T, h http.Handler, target, host string, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if host != "" {
		r.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMountServesThePagesAndTheClient(t *testing.T) {
	mux := http.NewServeMux()
	// The routes a node's client port already has must not clash.
	mux.HandleFunc("GET /ws", func(http.ResponseWriter, *http.Request) {})
	mux.Handle("/admin/v1/", http.NotFoundHandler())
	Mount(mux, nil)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `src="/assets/chat.js"`},
		{"/call", "text/html", `src="/assets/call.js"`},
		{"/herald.js", "text/javascript", "export class Herald"},
		{"/herald.d.ts", "text/plain", "export class Herald"},
		{"/assets/chat.js", "text/javascript", "from '/herald.js'"},
		{"/assets/call.js", "text/javascript", "expectSeq"},
		{"/assets/common.js", "text/javascript", "discoverNodes"},
		{"/assets/style.css", "text/css", ".indicator"},
	} {
		res := get(t, mux, tc.path, "")
		b := body(t, res)
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", tc.path, res.StatusCode)
			continue
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("%s: content type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(b, tc.contains) {
			t.Errorf("%s: body lacks %q", tc.path, tc.contains)
		}
		if res.Header.Get("ETag") == "" || res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no ETag or CSP", tc.path)
		}
		again := get(t, mux, tc.path, "", "If-None-Match", res.Header.Get("ETag"))
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("%s: revalidation got %d, want 304", tc.path, again.StatusCode)
		}
	}
	if b := body(t, get(t, mux, "/herald.js", "")); b != heraldjs.Source {
		t.Error("/herald.js is not the client's source")
	}
	for _, p := range []string{"/nope", "/assets/nope.js", "/assets/"} {
		if res := get(t, mux, p, ""); res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", p, res.StatusCode)
		}
	}
}

// Both pages come in the shared frame: their own title and script, the
// connection header common.js needs, the connection log, and the nav
// marking the page itself.
func TestPagesShareTheFrame(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux, nil)
	for _, tc := range []struct{ path, name, current string }{
		{"/", "chat", `<a href="/" aria-current="page">Chat</a> <a href="/call">Call</a>`},
		{"/call", "call", `<a href="/">Chat</a> <a href="/call" aria-current="page">Call</a>`},
	} {
		b := body(t, get(t, mux, tc.path, ""))
		for _, want := range []string{
			"<!doctype html>", "<title>Herald " + tc.name + "</title>", `src="/assets/` + tc.name + `.js"`, tc.current,
			`id="conn"`, `id="conn-text"`, `id="node-select"`, `id="switch-form"`, `<ol id="connlog"></ol>`, "</html>\n",
		} {
			if !strings.Contains(b, want) {
				t.Errorf("%s lacks %q", tc.path, want)
			}
		}
		if strings.Contains(b, "{{") {
			t.Errorf("%s holds template text", tc.path)
		}
	}
}

func TestNodesJSON(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux, func() []Node {
		return []Node{{ID: "n1", Addr: "10.0.0.1:7071"}, {ID: "n2", Addr: "0.0.0.0:7072"}, {ID: "n3", Addr: "[::]:7073"}}
	})
	res := get(t, mux, "/nodes.json", "chat.example.org:7071")
	var got struct{ Nodes []Node }
	if err := json.Unmarshal([]byte(body(t, res)), &got); err != nil {
		t.Fatal(err)
	}
	want := []Node{{"n1", "10.0.0.1:7071"}, {"n2", "chat.example.org:7072"}, {"n3", "chat.example.org:7073"}}
	if len(got.Nodes) != len(want) {
		t.Fatalf("nodes %v, want %v", got.Nodes, want)
	}
	for i := range want {
		if got.Nodes[i] != want[i] {
			t.Errorf("node %d: %v, want %v", i, got.Nodes[i], want[i])
		}
	}

	empty := http.NewServeMux()
	Mount(empty, nil)
	if b := body(t, get(t, empty, "/nodes.json", "")); strings.TrimSpace(b) != `{"nodes":[]}` {
		t.Errorf("without nodes: %s", b)
	}
}

type fakeHost struct{ st *meta.ClusterState }

func (h fakeHost) Cluster() *meta.ClusterState { return h.st }

func TestClusterNodes(t *testing.T) {
	st := &meta.ClusterState{ClusterID: "c", Nodes: map[string]*meta.NodeInfo{
		"n3": {ID: "n3", ClientAddr: "h3:1", State: meta.NodeActive},
		"n1": {ID: "n1", ClientAddr: "h1:1", State: meta.NodeActive},
		"n2": {ID: "n2", ClientAddr: "h2:1", State: meta.NodeDecommissioning},
		"n4": {ID: "n4", State: meta.NodeActive},
	}}
	got := ClusterNodes(fakeHost{st})()
	want := []Node{{"n1", "h1:1"}, {"n3", "h3:1"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := ClusterNodes(fakeHost{})(); got != nil {
		t.Errorf("without a cluster: %v", got)
	}
}
