// Command herald-bench measures Herald end to end over real websockets:
// publish throughput and ack latency, fan-out, idle connections, many
// rooms, and failover, each with its baseline measured in the same run
// (a minimal gws broadcast server, the multiraft layer without websockets).
// It starts a cluster of herald serve processes on loopback (or loads an
// existing one with --url), reports a human table, JSON and SVG charts, and
// runs the reproducible suite behind make bench-e2e.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func main() {
	if runRole() {
		return
	}
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "herald-bench:", err)
		os.Exit(1)
	}
}

// defaults are a scenario's flag defaults.
type defaults struct {
	Params
	usage string
}

var scenarioDefaults = map[string]defaults{
	"publish": {Params{Publishers: 64, Rooms: 64, Inflight: 1, Payload: 100},
		"publishers as fast as acks allow (closed loop) or at a fixed total --rate (open loop): publish-ack latency and throughput; baseline: raw commit"},
	"fanout": {Params{Rooms: 1, Subscribers: 1000, Publishers: 1, Inflight: 16, Payload: 100, Dialers: 64},
		"S subscribers per room, P publishers: deliveries/s and publish-to-delivery latency; baseline: raw gws"},
	"conns": {Params{Conns: 10_000, Rooms: 100, Dialers: 64},
		"C idle authenticated sockets, one room each: server RSS per socket and connect rate; baseline: raw gws"},
	"rooms": {Params{Rooms: 100_000, Conns: 1000, Publishers: 16, Rate: 1000, Payload: 100, Dialers: 32},
		"many rooms (one subscriber each, spread over --conns sockets), light traffic at a fixed --rate to random rooms"},
	"failover": {Params{Publishers: 32, Rooms: 32, Rate: 1000, Payload: 100, Duration: dur(20 * time.Second),
		KillAfter: dur(5 * time.Second), KillNode: "leader", KillSignal: "kill", Interval: dur(100 * time.Millisecond)},
		"steady open-loop load while a node (by default the leader of the first room's group) is killed: spike, errors by code, recovery"},
}

var scenarioFuncs = map[string]func(context.Context, *env, *target, Params) (*Result, error){
	"publish":  runPublish,
	"fanout":   runFanout,
	"conns":    runConns,
	"rooms":    runRooms,
	"failover": runFailover,
}

// commonFlags apply to every scenario and the suite.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "herald-bin", EnvVars: []string{"HERALD_BIN"}, Usage: "herald binary to start the cluster with (go build -o /tmp/herald ./cmd/herald)"},
		&cli.StringSliceFlag{Name: "url", Usage: "load an existing cluster at this websocket URL instead (repeatable: ws://host:port/ws); no baselines, RSS from /metrics"},
		&cli.IntFlag{Name: "nodes", Value: 3, Usage: "nodes of the cluster to start"},
		&cli.IntFlag{Name: "groups", Value: 64, Usage: "raft data groups of the cluster to start"},
		&cli.StringSliceFlag{Name: "server-arg", Usage: "extra flag for every herald serve (repeatable, e.g. --server-arg=--log-store=bolt)"},
		&cli.StringFlag{Name: "baseline", Value: "default", Usage: "baselines to measure in the same run, comma-separated: default (raw-commit for publish, raw-gws for fanout and conns), none, raw-commit, raw-gws, jetstream (publish: a nats-server cluster)"},
		&cli.StringFlag{Name: "nats-server-bin", EnvVars: []string{"NATS_SERVER_BIN"}, Usage: "nats-server binary of the jetstream baseline (default: PATH, then $(go env GOPATH)/bin; install: go install " + natsServerModule + "@" + natsServerVersion + ")"},
		&cli.StringFlag{Name: "jetstream-sync", Value: "always,default", Usage: "jetstream baseline: its runs, comma-separated: always (sync_interval: always, an fsync per write) and default (the server's periodic sync)"},
		&cli.BoolFlag{Name: "commit-inproc", Usage: "publish: also measure the raw commit baseline with the three nodes in this process"},
		&cli.StringFlag{Name: "token", Usage: "JWT every socket authenticates with (default: insecure auth by user name)"},
		&cli.IntFlag{Name: "source-ips", Usage: "spread sockets over 127.0.0.1..N from the start (default: move to the next address when one runs out of ports)"},
		&cli.DurationFlag{Name: "call-timeout", Value: 15 * time.Second, Usage: "the generator's bound on one request"},
		&cli.DurationFlag{Name: "timeout", Usage: "bound of the whole run (default: generous for the scenario)"},
		&cli.StringFlag{Name: "profile-dir", Usage: "write CPU profiles of the server processes over the window here"},
		&cli.BoolFlag{Name: "quiet", Usage: "no progress lines"},
	}
}

func scenarioFlags(d defaults) []cli.Flag {
	p := d.Params
	dv := func(v dur, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return time.Duration(v)
	}
	return append(commonFlags(),
		&cli.IntFlag{Name: "rooms", Value: p.Rooms, Usage: "rooms"},
		&cli.IntFlag{Name: "conns", Value: p.Conns, Usage: "sockets (conns: idle sockets; rooms: subscriber sockets)"},
		&cli.IntFlag{Name: "subscribers", Value: p.Subscribers, Usage: "subscriber sockets per room (fanout)"},
		&cli.IntFlag{Name: "publishers", Value: p.Publishers, Usage: "publisher sockets"},
		&cli.IntFlag{Name: "inflight", Value: p.Inflight, Usage: "publishes in flight per publisher (closed loop)"},
		&cli.Float64Flag{Name: "rate", Value: p.Rate, Usage: "total publishes per second (open loop); 0: closed loop"},
		&cli.IntFlag{Name: "payload", Value: p.Payload, Usage: "bytes of each publish's data (at least 32: it carries the send time)"},
		&cli.DurationFlag{Name: "duration", Value: dv(p.Duration, 10*time.Second), Usage: "measured window"},
		&cli.DurationFlag{Name: "warmup", Value: dv(p.Warmup, 3*time.Second), Usage: "load before the window, not measured"},
		&cli.DurationFlag{Name: "interval", Value: dv(p.Interval, time.Second), Usage: "time series resolution"},
		&cli.IntFlag{Name: "dialers", Value: max(p.Dialers, 32), Usage: "sockets opened at a time"},
		&cli.DurationFlag{Name: "kill-after", Value: dv(p.KillAfter, 5*time.Second), Usage: "failover: time into the window of the kill"},
		&cli.StringFlag{Name: "kill-node", Value: p.KillNode, Usage: "failover: node id to kill, or leader (of the first room's group)"},
		&cli.StringFlag{Name: "kill-signal", Value: p.KillSignal, Usage: "failover: kill (SIGKILL, a crash) or term (SIGTERM, a graceful stop)"},
		&cli.StringFlag{Name: "json", Usage: "write the result as JSON to this file (- for stdout)"},
		&cli.StringFlag{Name: "plot", Usage: "write latency and throughput over time to this SVG file"},
	)
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "herald-bench",
		Usage: "end-to-end load generator and benchmark suite for Herald",
		Description: "Each scenario starts a cluster of herald serve processes on loopback (--herald-bin), loads it\n" +
			"over websockets, measures its baseline in the same run, and stops everything it started.\n" +
			"Latencies count from the scheduled send, so open-loop runs show queueing.",
	}
	for _, name := range []string{"publish", "fanout", "conns", "rooms", "failover"} {
		d := scenarioDefaults[name]
		app.Commands = append(app.Commands, &cli.Command{
			Name: name, Usage: d.usage, Flags: scenarioFlags(d),
			Action: func(c *cli.Context) error { return scenarioAction(c, name) },
		})
	}
	app.Commands = append(app.Commands, suiteCommand())
	return app
}

// options are the common flags, read.
type options struct {
	bin        string
	urls       []string
	nodes      int
	groups     int
	serverArgs []string
	baselines  []string // --baseline, read by parseBaselines; none with --url
	natsBin    string   // --nats-server-bin, as given
	jsSync     []string // the jetstream baseline's sync settings, in run order
	inproc     bool     // also the in-process raw commit baseline
	jsonOut    string
	plot       string
}

func newEnv(c *cli.Context) *env {
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	return &env{
		log:         os.Stderr,
		progress:    !c.Bool("quiet"),
		dialer:      newDialer(c.Int("source-ips")),
		token:       c.String("token"),
		callTimeout: c.Duration("call-timeout"),
		runID:       hex.EncodeToString(id),
		profileDir:  c.String("profile-dir"),
	}
}

func readOptions(c *cli.Context) (options, error) {
	o := options{bin: c.String("herald-bin"), urls: c.StringSlice("url"), nodes: c.Int("nodes"),
		groups: c.Int("groups"), serverArgs: c.StringSlice("server-arg"), natsBin: c.String("nats-server-bin"),
		inproc: c.Bool("commit-inproc"), jsonOut: c.String("json"), plot: c.String("plot")}
	var err error
	if o.baselines, err = parseBaselines(c.String("baseline")); err != nil {
		return o, err
	}
	if len(o.urls) > 0 {
		o.baselines = nil
	}
	if o.jsSync, err = parseSyncs(c.String("jetstream-sync")); err != nil {
		return o, err
	}
	return o, nil
}

func readParams(c *cli.Context, name string) Params {
	return Params{Scenario: name, Nodes: c.Int("nodes"), Groups: c.Int("groups"),
		Rooms: c.Int("rooms"), Conns: c.Int("conns"), Subscribers: c.Int("subscribers"),
		Publishers: c.Int("publishers"), Inflight: c.Int("inflight"), Payload: c.Int("payload"),
		Rate: c.Float64("rate"), Duration: dur(c.Duration("duration")), Warmup: dur(c.Duration("warmup")),
		Interval: dur(c.Duration("interval")), Dialers: c.Int("dialers"),
		KillAfter: dur(c.Duration("kill-after")), KillNode: c.String("kill-node"), KillSignal: c.String("kill-signal")}
}

// runContext is bounded by --timeout (or bound) and ends on SIGINT or
// SIGTERM, so that the deferred stops of every process run.
func runContext(c *cli.Context, bound time.Duration) (context.Context, context.CancelFunc) {
	if t := c.Duration("timeout"); t > 0 {
		bound = t
	}
	sigCtx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run stops and cleans up; a second one
		// ends the tool at once (its children die with it).
		<-sigCtx.Done()
		stop()
	}()
	ctx, cancel := context.WithTimeout(sigCtx, bound)
	return ctx, func() { cancel(); stop() }
}

// bound is a generous limit for one scenario with its baseline.
func bound(p Params) time.Duration {
	one := time.Duration(p.Warmup+p.Duration) + 3*time.Minute
	return 2 * one
}

func scenarioAction(c *cli.Context, name string) error {
	e := newEnv(c)
	o, err := readOptions(c)
	if err != nil {
		return err
	}
	p := readParams(c, name)
	if err := validate(p); err != nil {
		return err
	}
	if err := checkBaselines(o.baselines, name); err != nil {
		return err
	}
	ctx, cancel := runContext(c, bound(p))
	defer cancel()
	res, err := runScenario(ctx, e, o, p)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (the run's bound; --timeout changes it)", err)
		}
		return err
	}
	return report(res, o)
}

func report(res *Result, o options) error {
	human := os.Stdout
	if o.jsonOut == "-" {
		human = os.Stderr
	}
	fmt.Fprintln(human)
	printHuman(human, res)
	switch o.jsonOut {
	case "":
	case "-":
		if err := writeJSON(os.Stdout, res); err != nil {
			return err
		}
	default:
		f, err := os.Create(o.jsonOut)
		if err != nil {
			return err
		}
		if err := writeJSON(f, res); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if o.plot != "" {
		if err := os.WriteFile(o.plot, plotSVG(res), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func validate(p Params) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Rooms < 1 {
		bad("--rooms must be at least 1")
	}
	if p.Scenario != "conns" && p.Publishers < 1 {
		bad("--publishers must be at least 1")
	}
	if p.Scenario != "conns" && p.Payload < dataOverhead {
		bad("--payload must be at least %d bytes: the data carries its send time", dataOverhead)
	}
	if (p.Scenario == "rooms" || p.Scenario == "failover") && p.Rate <= 0 {
		bad("%s runs open loop: give --rate", p.Scenario)
	}
	if p.Scenario == "conns" && p.Conns < 1 {
		bad("--conns must be at least 1")
	}
	if p.Scenario == "fanout" && p.Subscribers < 1 {
		bad("--subscribers must be at least 1")
	}
	if p.Duration <= 0 || p.Interval <= 0 {
		bad("--duration and --interval must be positive")
	}
	if p.Scenario == "failover" && (p.KillAfter <= 0 || p.KillAfter >= p.Duration) {
		bad("--kill-after must fall inside --duration")
	}
	if p.Nodes < 1 {
		bad("--nodes must be at least 1")
	}
	return errors.Join(errs...)
}

// sockets is how many sockets a scenario holds open at once on the
// generator's side.
func sockets(p Params) int {
	switch p.Scenario {
	case "conns":
		return p.Conns + p.Nodes
	case "fanout":
		return p.Rooms*p.Subscribers + p.Publishers
	case "rooms":
		return min(p.Conns, p.Rooms) + p.Publishers
	}
	return p.Publishers
}

// checkFiles refuses a scenario that would run out of open files: the
// generator holds one per socket (and so does the raw gws server).
func checkFiles(p Params) error {
	limit, err := openFileLimit()
	if err != nil {
		return nil
	}
	need := sockets(p) + 256
	if uint64(need) > limit {
		return fmt.Errorf("%s needs about %d open files in this process (one per socket, and as many in the raw gws server); the limit is %d (ulimit -n): use fewer sockets or raise the limit",
			p.Scenario, need, limit)
	}
	return nil
}

// runOn runs a scenario on a target and stops the target's processes; a
// server exiting on its own fails the run.
func runOn(ctx context.Context, e *env, tgt *target, p Params, fn func(context.Context, *env, *target, Params) (*Result, error)) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tgt.watch(cancel)
	res, err := fn(ctx, e, tgt, p)
	exits := tgt.unexpectedExits()
	tgt.close()
	if exits != nil {
		return nil, fmt.Errorf("%s on %s: %w", p.Scenario, tgt.kind, exits)
	}
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", p.Scenario, tgt.kind, err)
	}
	return res, nil
}

// runScenario starts the target, runs the scenario and its baselines, and
// stops whatever it started.
func runScenario(ctx context.Context, e *env, o options, p Params) (*Result, error) {
	if err := checkFiles(p); err != nil {
		return nil, err
	}
	want := baselinesFor(o.baselines, p.Scenario)
	var natsBin string
	if want[baseJetStream] {
		// Before Herald's run: a missing nats-server ends the run at once.
		var err error
		if natsBin, err = findNATSServer(o.natsBin); err != nil {
			return nil, err
		}
	}
	fn := scenarioFuncs[p.Scenario]
	var tgt *target
	if len(o.urls) > 0 {
		tgt = externalTarget(o.urls, p.Groups)
	} else {
		var err error
		tgt, err = startHerald(ctx, clusterSpec{bin: o.bin, nodes: p.Nodes, groups: p.Groups, serverArgs: o.serverArgs}, e.log)
		if err != nil {
			return nil, err
		}
	}
	res, err := runOn(ctx, e, tgt, p, fn)
	if err != nil {
		return nil, err
	}
	switch p.Scenario {
	case "publish":
		if want[baseRawCommit] {
			if err := addRawCommit(ctx, e, o, p, res); err != nil {
				return nil, err
			}
		}
		if want[baseJetStream] {
			if err := addJetStream(ctx, e, natsBin, o.jsSync, p, res); err != nil {
				return nil, err
			}
		}
	case "fanout", "conns":
		if !want[baseRawGWS] {
			return res, nil
		}
		raw, err := startRawGWS(ctx)
		if err != nil {
			return nil, fmt.Errorf("raw gws baseline: %w", err)
		}
		base, err := runOn(ctx, e, raw, p, fn)
		if err != nil {
			return nil, fmt.Errorf("raw gws baseline: %w", err)
		}
		res.Baselines = append(res.Baselines, base)
		if p.Scenario == "fanout" {
			res.Ratios = append(res.Ratios, fanoutRatios(res, base)...)
		}
		if p.Scenario == "conns" && base.RSSPerSocket > 0 {
			v := res.RSSPerSocket / base.RSSPerSocket
			res.Ratios = append(res.Ratios, Ratio{Name: "RSS per socket / raw gws", Value: v, Goal: "<= 1.5", Met: v <= 1.5})
		}
		if p.Scenario == "conns" && base.LivePerSocket > 0 {
			v := res.LivePerSocket / base.LivePerSocket
			res.Ratios = append(res.Ratios, Ratio{Name: "live heap+stacks per socket / raw gws", Value: v, Goal: "<= 1.5 (the RSS goal, on live memory)", Met: v <= 1.5})
		}
	}
	return res, nil
}

// fanoutRatios judge a fan-out against raw gws under the same load. As
// fast as the publishers go, the goal is raw gws's deliveries/s. At a fixed
// rate both deliver everything, and the goal is that fan-out adds almost
// nothing to the commit: delivery p99 at most the publish-ack p99 plus
// twice raw gws's delivery p99.
func fanoutRatios(res, base *Result) []Ratio {
	if res.Params.Rate == 0 {
		if base.DeliveryRate <= 0 {
			return nil
		}
		v := res.DeliveryRate / base.DeliveryRate
		return []Ratio{{Name: "deliveries/s / raw gws", Value: v, Goal: ">= 1.0", Met: v >= 1.0}}
	}
	if res.Delivery == nil || res.Ack == nil || base.Delivery == nil || res.Delivery.Count == 0 || base.Delivery.Count == 0 {
		return nil
	}
	bound := res.Ack.P99 + 2*base.Delivery.P99
	v := res.Delivery.P99 / bound
	return []Ratio{{Name: fmt.Sprintf("delivery p99 / (ack p99 + 2 × raw gws delivery p99 = %.1f ms)", bound), Value: v, Goal: "<= 1", Met: v <= 1}}
}

// addRawCommit measures the raw commit baseline (and the in-process one
// with --commit-inproc) and adds it, with its ratios, to res.
func addRawCommit(ctx context.Context, e *env, o options, p Params, res *Result) error {
	base, err := runCommit(ctx, e, p, o.serverArgs)
	if err != nil {
		return fmt.Errorf("raw commit baseline: %w", err)
	}
	res.Baselines = append(res.Baselines, base)
	if o.inproc {
		in, err := runCommitInproc(ctx, e, p, o.serverArgs)
		if err != nil {
			return fmt.Errorf("in-process raw commit baseline: %w", err)
		}
		res.Baselines = append(res.Baselines, in)
		if p.Rate == 0 && in.Throughput > 0 {
			v := res.Throughput / in.Throughput
			res.Ratios = append(res.Ratios, Ratio{Name: "publish throughput / raw commit in one process", Value: v, Goal: "-", Reference: true})
		}
	}
	if p.Rate == 0 && base.Throughput > 0 {
		v := res.Throughput / base.Throughput
		res.Ratios = append(res.Ratios, Ratio{Name: "publish throughput / raw commit", Value: v, Goal: ">= 0.6", Met: v >= 0.6})
	}
	if res.Ack != nil && base.Ack != nil && base.Ack.Count > 0 {
		v := res.Ack.P99 - base.Ack.P99
		res.Ratios = append(res.Ratios, Ratio{Name: "publish-ack p99 - raw commit p99 (ms)", Value: v, Goal: "<= 2", Met: v <= 2})
	}
	return nil
}

// runRole runs what this process was started again for (roleEnv): a
// baseline server or a raw commit node. It reports whether there was one.
func runRole() bool {
	switch os.Getenv(roleEnv) {
	case roleRawGWS:
		rawServerMain()
	case roleCommitNode:
		commitNodeMain()
	default:
		return false
	}
	return true
}
