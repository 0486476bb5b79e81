// Package testcluster runs real Herald clusters inside a test process: each
// node a full herald.Node with its own data directory, raft groups, peer
// port and client port on loopback. Tests use it to talk to nodes over
// real websockets and to stop, crash and restart them.
package testcluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Options shape a test cluster; the zero value is 3 nodes, 8 groups of 3
// replicas, insecure auth and the default limits.
type Options struct {
	Nodes       int
	Groups      uint64
	Replication int
	Auth        *auth.Config
	Limits      *wsfront.Limits
	LeaseTTL    time.Duration
	// Logger receives every node's log (default: none).
	Logger *slog.Logger
	// Timing is the nodes' raft timing; nil means Timing().
	Timing *multiraft.Timing
	// PeerProxies puts a PeerProxy in front of every node's peer port, so
	// a test can cut the links into a node (Cluster.Proxy).
	PeerProxies bool
	// Namespaces are the namespace rules the cluster is bootstrapped with.
	Namespaces []fsm.Namespace
	// NoAppSettings founds the cluster without application settings, as a
	// release before namespaces did.
	NoAppSettings bool
	// LogStore is every node's raft log store ("": the default).
	LogStore logstore.Kind
}

// Cluster is a running test cluster.
type Cluster struct {
	t    testing.TB
	opts Options

	mu    sync.Mutex
	nodes []*herald.Node // nil while a node is stopped; guarded by mu once Start returns
	// cfgs and proxies are filled by Start, read-only after.
	cfgs    []herald.Config
	proxies []*PeerProxy // with Options.PeerProxies
}

// Timing is raft timing fast enough for tests on a loaded machine.
func Timing() multiraft.Timing {
	t := multiraft.DefaultTiming()
	t.HeartbeatTimeout = 300 * time.Millisecond
	t.ElectionTimeout = 300 * time.Millisecond
	t.LeaderLeaseTimeout = 150 * time.Millisecond
	t.CommitTimeout = 20 * time.Millisecond
	return t
}

// SlowConsumerLimits are front limits under which a socket that stops
// reading is soon closed as a slow consumer: a queue of 32 frames or
// 128 KiB, and a publish rate that does not hold the writer back.
func SlowConsumerLimits() *wsfront.Limits {
	lim := wsfront.DefaultLimits()
	lim.MaxQueueFrames = 32
	lim.MaxQueueBytes = 128 << 10
	lim.PublishRate = 10000
	lim.PublishBurst = 10000
	return &lim
}

// Start starts and bootstraps a cluster; it is stopped when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Groups == 0 {
		opts.Groups = 8
	}
	if opts.Replication == 0 {
		opts.Replication = min(3, opts.Nodes)
	}
	timing := Timing()
	if opts.Timing != nil {
		timing = *opts.Timing
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 3 * time.Second
	}
	authCfg := auth.Config{Insecure: true}
	if opts.Auth != nil {
		authCfg = *opts.Auth
	}
	limits := wsfront.DefaultLimits()
	if opts.Limits != nil {
		limits = *opts.Limits
	}
	// The directory is made before the cleanup is registered: cleanups run
	// last-in first-out, and the nodes must stop before it is removed.
	dir := t.TempDir()
	c := &Cluster{t: t, opts: opts}
	t.Cleanup(c.stopAll)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Every test cluster's peers authenticate, as production ones do.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	var peers []multiraft.Peer
	for i := range opts.Nodes {
		cfg := herald.Config{
			ClusterSecret: secret,
			NodeID:        fmt.Sprintf("n%d", i+1),
			DataDir:       filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			ClientAddr:    "127.0.0.1:0",
			PeerAddr:      "127.0.0.1:0",
			Auth:          authCfg,
			Limits:        limits,
			Timing:        timing,
			LeaseTTL:      opts.LeaseTTL,
			StopTimeout:   10 * time.Second,
			TickInterval:  time.Second,
			Logger:        opts.Logger,
			LogStore:      opts.LogStore,
		}
		if opts.PeerProxies {
			// The proxy must know its target before the node starts,
			// since the node advertises the proxy from its start.
			port, err := freePort()
			if err != nil {
				t.Fatalf("node %d: %v", i+1, err)
			}
			cfg.PeerAddr = port
			px, err := NewPeerProxy(port)
			if err != nil {
				t.Fatalf("node %d: proxy: %v", i+1, err)
			}
			t.Cleanup(px.Close)
			cfg.AdvertisePeerAddr = px.Addr()
			c.proxies = append(c.proxies, px)
		}
		n, err := herald.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", i+1, err)
		}
		// A restart must come back on the same ports.
		cfg.ClientAddr = n.URL()[len("http://"):]
		if !opts.PeerProxies {
			cfg.PeerAddr = n.PeerAddr()
		}
		c.nodes = append(c.nodes, n)
		c.cfgs = append(c.cfgs, cfg)
		peers = append(peers, multiraft.Peer{ID: cfg.NodeID, Addr: n.PeerAddr()})
	}
	settings, err := rooms.BootstrapSettings(opts.Namespaces)
	if err != nil {
		t.Fatal(err)
	}
	if opts.NoAppSettings {
		settings = nil
	}
	spec := multiraft.BootstrapSpec{ClusterID: "test", Nodes: peers, Groups: opts.Groups, Replication: opts.Replication,
		AppSettings: settings}
	errs := make(chan error, len(c.nodes))
	for _, n := range c.nodes {
		go func() { errs <- n.Bootstrap(ctx, spec) }()
	}
	for range c.nodes {
		if err := <-errs; err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	c.WaitReady()
	if len(opts.Namespaces) > 0 {
		c.WaitNamespaces(1)
	}
	return c
}

// WaitNamespaces waits until every data replica of every running node has
// applied namespace rules of at least revision rev. Group leaders carry
// the meta group's rules into their groups shortly after they change (or
// after bootstrap), so a test that relies on them waits for this first.
func (c *Cluster) WaitNamespaces(rev uint64) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		behind := ""
		for i := range c.Len() {
			n := c.Node(i)
			if n == nil {
				continue
			}
			for _, g := range n.Host().LocalGroups() {
				if g == multiraft.MetaGroup {
					continue
				}
				sm, _ := n.Host().LocalStateMachine(g)
				if f, ok := sm.(*fsm.FSM); !ok || f.NamespacesRevision() < rev {
					behind = fmt.Sprintf("group %d on node %d", g, i+1)
				}
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("namespace rules of revision %d did not reach %s within 20s", rev, behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ClusterSecret is the peer secret of the cluster's nodes, for a node a
// test starts to join it.
func (c *Cluster) ClusterSecret() []byte { return c.cfgs[0].ClusterSecret }

// WaitReady waits until every running node knows a leader for each of its
// groups.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := range c.cfgs {
		for {
			n := c.Node(i)
			if n == nil {
				break
			}
			st := n.Host().Cluster()
			ready := st.Initialized() && n.Host().Epoch() != 0
			for g := uint64(1); ready && g <= st.Groups; g++ {
				if id, _ := n.Host().Leader(g); id == "" {
					if _, err := n.Host().LeaderStatus(context.Background(), g); err != nil {
						ready = false
					}
				}
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d not ready after 30s", i+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Proxy is the proxy in front of node i's peer port; the cluster must be
// started with Options.PeerProxies.
func (c *Cluster) Proxy(i int) *PeerProxy {
	c.t.Helper()
	if i >= len(c.proxies) {
		c.t.Fatalf("node %d has no peer proxy: start the cluster with Options.PeerProxies", i+1)
	}
	return c.proxies[i]
}

// freePort returns a loopback address with a port free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.cfgs) }

// Node returns node i (0-based), or nil while it is stopped.
func (c *Cluster) Node(i int) *herald.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// URL is node i's websocket URL; it stays the same across restarts.
func (c *Cluster) URL(i int) string { return "ws://" + c.cfgs[i].ClientAddr + "/ws" }

// URLs lists every node's websocket URL.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.cfgs))
	for i := range c.cfgs {
		out[i] = c.URL(i)
	}
	return out
}

// DataDir is node i's data directory; it stays the same across restarts,
// so a test may change its files while the node is stopped.
func (c *Cluster) DataDir(i int) string { return c.cfgs[i].DataDir }

// Config returns node i's configuration, as Restart starts it.
func (c *Cluster) Config(i int) herald.Config { return c.cfgs[i] }

// HTTP is node i's base HTTP URL.
func (c *Cluster) HTTP(i int) string { return "http://" + c.cfgs[i].ClientAddr }

// Stop closes node i gracefully.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if n := c.take(i); n != nil {
		if err := n.Close(); err != nil {
			c.t.Logf("close node %d: %v", i+1, err)
		}
	}
}

// Crash stops node i at once, as a crash would.
func (c *Cluster) Crash(i int) {
	c.t.Helper()
	if n := c.take(i); n != nil {
		if err := n.Crash(); err != nil {
			c.t.Logf("crash node %d: %v", i+1, err)
		}
	}
}

// Restart starts a stopped node i again on its data and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n *herald.Node
	var err error
	// The ports were just released; retry briefly if the kernel still
	// holds one.
	for attempt := 0; attempt < 50; attempt++ {
		if n, err = herald.Start(ctx, c.cfgs[i]); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("restart node %d: %v", i+1, err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

func (c *Cluster) take(i int) *herald.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	c.nodes[i] = nil
	return n
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.cfgs {
		if n := c.take(i); n != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.Crash(); err != nil {
					c.t.Logf("stop node %d: %v", i+1, err)
				}
			}()
		}
	}
	wg.Wait()
}
