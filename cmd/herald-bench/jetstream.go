package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream baseline (publish) puts Herald's publish scenario on a
// NATS JetStream cluster: the same number of server processes on loopback,
// one stream replicated on three of them (R3) in file storage, and one
// subject of it per room, which like a room has one order decided by a
// quorum before the ack. Each publisher has its own connection (to node i
// mod nodes, as its socket would have) and publishes synchronously
// (js.Publish waits for the stream's PubAck), with the schedule, payload,
// warm-up and window of Herald's run. The generator is this process, as in
// Herald's run, so the CPU columns compare the same things.

// jsStream names the baseline's stream.
const jsStream = "HERALDBENCH"

// jsSubject is the subject standing for a room.
func jsSubject(runID string, room int) string { return fmt.Sprintf("bench.%s.%d", runID, room) }

// addJetStream measures the JetStream baseline once per sync setting, each
// on a fresh cluster, and adds the results and their ratios to res.
func addJetStream(ctx context.Context, e *env, bin string, syncs []string, p Params, res *Result) error {
	version := natsServerVersionOf(bin)
	runs := map[string]*Result{}
	for _, sync := range syncs {
		tgt, err := startNATS(ctx, bin, p.Nodes, sync, e.log)
		if err != nil {
			return fmt.Errorf("jetstream baseline (sync %s): %w", sync, err)
		}
		base, err := runOn(ctx, e, tgt, p, runJetStreamPublish)
		if err != nil {
			return fmt.Errorf("jetstream baseline: %w", err)
		}
		base.ServerVersion = "nats-server " + version
		res.Baselines = append(res.Baselines, base)
		runs[sync] = base
	}
	res.Ratios = append(res.Ratios, jetStreamRatios(res, runs[syncAlways], runs[syncDefault])...)
	return nil
}

// jetStreamRatios put Herald's publish next to JetStream's. They have no
// goal: JetStream does less per publish (no websocket, no JSON request,
// no room state), so they show the cost of what Herald adds, not a bar.
// The sync-always run is the one to compare with: like Herald's raft log,
// it fsyncs before the ack.
func jetStreamRatios(h, always, def *Result) []Ratio {
	var out []Ratio
	ref := func(name string, v float64) {
		out = append(out, Ratio{Name: name, Value: v, Goal: "-", Reference: true})
	}
	closed := h.Params.Rate == 0
	if always != nil {
		if closed && always.Throughput > 0 {
			ref("publish throughput / jetstream sync always", h.Throughput/always.Throughput)
		}
		if h.Ack != nil && always.Ack != nil && always.Ack.P50 > 0 && always.Ack.P99 > 0 {
			ref("publish-ack p50 / jetstream sync always p50", h.Ack.P50/always.Ack.P50)
			ref("publish-ack p99 / jetstream sync always p99", h.Ack.P99/always.Ack.P99)
		}
		if hc, jc := cpuPerAck(h), cpuPerAck(always); hc > 0 && jc > 0 {
			ref("server CPU per ack / jetstream sync always", hc/jc)
		}
	}
	if def != nil && closed && def.Throughput > 0 {
		ref("publish throughput / jetstream default sync", h.Throughput/def.Throughput)
	}
	return out
}

// cpuPerAck is the servers' CPU time per acknowledged publish, in seconds.
func cpuPerAck(r *Result) float64 {
	if r.Throughput <= 0 || r.ServerCPU <= 0 {
		return 0
	}
	return r.ServerCPU / r.Throughput
}

// runJetStreamPublish is the publish scenario on a nats-server cluster
// that startNATS started (its runOn function).
func runJetStreamPublish(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	res := &Result{Scenario: p.Scenario, Target: tgt.kind, Mode: p.mode(), Params: p, Started: time.Now()}
	replicas := min(3, len(tgt.urls))
	fmt.Fprintf(e.log, "%s on %s: creating stream %s (R%d, file storage, %d subjects)\n", p.Scenario, tgt.kind, jsStream, replicas, p.Rooms)
	admin, stream, err := openStream(ctx, tgt.urls, replicas, fmt.Sprintf("bench.%s.>", e.runID), 90*time.Second)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	conns, err := connectPublishers(ctx, tgt.urls, p.Publishers, e.runID)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	subjects := make([]string, p.Rooms)
	for i := range subjects {
		subjects[i] = jsSubject(e.runID, i)
	}
	win := newWindow()
	l := &jsLoad{subjects: subjects, pay: newPayload(p.Payload), timeout: e.callTimeout, tally: newTally(win),
		stop: make(chan struct{})}
	jss := make([]jetstream.JetStream, len(conns))
	pubs := make([]int, len(conns))
	for i, nc := range conns {
		if jss[i], err = jetstream.New(nc); err != nil {
			return nil, err
		}
		pubs[i] = i
	}
	drive(p, time.Now(), pubs, l.stop, &l.wg, func(i int, start time.Time) { l.publish(ctx, jss[i], i, start) })
	halted := false
	defer func() {
		if !halted {
			l.halt()
		}
	}()
	stopProgress := make(chan struct{})
	var acksRate, cpuRate rateOf
	go progress(e, p.Scenario+"/"+tgt.kind, func() string {
		srv, _ := tgt.cpu()
		return fmt.Sprintf("acks %8s/s  errors %d  servers CPU %.2f", thousands(acksRate.of(l.okAll.Load())), l.errs.n.Load(), cpuRate.of(int64(srv))/1e9)
	}, stopProgress)
	defer close(stopProgress)
	if err := sleepCtx(ctx, time.Duration(p.Warmup)); err != nil {
		return nil, err
	}
	m := startMeter(ctx, &env{log: e.log}, tgt, win, p, l.acks)
	err = sleepCtx(ctx, time.Duration(p.Duration))
	m.stop(res)
	halted = true
	l.halt()
	if err != nil {
		return nil, err
	}
	m.acked(res, l.acks, &l.errs)
	// An ack is a promise that the stream holds the message: check it, as
	// the consistency harness checks Herald's.
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := stream.Info(ictx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("stream info after the run: %w", err)
	}
	if acked := uint64(l.okAll.Load()); info.State.Msgs < acked {
		return nil, fmt.Errorf("stream %s holds %d messages, but %d publishes were acknowledged", jsStream, info.State.Msgs, acked)
	}
	res.Notes = append(res.Notes, fmt.Sprintf("%d nats-server processes; stream %s R%d in file storage, %d subjects (one per room), holding %d messages after the run (%d acknowledged)",
		len(tgt.procs), jsStream, replicas, p.Rooms, info.State.Msgs, l.okAll.Load()))
	return res, nil
}

// openStream connects to the cluster and creates the stream once
// JetStream has a meta leader, then waits until the stream has a leader
// and every replica is current, all within bound. The caller closes the
// connection.
func openStream(ctx context.Context, urls []string, replicas int, subject string, bound time.Duration) (*nats.Conn, jetstream.Stream, error) {
	deadline := time.Now().Add(bound)
	var nc *nats.Conn
	var stream jetstream.Stream
	var last error
	for {
		if nc == nil {
			nc, last = nats.Connect(strings.Join(urls, ","), nats.Name("herald-bench admin"))
		}
		if nc != nil {
			if stream == nil {
				stream, last = createStream(ctx, nc, replicas, subject)
			}
			if stream != nil {
				if last = streamReady(ctx, stream, replicas); last == nil {
					if last = streamReachable(ctx, urls, strings.TrimSuffix(subject, ">")+"ready"); last == nil {
						return nc, stream, nil
					}
				}
			}
		}
		fail := func(err error) (*nats.Conn, jetstream.Stream, error) {
			if nc != nil {
				nc.Close()
			}
			return nil, nil, err
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("stream %s not ready after %v: %w", jsStream, bound, last))
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return fail(err)
		}
	}
}

func createStream(ctx context.Context, nc *nats.Conn, replicas int, subject string) (jetstream.Stream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Creating a stream that exists with the same config returns it, so a
	// retry after a timed-out attempt that did succeed is harmless.
	return js.CreateStream(cctx, jetstream.StreamConfig{Name: jsStream, Subjects: []string{subject},
		Replicas: replicas, Storage: jetstream.FileStorage})
}

// streamReady says why the stream is not ready to take the load yet: no
// leader, or a replica missing or behind.
func streamReady(ctx context.Context, s jetstream.Stream, replicas int) error {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.Info(ictx)
	if err != nil {
		return err
	}
	if replicas == 1 {
		return nil
	}
	c := info.Cluster
	if c == nil || c.Leader == "" {
		return errors.New("the stream has no leader yet")
	}
	current := 0
	for _, r := range c.Replicas {
		if r.Current && !r.Offline {
			current++
		}
	}
	if current < replicas-1 {
		return fmt.Errorf("%d of %d replicas current", current, replicas-1)
	}
	return nil
}

// streamReachable says whether a publish to subject through each server
// reaches the stream. A stream with a leader and current replicas can
// still be unknown to a server whose routes have not yet carried the
// leader's interest in its subjects; a publish there gets "no responders".
// The probe expects a last sequence no stream has, so the stream answers
// with an error and stores nothing.
func streamReachable(ctx context.Context, urls []string, subject string) error {
	for _, url := range urls {
		nc, err := nats.Connect(url, nats.Name("herald-bench probe"), nats.NoReconnect())
		if err != nil {
			return fmt.Errorf("probe %s: %w", url, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.Publish(pctx, subject, nil, jetstream.WithExpectLastSequence(math.MaxUint64))
		cancel()
		nc.Close()
		var api *jetstream.APIError
		if !errors.As(err, &api) || (api.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence &&
			api.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return fmt.Errorf("probe publish through %s: want the stream's wrong-last-sequence answer, got %v", url, err)
		}
	}
	return nil
}

// connectPublishers opens one connection per publisher, publisher i's to
// urls[i mod len(urls)]. On error it returns the connections it opened,
// for the caller to close.
func connectPublishers(ctx context.Context, urls []string, n int, runID string) ([]*nats.Conn, error) {
	conns := make([]*nats.Conn, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return conns, err
		}
		nc, err := nats.Connect(urls[i%len(urls)], nats.Name(fmt.Sprintf("pub-%s-%d", runID, i)))
		if err != nil {
			return conns, fmt.Errorf("publisher connection %d to %s: %w", i, urls[i%len(urls)], err)
		}
		conns = append(conns, nc)
	}
	return conns, nil
}

// jsLoad is the baseline's publishers and what they measured; drive runs
// them.
type jsLoad struct {
	subjects []string
	pay      payload
	timeout  time.Duration
	tally
	stop chan struct{}
	wg   sync.WaitGroup
}

func (l *jsLoad) publish(ctx context.Context, js jetstream.JetStream, i int, start time.Time) {
	pctx, cancel := context.WithTimeout(ctx, l.timeout)
	ack, err := js.Publish(pctx, l.subjects[i%len(l.subjects)], l.pay.appendData(nil, start.UnixNano()))
	cancel()
	now := time.Now()
	code := ""
	switch {
	case err != nil:
		code = jsErrorCode(err)
	case ack.Stream != jsStream || ack.Sequence == 0 || ack.Duplicate:
		code = "bad_ack"
	}
	if code != "" {
		l.fail(start, code)
		return
	}
	l.ack(i, start, now)
}

// halt stops the publishers and waits for the publishes in flight, which
// the timeout bounds.
func (l *jsLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// jsErrorCode names a failed publish in the result's error counts, in the
// words of the generator's own codes where they mean the same.
func jsErrorCode(err error) string {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return codeTimeout
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrConnectionDraining):
		return codeDisconnected
	case errors.As(err, &api):
		return fmt.Sprintf("jetstream_%d", api.ErrorCode)
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}
