package main

import (
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/mempolicy"
	"github.com/heraldhq/herald/wsfront"
)

// serveApp is a command line with serve's flags and configuration file
// whose serve runs action instead of a node.
func serveApp(action cli.ActionFunc) *cli.App {
	flags := serveFlags()
	return &cli.App{Writer: io.Discard, ErrWriter: io.Discard, Commands: []*cli.Command{{
		Name: "serve", Flags: flags, Before: configFile(flags), Action: action,
	}}}
}

// The example configuration shipped in deploy/ is one serve accepts.
func TestExampleConfigFileParses(t *testing.T) {
	var got herald.Config
	app := serveApp(func(c *cli.Context) (err error) {
		got, _, err = serveConfig(c, nil)
		return err
	})
	dir := t.TempDir()
	// The file names a cluster secret file in /etc/herald; the command
	// line points it at one of the test's.
	secret := writePrivate(t, filepath.Join(dir, "cluster-secret"), []byte("0123456789abcdef0123456789abcdef\n"))
	if err := app.Run([]string{"herald", "serve", "--config", "../../deploy/herald.yaml", "--data-dir", dir, "--insecure-auth",
		"--cluster-secret-file", secret}); err != nil {
		t.Fatalf("deploy/herald.yaml: %v", err)
	}
	if string(got.ClusterSecret) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("cluster secret from the file: %q", got.ClusterSecret)
	}
	if got.NodeID != "n1" || got.Bootstrap == nil || len(got.Bootstrap.Nodes) != 3 || got.Bootstrap.Groups != 64 ||
		got.AdvertisePeerAddr != "10.0.0.1:7170" {
		t.Fatalf("parsed config: %+v", got)
	}
	// The command line wins over the file.
	if err := app.Run([]string{"herald", "serve", "--config", "../../deploy/herald.yaml", "--data-dir", dir,
		"--insecure-auth", "--groups", "16", "--cluster-secret-file", secret}); err != nil {
		t.Fatal(err)
	}
	if got.Bootstrap.Groups != 16 {
		t.Fatalf("--groups on the command line: %d", got.Bootstrap.Groups)
	}
}

func TestParseBootstrap(t *testing.T) {
	peers, err := parseBootstrap("n1=127.0.0.1:1, n2=[::1]:2")
	if err != nil || len(peers) != 2 || peers[1].Addr != "[::1]:2" {
		t.Fatalf("%v %v", peers, err)
	}
	for _, bad := range []string{"", "n1", "=a:1", "n1=a:1,n1=b:2", "n1=nohost"} {
		if _, err := parseBootstrap(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The socket limit flags reach the node's limits; a negative one is
// refused with the flag's meaning in the message.
func TestSocketLimitFlags(t *testing.T) {
	var got herald.Config
	app := serveApp(func(c *cli.Context) (err error) {
		got, _, err = serveConfig(c, nil)
		return err
	})
	base := []string{"herald", "serve", "--node-id", "n1", "--data-dir", t.TempDir(), "--insecure-auth"}
	if err := app.Run(base); err != nil {
		t.Fatal(err)
	}
	if l := got.Limits; l.MaxSockets != 0 || l.MaxSocketsPerIP != wsfront.DefaultMaxSocketsPerIP || l.MaxSocketsPerUser != wsfront.DefaultMaxSocketsPerUser {
		t.Fatalf("defaults: max %d, per ip %d, per user %d", l.MaxSockets, l.MaxSocketsPerIP, l.MaxSocketsPerUser)
	}
	if err := app.Run(append(base, "--max-sockets", "20", "--max-sockets-per-ip", "0", "--max-sockets-per-user", "5")); err != nil {
		t.Fatal(err)
	}
	if l := got.Limits; l.MaxSockets != 20 || l.MaxSocketsPerIP != wsfront.NoLimit || l.MaxSocketsPerUser != 5 {
		t.Fatalf("flags: max %d, per ip %d, per user %d", l.MaxSockets, l.MaxSocketsPerIP, l.MaxSocketsPerUser)
	}
	err := app.Run(append(base, "--max-sockets-per-user", "-1"))
	if err == nil || !strings.Contains(err.Error(), "--max-sockets-per-user -1 must not be negative") {
		t.Fatalf("negative per-user limit: %v", err)
	}
}

// A node whose stop hangs past every bound must not keep the process from
// exiting: stopNodes gives up after its limit and says how many nodes did
// not stop, after collecting the others' results.
func TestStopNodesGivesUpOnAHangingNode(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	closers := []func() error{
		func() error { return nil },
		func() error { <-hang; return nil },
		func() error { return errors.New("store: close failed") },
	}
	const limit = 300 * time.Millisecond
	start := time.Now()
	err := stopNodes(slog.New(slog.DiscardHandler), closers, limit)
	took := time.Since(start)
	if took > limit+2*time.Second {
		t.Fatalf("stopNodes returned after %v, limit %v", took, limit)
	}
	if err == nil || !strings.Contains(err.Error(), "1 of 3 nodes did not stop") || !strings.Contains(err.Error(), "store: close failed") {
		t.Fatalf("stopNodes returned %v; want the hanging node counted and the other error kept", err)
	}
	if got := stopLimit([]herald.Config{{StopTimeout: 3 * time.Second}, {}}); got != 15*time.Second+stopGrace {
		t.Errorf("stopLimit = %v, want the default 15s stop timeout plus %v", got, stopGrace)
	}
}

// serve's memory flags reach the policy, and count as the operator's
// choice (over GOGC) whether they come from the command line or from
// HERALD_ variables; package mempolicy tests the rules themselves.
func TestServeMemoryFlags(t *testing.T) {
	run := func(t *testing.T, env map[string]string, args ...string) (mempolicy.Policy, error) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var p mempolicy.Policy
		var perr error
		app := serveApp(func(c *cli.Context) error {
			p, perr = memoryPolicy(c, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			return nil
		})
		if err := app.Run(append([]string{"herald", "serve"}, args...)); err != nil {
			t.Fatal(err)
		}
		return p, perr
	}
	tests := []struct {
		name        string
		env         map[string]string
		args        []string
		wantPercent int
		wantFrom    string
	}{
		{"default", nil, nil, mempolicy.DefaultGCPercent, "default"},
		{"GOGC", map[string]string{"GOGC": "80"}, nil, 80, "GOGC"},
		{"flag over GOGC", map[string]string{"GOGC": "80"}, []string{"--gc-percent", "40"}, 40, "--gc-percent"},
		{"HERALD_GC_PERCENT over GOGC", map[string]string{"GOGC": "80", "HERALD_GC_PERCENT": "60"}, nil, 60, "--gc-percent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := run(t, tt.env, tt.args...)
			if err != nil || p.GCPercent != tt.wantPercent || p.GCPercentFrom != tt.wantFrom {
				t.Fatalf("policy %+v, %v; want GOGC %d from %s", p, err, tt.wantPercent, tt.wantFrom)
			}
		})
	}
	if _, err := run(t, nil, "--memory-limit", "2GB"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Fatalf("--memory-limit 2GB: %v, want an error naming the flag", err)
	}
	if p, err := run(t, nil, "--memory-limit", "1GiB"); err != nil || p.Limit != 1<<30 || !p.SetLimit {
		t.Fatalf("--memory-limit 1GiB: %+v, %v", p, err)
	}
}
