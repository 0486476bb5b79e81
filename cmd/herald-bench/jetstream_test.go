package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServerForTest finds nats-server as the tool does ($NATS_SERVER_BIN,
// PATH, $(go env GOPATH)/bin) or skips the test, saying how to install it.
func natsServerForTest(t *testing.T) string {
	t.Helper()
	bin, err := findNATSServer(os.Getenv("NATS_SERVER_BIN"))
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	return bin
}

func TestNATSConfig(t *testing.T) {
	nodes := []natsNode{
		{name: "n1", clientPort: 4001, clusterPort: 6001, storeDir: "/data/n1"},
		{name: "n2", clientPort: 4002, clusterPort: 6002, storeDir: "/data/n2"},
		{name: "n3", clientPort: 4003, clusterPort: 6003, storeDir: "/data/n3"},
	}
	tests := []struct {
		name       string
		nodes      []natsNode
		i          int
		always     bool
		want       []string
		wantAbsent []string
	}{
		{"first of three, sync always", nodes, 0, true,
			[]string{`server_name: "n1"`, `listen: "127.0.0.1:4001"`, `store_dir: "/data/n1"`, "sync_interval: always",
				`name: "herald-bench"`, `listen: "127.0.0.1:6001"`, `"nats-route://127.0.0.1:6002"`, `"nats-route://127.0.0.1:6003"`},
			[]string{"nats-route://127.0.0.1:6001"}},
		{"last of three, default sync", nodes, 2, false,
			[]string{`server_name: "n3"`, `store_dir: "/data/n3"`, `"nats-route://127.0.0.1:6001"`, `"nats-route://127.0.0.1:6002"`},
			[]string{"sync_interval", "nats-route://127.0.0.1:6003"}},
		{"one node, no cluster", nodes[:1], 0, true,
			[]string{`server_name: "n1"`, `store_dir: "/data/n1"`, "sync_interval: always"},
			[]string{"cluster", "routes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := natsConfig(tt.nodes, tt.i, tt.always)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.wantAbsent {
				if strings.Contains(got, w) {
					t.Errorf("config holds %q:\n%s", w, got)
				}
			}
		})
	}
	// The real parser is the last word on the format: nats-server -t reads
	// a config and exits.
	t.Run("nats-server -t accepts it", func(t *testing.T) {
		bin := natsServerForTest(t)
		dir := t.TempDir()
		ns := slices.Clone(nodes)
		for i := range ns {
			ns[i].storeDir = filepath.Join(dir, ns[i].name)
		}
		for i := range ns {
			for _, always := range []bool{true, false} {
				conf := filepath.Join(dir, fmt.Sprintf("%s-%v.conf", ns[i].name, always))
				if err := os.WriteFile(conf, []byte(natsConfig(ns, i, always)), 0o644); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command(bin, "-t", "-c", conf).CombinedOutput(); err != nil {
					t.Fatalf("nats-server -t rejects %s: %v\n%s", conf, err, out)
				}
			}
		}
	})
}

func TestFindNATSServer(t *testing.T) {
	_, err := findNATSServer(filepath.Join(t.TempDir(), "nats-server"))
	if !errors.Is(err, errNoNATSServer) {
		t.Fatalf("missing --nats-server-bin: %v, want errNoNATSServer", err)
	}
	if want := "go install github.com/nats-io/nats-server/v2@" + natsServerVersion; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "nats-server")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if got, err := findNATSServer(""); err != nil || got != fake {
		t.Fatalf("on PATH: %q, %v; want %q", got, err, fake)
	}
}

func TestParseBaselines(t *testing.T) {
	tests := []struct {
		in       string
		scenario string
		want     []string // baselinesFor, sorted
		wantErr  bool
	}{
		{"default", "publish", []string{baseRawCommit}, false},
		{"true", "fanout", []string{baseRawGWS}, false},
		{"false", "publish", nil, false},
		{"none", "conns", nil, false},
		{"jetstream", "publish", []string{baseJetStream}, false},
		{"default, jetstream", "publish", []string{baseJetStream, baseRawCommit}, false},
		{"default,jetstream", "fanout", []string{baseRawGWS}, false},
		{"raw-commit", "publish", []string{baseRawCommit}, false},
		{"default", "failover", nil, false},
		{"kafka", "publish", nil, true},
		{"none,jetstream", "publish", nil, true},
	}
	for _, tt := range tests {
		names, err := parseBaselines(tt.in)
		if (err != nil) != tt.wantErr {
			t.Fatalf("parseBaselines(%q): %v, want error %v", tt.in, err, tt.wantErr)
		}
		if err != nil {
			continue
		}
		var got []string
		for n := range baselinesFor(names, tt.scenario) {
			got = append(got, n)
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("--baseline %q on %s: %v, want %v", tt.in, tt.scenario, got, tt.want)
		}
	}
	if err := checkBaselines([]string{baseJetStream}, "fanout"); err == nil {
		t.Error("--baseline jetstream accepted for fanout")
	}
	if err := checkBaselines([]string{baseDefault, baseJetStream}, "publish"); err != nil {
		t.Errorf("--baseline default,jetstream for publish: %v", err)
	}
	if _, err := parseSyncs("always,sometimes"); err == nil {
		t.Error("--jetstream-sync sometimes accepted")
	}
}

func TestStepBaselines(t *testing.T) {
	pub := suiteStep{name: "publish-closed", p: Params{Scenario: "publish"}, jetstream: true}
	open := suiteStep{name: "publish-open", p: Params{Scenario: "publish"}}
	tests := []struct {
		names []string
		s     suiteStep
		jsOK  bool
		want  []string
	}{
		{[]string{baseDefault}, pub, true, []string{baseDefault, baseJetStream}},
		{[]string{baseDefault}, pub, false, []string{baseDefault}},
		{[]string{baseDefault}, open, true, []string{baseDefault}},
		{[]string{baseJetStream}, open, true, []string{baseJetStream}},
		{[]string{baseJetStream}, pub, false, nil},
		{[]string{baseNone}, pub, true, []string{baseNone}},
	}
	for _, tt := range tests {
		if got := stepBaselines(tt.names, tt.s, tt.jsOK); !slices.Equal(got, tt.want) {
			t.Errorf("stepBaselines(%v, %s, %v) = %v, want %v", tt.names, tt.s.name, tt.jsOK, got, tt.want)
		}
	}
	if !wantsJetStream([]string{baseDefault}, []suiteStep{open, pub}) || wantsJetStream([]string{baseDefault}, []suiteStep{open}) {
		t.Error("wantsJetStream")
	}
}

// TestJetStreamCluster starts the baseline's 3-node cluster, creates its
// R3 stream, publishes a bounded number of messages from a connection to
// each node, and checks every ack and what the stream holds.
func TestJetStreamCluster(t *testing.T) {
	bin := natsServerForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := testEnv(t)
	tgt, err := startNATS(ctx, bin, 3, syncAlways, e.log)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.close()
	admin, stream, err := openStream(ctx, tgt.urls, 3, "bench.t.>", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Config.Storage != jetstream.FileStorage || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream: replicas %d, storage %v, cluster %+v", info.Config.Replicas, info.Config.Storage, info.Cluster)
	}

	const perConn, subjects = 100, 64
	var mu sync.Mutex
	seqs := map[uint64]string{}
	var wg sync.WaitGroup
	errs := make(chan error, len(tgt.urls))
	for c, url := range tgt.urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := nats.Connect(url)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				errs <- err
				return
			}
			for k := range perConn {
				subj := jsSubject("t", (c*perConn+k)%subjects)
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				ack, err := js.Publish(pctx, subj, []byte(fmt.Sprintf("%d-%d", c, k)))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("publish %d on connection %d: %w", k, c, err)
					return
				}
				if ack.Stream != jsStream || ack.Duplicate {
					errs <- fmt.Errorf("publish %d on connection %d: ack %+v", k, c, ack)
					return
				}
				mu.Lock()
				if prev, dup := seqs[ack.Sequence]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("sequence %d acked twice: %s and %s", ack.Sequence, prev, subj)
					return
				}
				seqs[ack.Sequence] = subj
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := uint64(perConn * len(tgt.urls))
	for seq := uint64(1); seq <= total; seq++ {
		if _, ok := seqs[seq]; !ok {
			t.Fatalf("no ack with sequence %d of 1..%d", seq, total)
		}
	}
	info, err = stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != total || info.State.LastSeq != total || info.State.NumSubjects != subjects {
		t.Fatalf("stream holds %d messages (last seq %d) on %d subjects, want %d on %d", info.State.Msgs, info.State.LastSeq, info.State.NumSubjects, total, subjects)
	}

	tgt.close()
	for _, p := range tgt.procs {
		if p.alive() {
			t.Fatalf("%s still runs after close", p.id)
		}
	}
	if _, err := os.Stat(tgt.dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s left after close: %v", tgt.dir, err)
	}
}

// TestJetStreamBaseline runs the baseline as the publish scenario does,
// both sync settings, and checks its results and ratios.
func TestJetStreamBaseline(t *testing.T) {
	bin := natsServerForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := testEnv(t)
	p := smokeParams("publish")
	herald := &Result{Scenario: "publish", Target: "herald", Params: p, Throughput: 1000, ServerCPU: 1,
		Ack: &Latency{Count: 1000, P50: 4, P99: 20}}
	if err := addJetStream(ctx, e, bin, []string{syncAlways, syncDefault}, p, herald); err != nil {
		t.Fatal(err)
	}
	if len(herald.Baselines) != 2 {
		t.Fatalf("%d baselines, want 2", len(herald.Baselines))
	}
	always := herald.Baselines[0]
	for i, want := range []string{"jetstream-always", "jetstream-default"} {
		b := herald.Baselines[i]
		if b.Target != want {
			t.Fatalf("baseline %d is %s, want %s", i, b.Target, want)
		}
		checkLoad(t, b)
		if len(b.Errors) > 0 {
			t.Fatalf("%s: errors %v", b.Target, b.Errors)
		}
		if b.ServerCPU <= 0 || b.GeneratorCPU <= 0 {
			t.Fatalf("%s: CPU generator %.2f, servers %.2f", b.Target, b.GeneratorCPU, b.ServerCPU)
		}
		if !strings.HasPrefix(b.ServerVersion, "nats-server v") {
			t.Fatalf("%s: server version %q", b.Target, b.ServerVersion)
		}
	}
	want := map[string]float64{
		"publish throughput / jetstream sync always":  1000 / always.Throughput,
		"publish-ack p50 / jetstream sync always p50": 4 / always.Ack.P50,
		"publish-ack p99 / jetstream sync always p99": 20 / always.Ack.P99,
		"server CPU per ack / jetstream sync always":  (1.0 / 1000) / (always.ServerCPU / always.Throughput),
		"publish throughput / jetstream default sync": 1000 / herald.Baselines[1].Throughput,
	}
	for _, x := range herald.Ratios {
		w, ok := want[x.Name]
		if !ok {
			t.Fatalf("unexpected ratio %q", x.Name)
		}
		if x.Value != w || !x.Reference {
			t.Fatalf("%s = %v (reference %v), want %v", x.Name, x.Value, x.Reference, w)
		}
		delete(want, x.Name)
	}
	if len(want) > 0 {
		t.Fatalf("ratios missing: %v", want)
	}
	table := suiteMarkdown([]*Result{herald}, nil, nil, "m", "c", "cmd", time.Now(), time.Second, options{nodes: 3})
	for _, s := range []string{"| publish | jetstream-always |", "| publish | jetstream-default |", "publish throughput / jetstream sync always", "`sync_interval: always`"} {
		if !strings.Contains(table, s) {
			t.Fatalf("table lacks %q:\n%s", s, table)
		}
	}
}

// TestSuiteWithoutNATSServer runs the suite's smallest publish step with
// no nats-server to find: it must still run Herald and the raw commit
// baseline, and say in the table that the JetStream baseline was skipped.
func TestSuiteWithoutNATSServer(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "bench.md")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"herald-bench", "suite", "--herald-bin", heraldBin, "--only", "publish-closed-1", "--groups", "4",
		"--duration", "1s", "--warmup", "200ms", "--retries", "0", "--quiet", "--doc", doc,
		"--nats-server-bin", filepath.Join(dir, "no-nats-server")}
	runWithFastRaft(t, args...)
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"JetStream baseline skipped: nats-server not found", "go install github.com/nats-io/nats-server/v2@",
		"A shortened run", "| publish | herald | 1 publishers × 1 in flight, 1 rooms", "| publish | raw-commit | 1 publishers"} {
		if !strings.Contains(string(b), s) {
			t.Fatalf("doc lacks %q:\n%s", s, b)
		}
	}
	if strings.Contains(string(b), "| jetstream-") {
		t.Fatalf("doc has JetStream rows:\n%s", b)
	}
}
