package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/mempolicy"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/serverapi"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

func env(name string) []string { return []string{"HERALD_" + name} }

// serveFlags are serve's flags. Every one can also come from an environment
// variable (HERALD_ and the flag's name in capitals with underscores) or
// from the --config file (YAML or TOML, keys named like the flags); the
// command line wins over the environment, which wins over the file.
func serveFlags() []cli.Flag {
	lim := wsfront.DefaultLimits()
	t := multiraft.DefaultTiming()
	str := func(name, value, usage string) cli.Flag {
		return altsrc.NewStringFlag(&cli.StringFlag{Name: name, Value: value, Usage: usage,
			EnvVars: env(strings.ToUpper(strings.ReplaceAll(name, "-", "_")))})
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return altsrc.NewDurationFlag(&cli.DurationFlag{Name: name, Value: value, Usage: usage,
			EnvVars: env(strings.ToUpper(strings.ReplaceAll(name, "-", "_")))})
	}
	num := func(name string, value int, usage string) cli.Flag {
		return altsrc.NewIntFlag(&cli.IntFlag{Name: name, Value: value, Usage: usage,
			EnvVars: env(strings.ToUpper(strings.ReplaceAll(name, "-", "_")))})
	}
	boolean := func(name, usage string) cli.Flag {
		return altsrc.NewBoolFlag(&cli.BoolFlag{Name: name, Usage: usage,
			EnvVars: env(strings.ToUpper(strings.ReplaceAll(name, "-", "_")))})
	}
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "read flags from this YAML (.yaml, .yml) or TOML (.toml) file", EnvVars: env("CONFIG")},
		str("node-id", "", "this node's id in the cluster, stable across restarts (required)"),
		str("data-dir", "herald-data", "directory of the node's raft logs and room state"),
		str("client-addr", ":7070", "address of the websocket and HTTP port"),
		str("peer-addr", ":7170", "address of the peer port (raft and node-to-node traffic)"),
		str("advertise-client-addr", "", "client address other nodes and clients use (default: the bound one)"),
		str("advertise-peer-addr", "", "peer address other nodes dial (default: the bound one)"),
		str("bootstrap", "", "found a new cluster of these nodes: id=peer-host:port,... (the same list on every initial node)"),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "join", Usage: "join an existing cluster through this node's peer address (repeatable)", EnvVars: env("JOIN")}),
		str("cluster-id", "herald", "name of a new cluster (with --bootstrap)"),
		str("namespaces-file", "", "with --bootstrap: JSON file of the new cluster's namespace rules, as herald admin namespaces list --json prints them"),
		num("groups", 64, "data groups of a new cluster (fixed for its life)"),
		num("replication", 3, "replicas per data group of a new cluster"),
		str("log-store", "", "raft log backend: badger (one DB per node), wal (one append-only log per node) or bolt (a file per group); default: the one the data dir holds, or "+string(logstore.DefaultKind)+" for a new node"),
		dur("heartbeat-timeout", t.HeartbeatTimeout, "raft: follower's wait before an election"),
		dur("election-timeout", t.ElectionTimeout, "raft: candidate's wait for votes"),
		dur("leader-lease-timeout", t.LeaderLeaseTimeout, "raft: leader's lease without quorum contact"),
		dur("commit-timeout", t.CommitTimeout, "raft: how late an idle follower learns a commit"),
		boolean("per-group-heartbeats", "raft: send every group's heartbeats on their own instead of one batch per peer node"),
		dur("lease-ttl", 10*time.Second, "how long a dead node's sockets stay members of their rooms"),
		str("tls-cert", "", "certificate file for the client port (serves https and wss)"),
		str("tls-key", "", "key file for --tls-cert"),
		str("peer-tls-cert", "", "certificate file for the peer port (mutual TLS)"),
		str("peer-tls-key", "", "key file for --peer-tls-cert"),
		str("peer-tls-ca", "", "CA file that signs every node's peer certificate; each certificate must name its node id (DNS or URI SAN, or CN)"),
		str("cluster-secret", "", "secret every node of the cluster shares; peers prove it when they connect, it never crosses the wire (at least 16 bytes; prefer HERALD_CLUSTER_SECRET or --cluster-secret-file)"),
		str("cluster-secret-file", "", "file holding the cluster secret (e.g. made by: openssl rand -hex 32 > secret)"),
		boolean("insecure-peers", "let a peer port off loopback run without a cluster secret or mutual TLS: anyone who reaches it can act as a node (networks you fully control only)"),
		str("jwt-secret", "", "HMAC secret for client tokens (prefer HERALD_JWT_SECRET or --jwt-secret-file)"),
		str("jwt-secret-file", "", "file holding the HMAC secret for client tokens"),
		str("jwt-public-keys", "", "PEM file of RSA or Ed25519 public keys (or certificates) for client tokens"),
		str("jwt-issuer", "", "required iss claim of client tokens"),
		str("jwt-audience", "", "required aud claim of client tokens"),
		boolean("jwt-require-exp", "refuse client tokens without exp"),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "allowed-origin", Usage: "browser origin (https://app.example.com) whose pages may open sockets, repeatable; \"*\" allows any (default: any with token auth, loopback only with --insecure-auth)", EnvVars: env("ALLOWED_ORIGIN")}),
		boolean("insecure-auth", "accept {\"op\":\"auth\",\"user\":...} without a token (local development only)"),
		str("admin-token", "", "bearer token of the admin API (prefer HERALD_ADMIN_TOKEN or --admin-token-file); without one the admin API refuses every request"),
		str("admin-token-file", "", "file holding the admin token"),
		str("api-key", "", "API keys of the server API under /api/v1/, comma-separated, several while rotating (prefer HERALD_API_KEY or --api-key-file); without one the server API refuses every request"),
		str("api-key-file", "", "file holding the server API's keys, one per line (# comments)"),
		num("max-frame", lim.MaxFrame, "bytes of one client frame"),
		num("max-data", lim.MaxData, "bytes of a publish's data or a join's meta"),
		num("max-rooms", lim.MaxRooms, "rooms joined plus subscribed per socket"),
		altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "publish-rate", Value: lim.PublishRate, Usage: "publishes per second per socket", EnvVars: env("PUBLISH_RATE")}),
		num("publish-burst", lim.PublishBurst, "publishes a socket may send at once"),
		num("max-inflight", lim.MaxInflight, "requests in progress per socket"),
		num("max-queue-frames", lim.MaxQueueFrames, "outgoing frames queued per socket before it is closed as slow"),
		num("max-queue-bytes", lim.MaxQueueBytes, "outgoing bytes queued per socket before it is closed as slow"),
		num("max-sockets", 0, fmt.Sprintf("websockets open on the node at once; more are refused with HTTP 503 (0: the open-files limit less a reserve of a tenth, at least 1000 and at most half: %d on this machine)", wsfront.DefaultMaxSockets())),
		num("max-sockets-per-ip", lim.MaxSocketsPerIP, "websockets of one client address (IPv4, or IPv6 /64) on the node; more are refused with HTTP 429 (0: no limit; set 0 behind a proxy, where every client has its address)"),
		num("max-sockets-per-user", lim.MaxSocketsPerUser, "authenticated websockets of one user on the node; an auth over it is refused and its socket closed with 4029 (0: no limit)"),
		num("max-page-bytes", lim.MaxPageBytes, "bytes of events in one history page (at most half of --max-queue-bytes)"),
		num("max-read-bytes", lim.MaxReadBytes, "bytes of history pages the node reads and queues at once; more reads are rate_limited"),
		dur("auth-timeout", lim.AuthTimeout, "time a socket has to authenticate"),
		dur("idle-timeout", lim.IdleTimeout, "time a socket may stay silent"),
		dur("ping-interval", lim.PingInterval, "time between the node's pings"),
		dur("request-timeout", lim.RequestTimeout, "time one request may take, retries included"),
		dur("stop-timeout", 15*time.Second, "bound of a graceful stop"),
		str("log-level", "info", "debug, info, warn or error"),
		str("log-format", "text", "text or json"),
		boolean("pprof", "serve Go's profiler at /debug/pprof/ on the client port (protected by the admin token)"),
		num("gc-percent", mempolicy.DefaultGCPercent, "Go's GOGC for the node: heap growth in percent of the live heap before a collection; -1 collects only at --memory-limit (default: the GOGC variable if set, else this)"),
		str("memory-limit", "auto", "Go's soft memory limit (GOMEMLIMIT), e.g. 2GiB; auto: the GOMEMLIMIT variable if set, else 90% of the container's cgroup memory limit if there is one; none: no limit"),
	}
}

func serveCommand() *cli.Command {
	flags := serveFlags()
	return &cli.Command{
		Name:  "serve",
		Usage: "run one node of a cluster",
		Description: "Start the first nodes of a new cluster with the same --bootstrap list on each, add nodes\n" +
			"later with --join, and restart a node with just its --node-id and --data-dir.",
		Flags:  flags,
		Before: configFile(flags),
		Action: func(c *cli.Context) error {
			logger, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
			if err != nil {
				return err
			}
			if err := applyMemoryPolicy(c, logger); err != nil {
				return err
			}
			cfg, adminToken, err := serveConfig(c, logger)
			if err != nil {
				return err
			}
			apiOpts, err := apiConfig(c, cfg.Limits, logger)
			if err != nil {
				return err
			}
			cfg.Mount = func(n *herald.Node) {
				mountAdmin(n, adminToken, false, c.Bool("pprof"), logger)
				mountAPI(n, apiOpts)
			}
			return runNodes(c.Context, logger, []herald.Config{cfg}, nil, nil)
		},
	}
}

// applyMemoryPolicy sets the runtime's GOGC and memory limit from
// --gc-percent and --memory-limit, the GOGC and GOMEMLIMIT variables and
// the container's memory limit (package mempolicy has the rules), before
// the node allocates anything that lasts.
func applyMemoryPolicy(c *cli.Context, logger *slog.Logger) error {
	p, err := memoryPolicy(c, os.LookupEnv)
	if err != nil {
		return err
	}
	p.Apply()
	logger.Info("memory policy", p.LogAttrs()...)
	return nil
}

func memoryPolicy(c *cli.Context, env func(string) (string, bool)) (mempolicy.Policy, error) {
	return mempolicy.Decide(mempolicy.Input{
		Env:          env,
		FS:           os.DirFS("/"),
		GCPercent:    c.Int("gc-percent"),
		GCPercentSet: c.IsSet("gc-percent"),
		MemoryLimit:  c.String("memory-limit"),
	})
}

// configFile loads the --config file, picking the format by its extension.
func configFile(flags []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error {
		path := c.String("config")
		if path == "" {
			return nil
		}
		var src func(*cli.Context) (altsrc.InputSourceContext, error)
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml":
			src = altsrc.NewYamlSourceFromFlagFunc("config")
		case ".toml":
			src = altsrc.NewTomlSourceFromFlagFunc("config")
		default:
			return fmt.Errorf("--config %s: want a .yaml, .yml or .toml file", path)
		}
		if err := altsrc.InitInputSourceWithContext(flags, src)(c); err != nil {
			return fmt.Errorf("--config %s: %w", path, err)
		}
		return nil
	}
}

// serveConfig turns serve's flags into a node configuration, refusing
// anything it cannot use with a message that names the flag.
func serveConfig(c *cli.Context, logger *slog.Logger) (herald.Config, string, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	cfg := herald.Config{
		NodeID:              c.String("node-id"),
		DataDir:             c.String("data-dir"),
		ClientAddr:          c.String("client-addr"),
		PeerAddr:            c.String("peer-addr"),
		AdvertiseClientAddr: c.String("advertise-client-addr"),
		AdvertisePeerAddr:   c.String("advertise-peer-addr"),
		Join:                c.StringSlice("join"),
		AllowedOrigins:      c.StringSlice("allowed-origin"),
		LeaseTTL:            c.Duration("lease-ttl"),
		StopTimeout:         c.Duration("stop-timeout"),
		Logger:              logger,
	}
	if cfg.NodeID == "" {
		bad("--node-id is required (a name for this node that stays the same across restarts)")
	}
	if s := c.String("log-store"); s != "" {
		kind, err := logstore.ParseKind(s)
		if err != nil {
			bad("--log-store: %v", err)
		}
		cfg.LogStore = kind
	}
	cfg.Timing = multiraft.DefaultTiming()
	cfg.Timing.HeartbeatTimeout = c.Duration("heartbeat-timeout")
	cfg.Timing.ElectionTimeout = c.Duration("election-timeout")
	cfg.Timing.LeaderLeaseTimeout = c.Duration("leader-lease-timeout")
	cfg.Timing.CommitTimeout = c.Duration("commit-timeout")
	cfg.Timing.PerGroupHeartbeats = c.Bool("per-group-heartbeats")
	if err := cfg.Timing.Validate(); err != nil {
		bad("raft timeouts: %v", flagNames.Replace(err.Error()))
	}
	if spec := c.String("bootstrap"); spec != "" {
		peers, err := parseBootstrap(spec)
		if err != nil {
			bad("--bootstrap: %v", err)
		} else if !slices.ContainsFunc(peers, func(p multiraft.Peer) bool { return p.ID == cfg.NodeID }) {
			bad("--bootstrap does not list this node (--node-id %s)", cfg.NodeID)
		}
		groups, repl := c.Int("groups"), c.Int("replication")
		if groups < 1 || groups > meta.MaxGroups {
			bad("--groups %d: want 1..%d", groups, meta.MaxGroups)
		}
		if repl < 1 || repl > len(peers) {
			bad("--replication %d: want 1..%d (the nodes in --bootstrap)", repl, len(peers))
		}
		cfg.Bootstrap = &multiraft.BootstrapSpec{ClusterID: c.String("cluster-id"), Nodes: peers,
			Groups: uint64(max(groups, 0)), Replication: repl}
		if path := c.String("namespaces-file"); path != "" {
			settings, err := readNamespacesFile(path)
			if err != nil {
				bad("--namespaces-file %s: %v", path, err)
			}
			cfg.Bootstrap.AppSettings = settings
		}
	}
	if cfg.Bootstrap != nil && len(cfg.Join) > 0 {
		bad("--bootstrap and --join exclude each other: a node founds a cluster or joins one")
	}
	lim := wsfront.DefaultLimits()
	lim.MaxFrame, lim.MaxData, lim.MaxRooms = c.Int("max-frame"), c.Int("max-data"), c.Int("max-rooms")
	lim.PublishRate, lim.PublishBurst, lim.MaxInflight = c.Float64("publish-rate"), c.Int("publish-burst"), c.Int("max-inflight")
	lim.MaxQueueFrames, lim.MaxQueueBytes = c.Int("max-queue-frames"), c.Int("max-queue-bytes")
	lim.MaxPageBytes, lim.MaxReadBytes = c.Int("max-page-bytes"), c.Int("max-read-bytes")
	lim.AuthTimeout, lim.IdleTimeout, lim.PingInterval = c.Duration("auth-timeout"), c.Duration("idle-timeout"), c.Duration("ping-interval")
	lim.RequestTimeout = c.Duration("request-timeout")
	lim.MaxSockets = c.Int("max-sockets")
	lim.MaxSocketsPerIP, lim.MaxSocketsPerUser = socketLimitFlag(c, "max-sockets-per-ip", bad), socketLimitFlag(c, "max-sockets-per-user", bad)
	if err := lim.Validate(); err != nil {
		bad("limits: %v", flagNames.Replace(err.Error()))
	}
	cfg.Limits = lim
	var err error
	if cfg.Auth, err = authConfig(c); err != nil {
		errs = append(errs, err)
	}
	if cfg.ClientTLS, err = clientTLS(c.String("tls-cert"), c.String("tls-key")); err != nil {
		errs = append(errs, err)
	}
	if cfg.PeerTLS, cfg.PeerClientTLS, err = peerTLS(c.String("peer-tls-cert"), c.String("peer-tls-key"), c.String("peer-tls-ca")); err != nil {
		errs = append(errs, err)
	}
	if cs, err := secret(c, "cluster-secret"); err != nil {
		errs = append(errs, err)
	} else if cs != "" {
		cfg.ClusterSecret = []byte(cs)
	}
	cfg.InsecurePeers = c.Bool("insecure-peers")
	token, err := secret(c, "admin-token")
	if err != nil {
		errs = append(errs, err)
	}
	return cfg, token, errors.Join(errs...)
}

// parseBootstrap reads "n1=host:port,n2=host:port".
func parseBootstrap(spec string) ([]multiraft.Peer, error) {
	var peers []multiraft.Peer
	seen := map[string]bool{}
	for item := range strings.SplitSeq(spec, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%q is not id=host:port", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%s: %v", id, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("node %s is listed twice", id)
		}
		seen[id] = true
		peers = append(peers, multiraft.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// secret reads a flag given directly or as a file (flag name + "-file").
func secret(c *cli.Context, name string) (string, error) {
	v, file := c.String(name), c.String(name+"-file")
	if v != "" && file != "" {
		return "", fmt.Errorf("--%s and --%s-file exclude each other", name, name)
	}
	if file == "" {
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func authConfig(c *cli.Context) (auth.Config, error) {
	cfg := auth.Config{
		Issuer:        c.String("jwt-issuer"),
		Audience:      c.String("jwt-audience"),
		RequireExpiry: c.Bool("jwt-require-exp"),
		Insecure:      c.Bool("insecure-auth"),
		Leeway:        5 * time.Second,
	}
	s, err := secret(c, "jwt-secret")
	if err != nil {
		return cfg, err
	}
	if s != "" {
		cfg.HMACSecret = []byte(s)
	}
	if file := c.String("jwt-public-keys"); file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("--jwt-public-keys: %w", err)
		}
		if cfg.PublicKeys, err = auth.LoadPublicKeys(pem); err != nil {
			return cfg, fmt.Errorf("--jwt-public-keys %s: %w", file, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("client auth: %w (give --jwt-secret-file or --jwt-public-keys, or --insecure-auth for local development)", err)
	}
	return cfg, nil
}

func clientTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// peerTLS builds mutual TLS for the peer port: every node presents its
// certificate and accepts only peers signed by the cluster's CA.
func peerTLS(certFile, keyFile, caFile string) (server, client *tls.Config, err error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, nil, errors.New("peer TLS needs --peer-tls-cert, --peer-tls-key and --peer-tls-ca together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-tls-cert/--peer-tls-key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("--peer-tls-ca %s: no certificate in it", caFile)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// runNodes starts the nodes, runs ready once they serve, and stops them
// gracefully on SIGINT or SIGTERM; a second signal stops them at once.
func runNodes(parent context.Context, logger *slog.Logger, cfgs []herald.Config,
	ready func([]*herald.Node), stopped func()) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			logger.Warn("signal before the node started: giving up")
			cancel()
		case <-ctx.Done():
		}
	}()
	nodes := make([]*herald.Node, len(cfgs))
	errs := make([]error, len(cfgs))
	done := make(chan int, len(cfgs))
	for i, cfg := range cfgs {
		go func() {
			nodes[i], errs[i] = herald.Start(ctx, cfg)
			done <- i
		}()
	}
	for range cfgs {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		for _, n := range nodes {
			if n != nil {
				_ = n.Close()
			}
		}
		return err
	}
	cancel() // the startup watcher is done; signals now stop the nodes
	for i, n := range nodes {
		logger.Info("node serving", "node", cfgs[i].NodeID, "websocket", n.WebsocketURL(), "peer", n.PeerAddr())
	}
	if ready != nil {
		ready(nodes)
	}
	sig := <-sigs
	logger.Info("stopping: handing over leaderships and closing sockets (a second signal stops at once)", "signal", sig.String())
	go func() {
		<-sigs
		logger.Warn("second signal: stopping at once")
		for _, n := range nodes {
			_ = n.Crash()
		}
		os.Exit(1)
	}()
	closers := make([]func() error, len(nodes))
	for i, n := range nodes {
		closers[i] = n.Close
	}
	err := stopNodes(logger, closers, stopLimit(cfgs))
	if stopped != nil {
		stopped()
	}
	logger.Info("stopped")
	return err
}

// stopGrace is how long past the longest --stop-timeout the process waits
// for its nodes before it exits anyway.
const stopGrace = 5 * time.Second

// stopLimit bounds stopping nodes of cfgs: the longest stop timeout (a
// node's Close keeps to its own) and stopGrace.
func stopLimit(cfgs []herald.Config) time.Duration {
	var longest time.Duration
	for _, c := range cfgs {
		d := c.StopTimeout
		if d == 0 {
			d = 15 * time.Second // herald.Config's default
		}
		longest = max(longest, d)
	}
	return longest + stopGrace
}

// stopNodes runs every closer at once and returns their errors, or gives
// up after limit. Node.Close keeps to its stop timeout; limit guards the
// process's exit should a stop hang anyway. Closers still running when it
// gives up are left to the process's exit, which follows.
func stopNodes(logger *slog.Logger, closers []func() error, limit time.Duration) error {
	errs := make(chan error, len(closers))
	for _, c := range closers {
		go func() { errs <- c() }()
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	var all []error
	for range closers {
		select {
		case err := <-errs:
			all = append(all, err)
		case <-t.C:
			err := fmt.Errorf("%d of %d nodes did not stop within %v; exiting without them", len(closers)-len(all), len(closers), limit)
			logger.Error("stop timed out", "err", err)
			return errors.Join(append(all, err)...)
		}
	}
	return errors.Join(all...)
}

// mountAdmin adds the admin API (and the profiler, when asked) to a node's
// client port. It runs as the node's Config.Mount, before the port opens.
func mountAdmin(n *herald.Node, token string, allowNoToken, withPprof bool, logger *slog.Logger) {
	opts := admin.Options{Token: token, AllowNoToken: allowNoToken, Logger: logger}
	n.Front().Handle(admin.Prefix, admin.Handler(n, opts))
	if withPprof {
		n.Front().Handle("/debug/pprof/", admin.Guard(opts, http.HandlerFunc(pprof.Index)))
		n.Front().Handle("/debug/pprof/profile", admin.Guard(opts, http.HandlerFunc(pprof.Profile)))
		n.Front().Handle("/debug/pprof/trace", admin.Guard(opts, http.HandlerFunc(pprof.Trace)))
		n.Front().Handle("/debug/pprof/symbol", admin.Guard(opts, http.HandlerFunc(pprof.Symbol)))
		n.Front().Handle("/debug/pprof/cmdline", admin.Guard(opts, http.HandlerFunc(pprof.Cmdline)))
	}
}

// apiOptions builds the server API's options from the --api-key flags,
// checked before the node starts: Mount cannot fail.
func apiConfig(c *cli.Context, lim wsfront.Limits, logger *slog.Logger) (serverapi.Config, error) {
	keys, err := secret(c, "api-key")
	if err != nil {
		return serverapi.Config{}, err
	}
	o := serverapi.Config{Keys: serverapi.ParseKeys(keys), MaxData: lim.MaxData, MaxPageBytes: lim.MaxPageBytes,
		RequestTimeout: lim.RequestTimeout, Logger: logger}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("--api-key: %w", err)
	}
	return o, nil
}

// mountAPI adds the server API to a node's client port, as the node's
// Config.Mount; opts were validated by apiOptions.
func mountAPI(n *herald.Node, opts serverapi.Config) {
	opts.Sockets = n.Front()
	h, err := serverapi.Handler(n.Rooms(), opts)
	if err != nil {
		opts.Logger.Error("the server API is not mounted", "err", err)
		return
	}
	n.Front().Handle(serverapi.Prefix, h)
}

// readNamespacesFile reads the namespace rules a new cluster starts with,
// in the admin API's format, and encodes them for the meta group.
func readNamespacesFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var list admin.Namespaces
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf(`want {"namespaces": [{"prefix": "chat:", "history_max_count": 1000, ...}, ...]}: %v`, err)
	}
	rules := make([]fsm.Namespace, 0, len(list.Namespaces))
	for _, n := range list.Namespaces {
		r, err := n.FSM()
		if err != nil {
			return nil, fmt.Errorf("namespace %q: %v", n.Prefix, err)
		}
		rules = append(rules, r)
	}
	return rooms.BootstrapSettings(rules)
}

// socketLimitFlag reads a per-address or per-user socket limit flag, where
// 0 means no limit: wsfront.NoLimit, since a zero limit there is the
// default.
func socketLimitFlag(c *cli.Context, name string, bad func(string, ...any)) int {
	switch n := c.Int(name); {
	case n < 0:
		bad("--%s %d must not be negative (0: no limit)", name, n)
	case n == 0:
		return wsfront.NoLimit
	default:
		return n
	}
	return 0
}

// flagNames turns the fields that the packages' Validate names into the
// flags that set them.
var flagNames = strings.NewReplacer(
	"Limits.MaxFrame", "--max-frame", "Limits.MaxData", "--max-data", "Limits.MaxRooms", "--max-rooms",
	"Limits.PublishRate", "--publish-rate", "Limits.PublishBurst", "--publish-burst", "Limits.MaxInflight", "--max-inflight",
	"Limits.MaxQueueFrames", "--max-queue-frames", "Limits.MaxQueueBytes", "--max-queue-bytes",
	"Limits.MaxSockets", "--max-sockets", "Limits.MaxPageBytes", "--max-page-bytes", "Limits.MaxReadBytes", "--max-read-bytes",
	"Limits.AuthTimeout", "--auth-timeout", "Limits.IdleTimeout", "--idle-timeout", "Limits.PingInterval", "--ping-interval",
	"Limits.RequestTimeout", "--request-timeout",
	"Timing.HeartbeatTimeout", "--heartbeat-timeout", "Timing.ElectionTimeout", "--election-timeout",
	"Timing.LeaderLeaseTimeout", "--leader-lease-timeout", "Timing.CommitTimeout", "--commit-timeout",
)
