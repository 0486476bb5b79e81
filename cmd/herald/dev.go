package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/mempolicy"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/serverapi"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

const devNodes = 3

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a local 3-node cluster in one process, with no setup",
		Description: "Node i (1, 2, 3) serves clients on 127.0.0.1:<base-port + i> and peers on\n" +
			"127.0.0.1:<base-port + 100 + i>. Authentication is insecure ({\"op\":\"auth\",\"user\":\"alice\"})\n" +
			"and the admin API needs no token from loopback. Running it again reuses the data.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "base-port", Value: 7070, Usage: "node i serves clients on base-port+i and peers on base-port+100+i"},
			&cli.StringFlag{Name: "data", Value: "herald-dev-data", Usage: "directory of the three nodes' data"},
			&cli.BoolFlag{Name: "memory", Usage: "keep the data in a temporary directory removed on exit"},
			&cli.IntFlag{Name: "groups", Value: 16, Usage: "data groups of the cluster (on first start)"},
			&cli.StringFlag{Name: "log-level", Value: "error", Usage: "debug, info, warn or error (raft reports elections as warnings)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
			&cli.IntFlag{Name: "gc-percent", Value: mempolicy.DefaultGCPercent, Usage: "Go's GOGC for the process (as for serve)"},
			&cli.StringFlag{Name: "memory-limit", Value: "auto", Usage: "Go's soft memory limit for the process (as for serve)"},
		},
		Action: runDev,
	}
}

func runDev(c *cli.Context) error {
	logger, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	if err := applyMemoryPolicy(c, logger); err != nil {
		return err
	}
	base := c.Int("base-port")
	if base < 1 || base+100+devNodes > 65535 {
		return fmt.Errorf("--base-port %d: the ports %d..%d must fit below 65536", base, base+1, base+100+devNodes)
	}
	dir := c.String("data")
	if c.Bool("memory") {
		if dir, err = os.MkdirTemp("", "herald-dev-*"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	var peers []multiraft.Peer
	for i := 1; i <= devNodes; i++ {
		peers = append(peers, multiraft.Peer{ID: fmt.Sprintf("n%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", base+100+i)})
	}
	// Every node gets the same spec each run: bootstrapping a node that
	// already holds its part of the cluster does nothing, so a second run
	// reuses the data.
	spec := &multiraft.BootstrapSpec{ClusterID: "herald-dev", Nodes: peers, Groups: uint64(max(c.Int("groups"), 1)), Replication: devNodes}
	timing := multiraft.DefaultTiming()
	timing.HeartbeatTimeout, timing.ElectionTimeout, timing.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	// The nodes share this process's open-files limit, so each gets its
	// share; every client of a dev cluster comes from loopback, so no
	// per-address limit.
	limits := wsfront.DefaultLimits()
	limits.MaxSockets = max(1, wsfront.DefaultMaxSockets()/devNodes)
	limits.MaxSocketsPerIP = wsfront.NoLimit
	secret, err := devClusterSecret(dir)
	if err != nil {
		return err
	}
	var cfgs []herald.Config
	for i, p := range peers {
		nodeDir := filepath.Join(dir, p.ID)
		cfgs = append(cfgs, herald.Config{
			NodeID:        p.ID,
			DataDir:       nodeDir,
			ClientAddr:    fmt.Sprintf("127.0.0.1:%d", base+i+1),
			PeerAddr:      p.Addr,
			Bootstrap:     spec,
			ClusterSecret: secret,
			Auth:          auth.Config{Insecure: true},
			Limits:        limits,
			Timing:        timing,
			LeaseTTL:      5 * time.Second,
			StopTimeout:   10 * time.Second,
			Logger:        logger,
			Mount: func(n *herald.Node) {
				mountAdmin(n, "", true, true, logger)
				mountAPI(n, serverapi.Config{AllowLoopback: true, MaxData: limits.MaxData, Logger: logger})
			},
		})
	}
	out := c.App.Writer
	fmt.Fprintf(out, "starting a 3-node Herald cluster (data in %s)...\n", dir)
	return runNodes(c.Context, logger, cfgs, func(nodes []*herald.Node) {
		fmt.Fprintf(out, "\nHerald dev cluster is up:\n")
		for i, n := range nodes {
			fmt.Fprintf(out, "  node n%d  websocket %s   http %s\n", i+1, n.WebsocketURL(), n.URL())
		}
		first := nodes[0].URL()
		fmt.Fprintf(out, "\nOpen the chat demo at %s/ and the WebRTC call demo at %s/call\n", first, first)
		fmt.Fprintf(out, "\nTry it (auth is insecure: any user name works):\n")
		fmt.Fprintf(out, "  websocat -H 'Sec-WebSocket-Protocol: herald.v1' %s\n", nodes[0].WebsocketURL())
		fmt.Fprintf(out, "  {\"id\":1,\"op\":\"auth\",\"user\":\"alice\"}\n")
		fmt.Fprintf(out, "  {\"id\":2,\"op\":\"subscribe\",\"room\":\"lobby\",\"from_seq\":1}\n")
		fmt.Fprintf(out, "  {\"id\":3,\"op\":\"publish\",\"room\":\"lobby\",\"data\":{\"text\":\"hi\"}}\n")
		fmt.Fprintf(out, "\nPublish from a backend through the server API (no key needed from loopback):\n")
		fmt.Fprintf(out, "  curl -s %s/api/v1/publish -d '{\"room\":\"lobby\",\"data\":{\"text\":\"from the server\"}}'\n", first)
		fmt.Fprintf(out, "  go run ./cmd/herald api --url %s publish lobby '{\"text\":\"hi\"}'\n", first)
		fmt.Fprintf(out, "\nOperate it:\n")
		fmt.Fprintf(out, "  go run ./cmd/herald admin --addr %s status\n", first)
		fmt.Fprintf(out, "  go run ./cmd/herald admin --addr %s groups list\n", first)
		fmt.Fprintf(out, "  go run ./cmd/herald admin --addr %s rebalance --dry-run\n", first)
		fmt.Fprintf(out, "\nCtrl-C stops the cluster; running `herald dev` again reuses the data.\n")
	}, func() { fmt.Fprintln(out, "stopped") })
}

// devClusterSecret returns the dev cluster's peer secret, made on the
// first start and kept in the data folder, so even a local cluster's peer
// ports only talk to its own nodes.
func devClusterSecret(dir string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "cluster-secret")
	b, err := os.ReadFile(path)
	if err == nil {
		s := bytes.TrimSpace(b)
		if len(s) < multiraft.MinClusterSecretLen {
			return nil, fmt.Errorf("%s holds %d bytes, fewer than the %d a cluster secret needs; delete it to make a new one", path, len(s), multiraft.MinClusterSecretLen)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	s := []byte(hex.EncodeToString(raw))
	if err := os.WriteFile(path, append(s, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("keeping the dev cluster secret: %w", err)
	}
	return s, nil
}
