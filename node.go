package herald

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/web"
	"github.com/heraldhq/herald/wsfront"
)

// Node is a running Herald node: storage, raft groups and client port.
type Node struct {
	cfg      Config
	store    *fsm.Store
	host     *multiraft.Host
	front    *wsfront.Server
	rooms    *rooms.Service
	metrics  *metrics.Node // nil when disabled
	listener net.Listener
	url      string

	// ctx ends when the node begins to stop (Context).
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the node's own loops and the goroutines of Go. goMu
	// orders Go's Add before the cancel that starts the node's stop, so
	// that no Add can follow the Wait.
	goMu      sync.Mutex
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the node's storage, starts its raft groups and its client
// port, and, when cfg says so, bootstraps or joins a cluster and waits until
// the node is registered in it.
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InsecurePeers && len(cfg.ClusterSecret) == 0 && !cfg.peerMutualTLS() {
		cfg.Logger.Warn("peers are not authenticated (insecure peers): anyone who reaches the peer port can act as a node of this cluster",
			"peer_addr", cfg.PeerAddr)
	}
	if err := checkDataDir(cfg.DataDir, cfg.NodeID, cfg.Bootstrap); err != nil {
		return nil, err
	}
	node := &Node{cfg: cfg}
	node.ctx, node.cancel = context.WithCancel(context.Background())
	n = node // the returns below set n to nil on failure; node stays
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout)
			defer cancel()
			_ = node.release(ctx)
		}
	}()
	// The client port is bound first: a port in use fails the start before
	// anything joins a cluster, and the bound address is what the cluster
	// records for clients.
	if n.listener, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("herald: client port: %w", err)
	}
	clientAddr := cfg.AdvertiseClientAddr
	if clientAddr == "" {
		clientAddr = n.listener.Addr().String()
	}
	scheme := "http"
	if cfg.ClientTLS != nil {
		n.listener = tls.NewListener(n.listener, cfg.ClientTLS)
		scheme = "https"
	}
	n.url = scheme + "://" + clientAddr
	if n.store, err = fsm.OpenStore(fsm.DefaultStoreConfig(filepath.Join(cfg.DataDir, "state"))); err != nil {
		return nil, fmt.Errorf("herald: room state: %w", err)
	}
	// Left nil, not set to a nil *metrics.Node, so that they mean "no
	// observer" to the packages.
	var raftObs multiraft.Observer
	var frontObs wsfront.Observer
	if !cfg.DisableMetrics {
		n.metrics = metrics.New()
		raftObs, frontObs = n.metrics, n.metrics
	}
	n.host, err = multiraft.Start(multiraft.Config{
		NodeID:            cfg.NodeID,
		DataDir:           filepath.Join(cfg.DataDir, "raft"),
		PeerAddr:          cfg.PeerAddr,
		AdvertisePeerAddr: cfg.AdvertisePeerAddr,
		ClientAddr:        clientAddr,
		PeerTLS:           cfg.PeerTLS,
		PeerClientTLS:     cfg.PeerClientTLS,
		ClusterSecret:     cfg.ClusterSecret,
		LogStore:          cfg.LogStore,
		Timing:            cfg.Timing,
		LeaseTTL:          cfg.LeaseTTL,
		StopTimeout:       cfg.StopTimeout,
		App:               &rooms.Application{Store: n.store, Logger: cfg.Logger},
		Logger:            cfg.Logger,
		Observer:          raftObs,
	})
	if err != nil {
		return nil, err
	}
	n.rooms, err = rooms.New(rooms.Config{Host: n.host, Scheme: scheme, TickInterval: cfg.TickInterval,
		Logger: cfg.Logger.With("part", "rooms")})
	if err != nil {
		return nil, err
	}
	n.front, err = wsfront.New(wsfront.Config{
		Backend:        n.rooms,
		Auth:           cfg.Auth,
		AllowedOrigins: cfg.AllowedOrigins,
		Limits:         cfg.Limits,
		Logger:         cfg.Logger.With("part", "wsfront"),
		Observer:       frontObs,
	})
	if err != nil {
		return nil, err
	}
	if n.metrics != nil {
		n.metrics.WatchGroups(n.host)
		n.metrics.SetMaxSockets(n.front.MaxSockets())
		n.front.Handle("GET /metrics", n.metrics.Handler())
	}
	// Every node serves the demo pages and the browser client.
	web.Mount(n.front, web.ClusterNodes(n.host))
	if cfg.Mount != nil {
		cfg.Mount(n)
	}
	n.wg.Add(1)
	go func() {
		defer node.wg.Done()
		if err := node.front.Serve(node.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("client port stopped", "err", err)
		}
	}()
	bg := n.ctx
	// The loops use node, not n: a failed start sets n to nil while they
	// may still be running, until release stops them.
	if n.metrics != nil {
		// Watching starts before Bootstrap and Join, so that the first
		// elections count too.
		changes, stop := n.host.WatchLeaders()
		n.wg.Add(1)
		go func() {
			defer node.wg.Done()
			defer stop()
			for {
				select {
				case <-bg.Done():
					return
				case c := <-changes:
					node.metrics.LeaderChanged(c)
				}
			}
		}()
	}
	switch {
	case cfg.Bootstrap != nil:
		err = n.Bootstrap(ctx, *cfg.Bootstrap)
	case len(cfg.Join) > 0:
		err = n.Join(ctx, cfg.Join)
	case len(n.host.LocalGroups()) > 0 || n.host.Cluster().Initialized():
		// A restart: the node registers its new process by itself.
		_, err = n.host.WaitRegistered(ctx)
	}
	if err != nil {
		return nil, err
	}
	n.recordCluster()
	return n, nil
}

// Bootstrap creates a new cluster from spec (see multiraft.Host.Bootstrap)
// and waits until this node is registered in it.
func (n *Node) Bootstrap(ctx context.Context, spec multiraft.BootstrapSpec) error {
	if err := n.host.Bootstrap(ctx, spec); err != nil {
		return err
	}
	_, err := n.host.WaitRegistered(ctx)
	n.recordCluster()
	return err
}

// Join adds the node to an existing cluster and waits until it is
// registered.
func (n *Node) Join(ctx context.Context, seeds []string) error {
	if err := n.host.Join(ctx, seeds); err != nil {
		return err
	}
	_, err := n.host.WaitRegistered(ctx)
	n.recordCluster()
	return err
}

// URL is the client port's base URL ("http://host:port"); websockets are at
// URL with ws(s) and path /ws.
func (n *Node) URL() string { return n.url }

// WebsocketURL is where clients connect.
func (n *Node) WebsocketURL() string {
	if n.cfg.ClientTLS != nil {
		return "wss" + n.url[len("https"):] + "/ws"
	}
	return "ws" + n.url[len("http"):] + "/ws"
}

// PeerAddr is the address other nodes reach this node's peer port at.
func (n *Node) PeerAddr() string { return n.host.PeerAddr() }

// Host is the node's multiraft host, for operations (moves, rebalancing).
func (n *Node) Host() *multiraft.Host { return n.host }

// Rooms is the node's room layer, the one its websocket front uses: for
// the server API (serverapi.Handler), the admin API and an embedder.
func (n *Node) Rooms() *rooms.Service { return n.rooms }

// Context ends when the node begins to stop: work started on the node's
// behalf (the admin API's jobs, say) derives its context from it, so that
// Close does not leave it running; Go also makes Close wait for it.
func (n *Node) Context() context.Context { return n.ctx }

// Front is the node's client port, to add HTTP endpoints to.
func (n *Node) Front() *wsfront.Server { return n.front }

// Metrics is the node's metrics, whose registry takes a program's own
// metrics onto /metrics; nil when Config.DisableMetrics is set.
func (n *Node) Metrics() *metrics.Node { return n.metrics }

// Close stops the node gracefully within Config.StopTimeout: it is
// Shutdown with that bound.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StopTimeout)
	defer cancel()
	return n.Shutdown(ctx)
}

// Shutdown stops the node gracefully within ctx: it hands its group
// leaderships to other replicas (so the cluster does not wait for an
// election), tells every socket 1001 going away and leaves the rooms they
// joined, then stops its room layer, groups and storage, keeping all data.
// Whatever has not stopped when ctx ends is logged and named in the error,
// which then wraps multiraft.ErrStopTimeout; it is left running and the
// process should exit. A ctx without a deadline gets Config.StopTimeout.
// Later calls return the first one's result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.closeOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, n.cfg.StopTimeout)
			defer cancel()
		}
		total := time.Until(deadlineOf(ctx))
		// The last quarter is kept for stopping the groups and storage,
		// however long the handover and the sockets take.
		graceful, gcancel := context.WithTimeout(ctx, total-total/4)
		defer gcancel()
		var errs []error
		n.front.Drain()
		// The handover gets half; the sockets' leaves at least a quarter.
		tctx, tcancel := context.WithTimeout(graceful, total/2)
		if err := n.host.TransferLeaderships(tctx); err != nil {
			n.cfg.Logger.Info("not every leadership was handed over; the groups will elect", "err", err)
		}
		tcancel()
		if err := n.front.Shutdown(graceful); err != nil {
			errs = append(errs, err)
		}
		n.closeErr = errors.Join(append(errs, n.release(ctx))...)
	})
	return n.closeErr
}

// Go runs fn in a goroutine the node owns, for work done on the node's
// behalf that may outlast a request (the admin API's jobs). fn gets the
// node's Context, which ends when the node begins to stop; Shutdown and
// Close then wait for fn to return, within their bound, before they close
// the node's storage. Go reports false, and does not run fn, once the node
// is stopping.
func (n *Node) Go(fn func(ctx context.Context)) bool {
	n.goMu.Lock()
	defer n.goMu.Unlock()
	if n.ctx.Err() != nil {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
	return true
}

// release stops what Start started, in reverse order, within ctx.
func (n *Node) release(ctx context.Context) error {
	var errs []error
	if n.cancel != nil {
		n.goMu.Lock()
		n.cancel()
		n.goMu.Unlock()
	}
	if n.front != nil {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = n.front.Shutdown(fctx) // already done by a graceful Close
		cancel()
	} else if n.listener != nil {
		_ = n.listener.Close()
	}
	loops := make(chan struct{})
	go func() { // ends with the node's loops, which all watch n.cancel
		n.wg.Wait()
		close(loops)
	}()
	// The room layer's loops can be waiting on a group (a history tick's
	// proposal): give them a quarter of what is left, then stop the groups
	// under them.
	if n.rooms != nil {
		first, cancel := context.WithTimeout(ctx, time.Until(deadlineOf(ctx))/4)
		if err := n.rooms.Shutdown(first); err != nil {
			n.cfg.Logger.Warn("the room layer's loops have not returned; stopping the groups under them")
		}
		cancel()
	}
	hostErr := error(nil)
	if n.host != nil {
		hostErr = n.host.Shutdown(ctx)
		errs = append(errs, hostErr)
	}
	if n.rooms != nil {
		if err := n.rooms.Shutdown(ctx); err != nil {
			n.cfg.Logger.Error("stop timed out", "err", err)
			errs = append(errs, fmt.Errorf("node %s: %w", n.cfg.NodeID, err))
		}
	}
	select {
	case <-loops:
	case <-ctx.Done():
		n.cfg.Logger.Error("stop timed out: the node's loops (client port, leader watch) are still running")
		errs = append(errs, fmt.Errorf("%w: node %s: its loops (client port, leader watch) are still running", multiraft.ErrStopTimeout, n.cfg.NodeID))
	}
	if n.store != nil {
		if errors.Is(hostErr, multiraft.ErrStopTimeout) {
			// A replica still stopping may yet apply to the store: closing
			// it under the replica could hang as well. Left open, the store
			// is as after a crash, which it recovers from.
			n.cfg.Logger.Error("room state store left open: group replicas are still stopping")
		} else {
			errs = append(errs, n.store.Close())
		}
	}
	return errors.Join(errs...)
}

// deadlineOf is ctx's deadline, or an hour from now for a context without
// one.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

// Crash stops the node at once, as a crash would, for fault injection:
// sockets are cut without a close frame, and leaderships and the sockets'
// memberships are left for the cluster to recover (elections, lease
// expiry). The data stays on disk.
func (n *Node) Crash() error {
	n.closeOnce.Do(func() {
		n.front.Abort()
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StopTimeout)
		defer cancel()
		n.closeErr = n.release(ctx)
	})
	return n.closeErr
}
