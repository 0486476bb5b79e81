// Package memcluster runs websocket fronts on loopback over an in-memory
// room layer (package rooms/roomstest): the real front, real sockets and
// the real state machine, without raft, peers or a data directory per
// node. It is for the unit tests of the front and the clients; what needs
// consensus, failover or restarts is tested on internal/testcluster's real
// nodes.
package memcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/rooms/roomstest"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Options configure a Cluster.
type Options struct {
	Nodes      int // default 3
	Groups     uint64
	Namespaces []fsm.Namespace
	// Auth is every front's (default: insecure, as internal/testcluster).
	Auth   *auth.Config
	Limits *wsfront.Limits
}

// Cluster is Nodes fronts over one in-memory room layer.
type Cluster struct {
	rooms  *roomstest.Cluster
	fronts []*wsfront.Server
	addrs  []string
}

// Start starts the fronts; t's cleanup stops them.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	authCfg := auth.Config{Insecure: true}
	if opts.Auth != nil {
		authCfg = *opts.Auth
	}
	limits := wsfront.DefaultLimits()
	if opts.Limits != nil {
		limits = *opts.Limits
	}
	c := &Cluster{rooms: roomstest.New(t, roomstest.Options{Groups: opts.Groups, Namespaces: opts.Namespaces})}
	for i := range opts.Nodes {
		// Each front reports to metrics of its own at /metrics, as a
		// node's does.
		m := metrics.New()
		front, err := wsfront.New(wsfront.Config{Backend: c.rooms.Node(fmt.Sprintf("n%d", i+1)), Auth: authCfg, Limits: limits, Observer: m})
		if err != nil {
			t.Fatal(err)
		}
		m.SetMaxSockets(front.MaxSockets())
		front.Handle("GET /metrics", m.Handler())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- front.Serve(ln) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := front.Shutdown(ctx); err != nil {
				t.Errorf("front %d: shutdown: %v", i+1, err)
			}
			if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("front %d: serve: %v", i+1, err)
			}
		})
		c.fronts = append(c.fronts, front)
		c.addrs = append(c.addrs, ln.Addr().String())
	}
	return c
}

// Len is the number of nodes.
func (c *Cluster) Len() int { return len(c.fronts) }

// URL is node i's websocket URL.
func (c *Cluster) URL(i int) string { return "ws://" + c.addrs[i] + "/ws" }

// HTTP is node i's client port base URL.
func (c *Cluster) HTTP(i int) string { return "http://" + c.addrs[i] }

// URLs are every node's websocket URLs.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.addrs))
	for i := range c.addrs {
		out[i] = c.URL(i)
	}
	return out
}

// Front is node i's websocket front.
func (c *Cluster) Front(i int) *wsfront.Server { return c.fronts[i] }

// Backend is node i's room layer, as its front sees it.
func (c *Cluster) Backend(i int) *roomstest.Node { return c.rooms.Node(fmt.Sprintf("n%d", i+1)) }

// Rooms is the room layer every node shares, to inject faults with.
func (c *Cluster) Rooms() *roomstest.Cluster { return c.rooms }
