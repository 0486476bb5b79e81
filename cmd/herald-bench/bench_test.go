package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/heraldbin"
	"github.com/heraldhq/herald/multiraft/logstore"
)

// These smoke tests run every scenario for about a second against a small
// cluster of real herald serve processes, and check that the numbers hold
// together; the suite's real runs are make bench-e2e.

var heraldBin string

func TestMain(m *testing.M) {
	// The baselines re-execute this binary as their servers.
	if runRole() {
		return
	}
	dir, err := os.MkdirTemp("", "herald-bench-bin-*")
	if err == nil {
		// Without -race: the servers are what is measured, not tested here.
		heraldBin, err = heraldbin.Build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if left := leftGoroutines(10 * time.Second); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n\n%s\n", strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leftGoroutines waits, within bound, until only the test's own goroutine
// runs (and os/signal's, which lives as long as the process once a signal
// was watched), and returns the stacks of any others: sockets, samplers,
// progress lines, publishers and process watchers all have to end with
// their scenario.
func leftGoroutines(bound time.Duration) []string {
	deadline := time.Now().Add(bound)
	for {
		buf := make([]byte, 1<<20)
		var left []string
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "os/signal.loop") || strings.Contains(g, "leftGoroutines") {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fastRaft is raft timing for tests: elections in a fraction of a second.
var fastRaft = []string{"--heartbeat-timeout=300ms", "--election-timeout=300ms",
	"--leader-lease-timeout=150ms", "--commit-timeout=20ms", "--lease-ttl=3s"}

func testEnv(t *testing.T) *env {
	return &env{log: testWriter{t}, dialer: newDialer(0), callTimeout: 10 * time.Second,
		runID: fmt.Sprintf("t%d", time.Now().UnixNano()%1e6)}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

func smokeParams(scenario string) Params {
	return Params{Scenario: scenario, Nodes: 3, Groups: 4, Rooms: 4, Publishers: 4, Inflight: 2, Payload: 64,
		Duration: dur(1500 * time.Millisecond), Warmup: dur(300 * time.Millisecond), Interval: dur(250 * time.Millisecond),
		Dialers: 8}
}

// checkLoad checks what every publishing scenario must satisfy.
func checkLoad(t *testing.T, r *Result) {
	t.Helper()
	if r.Ops == 0 || r.Throughput <= 0 {
		t.Fatalf("%s on %s: no publish acknowledged: %+v", r.Scenario, r.Target, r)
	}
	if r.Ack == nil || r.Ack.Count != r.Ops {
		t.Fatalf("%s on %s: ack histogram holds %v values, %d publishes acked", r.Scenario, r.Target, r.Ack, r.Ops)
	}
	if !(r.Ack.P50 <= r.Ack.P90 && r.Ack.P90 <= r.Ack.P99 && r.Ack.P99 <= r.Ack.P999 && r.Ack.P999 <= r.Ack.Max) || r.Ack.P50 <= 0 {
		t.Fatalf("%s on %s: percentiles out of order: %+v", r.Scenario, r.Target, r.Ack)
	}
	if r.Window < 1 || r.Window > 5 {
		t.Fatalf("%s on %s: window of %.2fs for a 1.5s run", r.Scenario, r.Target, r.Window)
	}
	var series int64
	for _, p := range r.Series["ack"] {
		series += p.Count
	}
	if series == 0 || series > r.Ops {
		t.Fatalf("%s on %s: the time series counts %d acks of %d", r.Scenario, r.Target, series, r.Ops)
	}
	if r.GeneratorCPU < 0 || r.ServerCPU < 0 {
		t.Fatalf("negative CPU: %+v", r)
	}
}

func checkDeliveries(t *testing.T, r *Result) {
	t.Helper()
	if r.Deliveries == 0 || r.Delivery == nil || r.Delivery.Count != r.Deliveries {
		t.Fatalf("%s on %s: deliveries %d, histogram %+v", r.Scenario, r.Target, r.Deliveries, r.Delivery)
	}
	// Every acked publish reaches every subscriber of its room.
	if r.Deliveries < r.ExpectedDeliveries {
		t.Fatalf("%s on %s: %d deliveries of %d expected", r.Scenario, r.Target, r.Deliveries, r.ExpectedDeliveries)
	}
}

// checkOutputs checks that the JSON reads back and the chart is SVG.
func checkOutputs(t *testing.T, r *Result) {
	t.Helper()
	var buf bytes.Buffer
	if err := writeJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse: %v", err)
	}
	if back.Ops != r.Ops || back.Params.Duration != r.Params.Duration || len(back.Baselines) != len(r.Baselines) {
		t.Fatalf("JSON round trip changed the result: %+v", back)
	}
	svg := plotSVG(r)
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v", err)
		}
	}
	printHuman(io.Discard, r)
}

func TestScenarios(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := testEnv(t)
	tgt, err := startHerald(ctx, clusterSpec{bin: heraldBin, nodes: 3, groups: 4, serverArgs: fastRaft}, e.log)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.close()

	t.Run("publish closed loop", func(t *testing.T) {
		r, err := runPublish(ctx, e, tgt, smokeParams("publish"))
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, r)
		if r.ServerCPU <= 0 {
			t.Fatalf("no server CPU measured")
		}
		base, err := runCommit(ctx, e, smokeParams("publish"), fastRaft)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, base)
		in, err := runCommitInproc(ctx, e, smokeParams("publish"), fastRaft)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, in)
		r.Baselines = append(r.Baselines, base, in)
		checkOutputs(t, r)
	})
	t.Run("publish open loop", func(t *testing.T) {
		p := smokeParams("publish")
		p.Rate = 200
		r, err := runPublish(ctx, e, tgt, p)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, r)
		// An open loop sends on schedule: 200/s for 1.5s.
		if r.Ops+int64(len(r.Errors)) < 200 || r.Ops > 400 {
			t.Fatalf("open loop at 200/s for 1.5s acked %d", r.Ops)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		p := smokeParams("fanout")
		p.Rooms, p.Subscribers, p.Publishers = 2, 10, 2
		r, err := runFanout(ctx, e, tgt, p)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, r)
		checkDeliveries(t, r)
		if r.Sockets != 20 {
			t.Fatalf("%d subscriber sockets, want 20", r.Sockets)
		}
		raw, err := startRawGWS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.close()
		base, err := runFanout(ctx, e, raw, p)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, base)
		checkDeliveries(t, base)
		r.Baselines = append(r.Baselines, base)
		checkOutputs(t, r)
	})
	t.Run("conns", func(t *testing.T) {
		p := smokeParams("conns")
		p.Conns, p.Rooms, p.Duration, p.Warmup = 200, 10, dur(200*time.Millisecond), 0
		r, err := runConns(ctx, e, tgt, p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Sockets != 200 || r.ConnectRate <= 0 || r.Connect.Count != 200 || r.ServerRSSAfter <= 0 || r.ServerLiveAfter <= 0 {
			t.Fatalf("conns: %+v", r)
		}
		if len(r.Errors) > 0 {
			t.Fatalf("idle sockets closed: %v", r.Errors)
		}
		raw, err := startRawGWS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.close()
		base, err := runConns(ctx, e, raw, p)
		if err != nil {
			t.Fatal(err)
		}
		if base.Sockets != 200 || base.ServerRSSAfter <= 0 || base.ServerLiveAfter <= 0 {
			t.Fatalf("conns on raw gws: %+v", base)
		}
		r.Baselines = append(r.Baselines, base)
		checkOutputs(t, r)
	})
	t.Run("rooms", func(t *testing.T) {
		p := smokeParams("rooms")
		p.Rooms, p.Conns, p.Rate = 500, 10, 200
		r, err := runRooms(ctx, e, tgt, p)
		if err != nil {
			t.Fatal(err)
		}
		checkLoad(t, r)
		checkDeliveries(t, r)
		if r.SubscribeRate <= 0 || r.Subscribe.Count != 500 {
			t.Fatalf("rooms: %d subscribes at %.0f/s", r.Subscribe.Count, r.SubscribeRate)
		}
		checkOutputs(t, r)
	})
	// Last: it kills a node of the shared cluster.
	t.Run("failover", func(t *testing.T) {
		p := smokeParams("failover")
		p.Rate, p.Duration, p.KillAfter, p.Interval = 200, dur(3*time.Second), dur(time.Second), dur(100*time.Millisecond)
		p.KillNode, p.KillSignal = "leader", "kill"
		r, err := runFailover(ctx, e, tgt, p)
		if err != nil {
			t.Fatal(err)
		}
		f := r.Failover
		if f == nil || f.Killed == "" || f.BeforeRate <= 0 {
			t.Fatalf("failover: %+v", f)
		}
		if tgt.procByID(f.Killed).alive() {
			t.Fatalf("%s still runs", f.Killed)
		}
		if r.Ops == 0 || r.Ack.Count != r.Ops {
			t.Fatalf("failover: %d acks, histogram %+v", r.Ops, r.Ack)
		}
		checkOutputs(t, r)
	})
}

// runWithFastRaft runs herald-bench with args, its nodes with fastRaft's
// timings, and fails t if it fails.
func runWithFastRaft(t *testing.T, args ...string) {
	t.Helper()
	for _, a := range fastRaft {
		args = append(args, "--server-arg="+a)
	}
	if err := newApp().Run(args); err != nil {
		t.Fatal(err)
	}
}

// TestCommand runs the command line end to end once: it starts and stops
// its own cluster and writes JSON and a chart.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	jsonOut, plotOut := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	args := []string{"herald-bench", "publish", "--herald-bin", heraldBin, "--groups", "2", "--publishers", "2", "--rooms", "2",
		"--duration", "1s", "--warmup", "200ms", "--baseline=false", "--quiet", "--json", jsonOut, "--plot", plotOut}
	runWithFastRaft(t, args...)
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != "publish" || r.Target != "herald" || r.Ops == 0 || r.Ack.Count != r.Ops {
		t.Fatalf("result: %+v", r)
	}
	if svg, err := os.ReadFile(plotOut); err != nil || !bytes.HasPrefix(svg, []byte("<svg")) {
		t.Fatalf("chart: %v %q", err, svg[:min(len(svg), 40)])
	}
}

func TestAnalyzeFailover(t *testing.T) {
	var s []Point
	for i := 1; i <= 100; i++ {
		p := Point{T: float64(i) / 10, Count: 100, Rate: 1000, P99: 5, Max: 8}
		switch {
		case i > 30 && i <= 50: // the kill at 3s: a 2s stall
			p.Count, p.Rate = 30, 300
		case i > 50 && i <= 55:
			p.P99, p.Max, p.Count = 2000, 2100, 300
		}
		s = append(s, p)
	}
	fo := Failover{Killed: "n1", KillAt: 3}
	analyzeFailover(&fo, s, 1000)
	if fo.BeforeRate < 999 || fo.BeforeRate > 1001 || fo.BeforeP99 != 5 {
		t.Fatalf("before: %+v", fo)
	}
	if fo.SpikeMax != 2100 || fo.MinRate > 301 {
		t.Fatalf("spike: %+v", fo)
	}
	if fo.RecoveredAt < 1.5 || fo.RecoveredAt > 2.6 || fo.LatencyAfter < 2.4 || fo.LatencyAfter > 2.6 {
		t.Fatalf("recovery: %+v", fo)
	}
}

func TestEventTime(t *testing.T) {
	frame := []byte(`{"ev":"event","room":"r","epoch":"1","seq":3,"type":"message","member":"m","data":{"t":1234567890123456789,"p":"xx"},"ts":"x"}`)
	if got := eventTime(frame); got != 1234567890123456789 {
		t.Fatalf("eventTime = %d", got)
	}
	if got := eventTime([]byte(`{"ev":"event","data":{"text":"hi"}}`)); got != 0 {
		t.Fatalf("eventTime without t = %d", got)
	}
	b := newPayload(100).appendData(nil, time.Now().UnixNano())
	if len(b) != 100 || !json.Valid(b) {
		t.Fatalf("payload of %d bytes, valid %v: %s", len(b), json.Valid(b), b)
	}
}

func TestSettingsFrom(t *testing.T) {
	s, err := settingsFrom([]string{"--heartbeat-timeout=300ms", "--election-timeout", "400ms", "--leader-lease-timeout=150ms", "--log-store=bolt", "--max-rooms=5"})
	if err != nil {
		t.Fatal(err)
	}
	if s.timing.HeartbeatTimeout != 300*time.Millisecond || s.timing.ElectionTimeout != 400*time.Millisecond || s.logStore != logstore.KindBolt {
		t.Fatalf("settings: %+v", s)
	}
	if _, err := settingsFrom([]string{"--commit-timeout"}); err == nil {
		t.Fatal("a flag without its value passed")
	}
}

func TestUpdateDoc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nintro\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateDoc(path, "table one\n"); err != nil {
		t.Fatal(err)
	}
	if err := updateDoc(path, "table two\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	if !bytes.Contains(b, []byte("table two")) || bytes.Contains(b, []byte("table one")) || bytes.Count(b, []byte("## End to end")) != 1 {
		t.Fatalf("doc:\n%s", s)
	}
}

func TestDialerSpreadsSources(t *testing.T) {
	d := newDialer(0)
	d.portsPerSrc = 2
	var got []string
	for range 5 {
		got = append(got, fmt.Sprint(d.source("127.0.0.1", "127.0.0.1:9", false)))
	}
	want := "[<nil> <nil> 127.0.0.2 127.0.0.2 127.0.0.3]"
	if fmt.Sprint(got) != want {
		t.Fatalf("sources %v, want %s", got, want)
	}
	if ip := d.source("127.0.0.1", "127.0.0.1:9", true); ip.String() != "127.0.0.4" {
		t.Fatalf("after running out of ports: %v", ip)
	}
	if ip := d.source("10.0.0.1", "10.0.0.1:9", false); ip != nil {
		t.Fatalf("a non-loopback destination got source %v", ip)
	}
	forced := newDialer(3)
	got = nil
	for range 4 {
		got = append(got, fmt.Sprint(forced.source("127.0.0.1", "127.0.0.1:9", false)))
	}
	if fmt.Sprint(got) != "[127.0.0.2 127.0.0.3 <nil> 127.0.0.2]" {
		t.Fatalf("forced spread: %v", got)
	}
}

// The fan-out goals of a closed-loop step are on throughput, those of an
// open-loop step on delivery p99 against the commit and raw gws.
func TestFanoutRatios(t *testing.T) {
	closed := &Result{Params: Params{Scenario: "fanout"}, DeliveryRate: 90}
	r := fanoutRatios(closed, &Result{DeliveryRate: 100})
	if len(r) != 1 || r[0].Value != 0.9 || r[0].Met {
		t.Fatalf("closed loop below raw gws: %+v", r)
	}
	if r := fanoutRatios(closed, &Result{DeliveryRate: 90}); len(r) != 1 || !r[0].Met {
		t.Fatalf("closed loop at raw gws: %+v", r)
	}
	open := &Result{Params: Params{Scenario: "fanout", Rate: 100},
		Ack: &Latency{Count: 1, P99: 10}, Delivery: &Latency{Count: 1, P99: 15}}
	raw := &Result{Delivery: &Latency{Count: 1, P99: 2}}
	r = fanoutRatios(open, raw) // bound 10 + 2×2 = 14 ms
	if len(r) != 1 || r[0].Met || r[0].Value <= 1 || !strings.Contains(r[0].Name, "14.0 ms") {
		t.Fatalf("open loop over its bound: %+v", r)
	}
	open.Delivery.P99 = 14
	if r := fanoutRatios(open, raw); len(r) != 1 || !r[0].Met {
		t.Fatalf("open loop at its bound: %+v", r)
	}
}
