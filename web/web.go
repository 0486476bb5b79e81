// Package web serves the pages every node can offer on its client port: a
// chat demo at / and a WebRTC signaling demo at /call, both built on the
// JavaScript client (client/js) served at /herald.js. The pages need no
// build step: plain HTML (the frame both share is filled in once, at
// Mount), CSS and ES modules, embedded in the binary.
//
// A page connects to its own node first and learns the others from
// /nodes.json, so it can fail over to them when its node dies.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	heraldjs "github.com/heraldhq/herald/client/js"
	"github.com/heraldhq/herald/multiraft/meta"
)

//go:embed pages assets
var files embed.FS

// pages are the page templates: index.html, call.html and the layout.html
// they share.
var pages = template.Must(template.ParseFS(files, "pages/*.html"))

// Node is one node as the pages offer it to the user.
type Node struct {
	ID string `json:"id"`
	// Addr is the node's client address, host:port; the page adds ws://
	// or wss:// (as its own scheme) and /ws.
	Addr string `json:"addr"`
}

// Mux is where Mount adds its routes: an *http.ServeMux, or a node's
// client port (herald.Node.Front()).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Mount adds the pages to mux: / (chat), /call (WebRTC signaling),
// /herald.js and /herald.d.ts (the client), /assets/ (the pages' CSS and
// scripts) and /nodes.json (nodes' client addresses, from nodes, which may
// be nil for a page that knows only its own node).
func Mount(mux Mux, nodes func() []Node) {
	mux.Handle("GET /{$}", mustPage("index.html"))
	mux.Handle("GET /call", mustPage("call.html"))
	mux.Handle("GET /herald.js", newFile("herald.js", []byte(heraldjs.Source)))
	mux.Handle("GET /herald.d.ts", newFile("herald.d.ts", []byte(heraldjs.Types)))
	mux.Handle("GET /assets/", assets())
	mux.Handle("GET /nodes.json", nodesHandler(nodes))
}

// Cluster is what knows the cluster's nodes: a herald.Node's Host().
type Cluster interface {
	Cluster() *meta.ClusterState
}

// ClusterNodes lists, sorted by id, the nodes of the cluster that host
// knows, leaving out those being decommissioned: they are about to go.
func ClusterNodes(host Cluster) func() []Node {
	return func() []Node {
		st := host.Cluster()
		if st == nil {
			return nil
		}
		var out []Node
		for _, n := range st.Nodes {
			if n.ClientAddr == "" || n.State == meta.NodeDecommissioning {
				continue
			}
			out = append(out, Node{ID: n.ID, Addr: n.ClientAddr})
		}
		slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
		return out
	}
}

// securityHeaders keep the pages to their own scripts and styles; sockets
// may go to any node (ws:, wss:).
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "+
		"style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// file is one embedded file, served with an ETag so that browsers
// revalidate cheaply and always get a new binary's version.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

func newFile(name string, body []byte) *file {
	sum := sha256.Sum256(body)
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js":
		// Module scripts need a JavaScript type whatever the system's
		// mime tables say.
		ctype = "text/javascript; charset=utf-8"
	case ".ts":
		ctype = "text/plain; charset=utf-8"
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	return &file{name: name, body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// mustPage renders the page template name.
func mustPage(name string) *file {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, nil); err != nil {
		panic("web: " + err.Error())
	}
	return newFile(name, b.Bytes())
}

func (f *file) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

// assets serves the files under assets/ at /assets/.
func assets() http.Handler {
	byPath := make(map[string]*file)
	err := fs.WalkDir(files, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		byPath["/"+p] = newFile(p, b)
		return nil
	})
	if err != nil {
		panic("web: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := byPath[r.URL.Path]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		f.ServeHTTP(w, r)
	})
}

// nodesHandler serves {"nodes": [{"id", "addr"}]}. A node listening on
// every interface records an unspecified host (0.0.0.0, [::]), which a
// browser cannot dial: it is replaced by the host the page was loaded from.
func nodesHandler(nodes func() []Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var list []Node
		if nodes != nil {
			list = nodes()
		}
		reqHost := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			reqHost = h
		}
		out := make([]Node, 0, len(list))
		for _, n := range list {
			if host, port, err := net.SplitHostPort(n.Addr); err == nil && reqHost != "" {
				if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
					n.Addr = net.JoinHostPort(reqHost, port)
				}
			}
			out = append(out, n)
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		_ = json.NewEncoder(w).Encode(map[string]any{"nodes": out})
	})
}
