package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The JetStream baseline runs real nats-server processes, installed from
// the Go module proxy at a pinned version, so that runs on different
// machines compare the same server.
const (
	natsServerModule  = "github.com/nats-io/nats-server/v2"
	natsServerVersion = "v2.15.2"
)

// natsInstallHint says how to get the pinned nats-server.
var natsInstallHint = fmt.Sprintf("install it with `go install %s@%s` (into $(go env GOPATH)/bin), or `make nats-server` (into ./.bin), or give --nats-server-bin",
	natsServerModule, natsServerVersion)

// errNoNATSServer is findNATSServer's error when no binary is found.
var errNoNATSServer = errors.New("nats-server not found")

// findNATSServer returns the nats-server binary to run: the one given
// (--nats-server-bin), else the first on PATH, else the one `go install`
// put in $(go env GOPATH)/bin. Its error wraps errNoNATSServer and says
// how to install the pinned version.
func findNATSServer(given string) (string, error) {
	if given != "" {
		if st, err := os.Stat(given); err != nil || st.IsDir() {
			return "", fmt.Errorf("%w at --nats-server-bin %s: %s", errNoNATSServer, given, natsInstallHint)
		}
		return given, nil
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if dir := goBinDir(); dir != "" {
		p := filepath.Join(dir, "nats-server")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked at --nats-server-bin or $NATS_SERVER_BIN, PATH and $(go env GOPATH)/bin): %s", errNoNATSServer, natsInstallHint)
}

// goBinDir is where `go install` puts binaries: $GOBIN, else the first
// GOPATH entry's bin, as the go command reports them; without a go
// command, $GOPATH/bin or ~/go/bin.
func goBinDir() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) >= 1 && strings.TrimSpace(lines[0]) != "" {
			return strings.TrimSpace(lines[0])
		}
		if len(lines) == 2 {
			if first, _, _ := strings.Cut(strings.TrimSpace(lines[1]), string(os.PathListSeparator)); first != "" {
				return filepath.Join(first, "bin")
			}
		}
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		first, _, _ := strings.Cut(gp, string(os.PathListSeparator))
		return filepath.Join(first, "bin")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, "go", "bin")
	}
	return ""
}

// natsServerVersionOf asks a binary for its version ("v2.15.2"), or says
// why it could not.
func natsServerVersionOf(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	// "nats-server: v2.15.2"
	s := strings.TrimSpace(string(out))
	if _, v, ok := strings.Cut(s, ": "); ok {
		return v
	}
	return s
}

// natsNode is one nats-server of the baseline's cluster.
type natsNode struct {
	name        string
	clientPort  int
	clusterPort int
	storeDir    string // nats-server keeps JetStream's files in its jetstream subdirectory
}

// natsConfig writes the configuration of nodes[i]: JetStream with file
// storage in its own directory, syncing every write when syncAlways (the
// durability Herald's fsynced raft log gives; by default nats-server syncs
// every 2 minutes), and, with more than one node, a cluster whose routes
// name every other node. Strings are quoted as JSON, which the config
// format reads.
func natsConfig(nodes []natsNode, i int, syncAlways bool) string {
	n := nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\n", strconv.Quote(n.name))
	fmt.Fprintf(&b, "listen: %s\n", strconv.Quote(fmt.Sprintf("127.0.0.1:%d", n.clientPort)))
	b.WriteString("jetstream {\n")
	fmt.Fprintf(&b, "  store_dir: %s\n", strconv.Quote(n.storeDir))
	if syncAlways {
		b.WriteString("  sync_interval: always\n")
	}
	b.WriteString("}\n")
	if len(nodes) > 1 {
		b.WriteString("cluster {\n")
		b.WriteString("  name: \"herald-bench\"\n")
		fmt.Fprintf(&b, "  listen: %s\n", strconv.Quote(fmt.Sprintf("127.0.0.1:%d", n.clusterPort)))
		b.WriteString("  routes: [\n")
		for j, o := range nodes {
			if j != i {
				fmt.Fprintf(&b, "    %s\n", strconv.Quote(fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort)))
			}
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String()
}

// jetStreamKind is the target name of a JetStream run with a sync setting.
func jetStreamKind(sync string) string { return "jetstream-" + sync }

// startNATS starts a cluster of nats-server processes on loopback, each
// with its data in a temporary directory that close removes. It does not
// wait for them: the readiness that matters is JetStream's (a meta leader,
// then the stream's leader and replicas), which openStream waits for.
func startNATS(ctx context.Context, bin string, nodes int, sync string, log io.Writer) (_ *target, err error) {
	dir, err := os.MkdirTemp("", "herald-bench-nats-*")
	if err != nil {
		return nil, err
	}
	t := &target{kind: jetStreamKind(sync), dir: dir, client: &http.Client{Timeout: 30 * time.Second}}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	ports, err := freePorts(2 * nodes)
	if err != nil {
		return nil, err
	}
	ns := make([]natsNode, nodes)
	for i := range ns {
		name := fmt.Sprintf("n%d", i+1)
		ns[i] = natsNode{name: name, clientPort: ports[i], clusterPort: ports[nodes+i], storeDir: filepath.Join(dir, name)}
	}
	for i, n := range ns {
		conf := filepath.Join(dir, n.name+".conf")
		if err := os.WriteFile(conf, []byte(natsConfig(ns, i, sync == syncAlways)), 0o644); err != nil {
			return nil, err
		}
		p, err := startProc(n.name, exec.Command(bin, "-c", conf))
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
		t.urls = append(t.urls, fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort))
	}
	fmt.Fprintf(log, "started %d nats-server nodes (sync %s) in %s\n", nodes, sync, dir)
	return t, nil
}
