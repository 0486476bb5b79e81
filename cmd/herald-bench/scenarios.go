package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/wait"
)

// meter measures the window: CPU of the generator and of the servers, the
// time series, and optionally the servers' CPU profiles.
type meter struct {
	tgt     *target
	win     *window
	smp     *sampler
	start   time.Time
	gen0    time.Duration
	srv0    time.Duration
	srvOK   bool
	busy0   time.Duration
	busyOK  bool
	stopSmp chan struct{}
	smpDone chan struct{}
	prof    sync.WaitGroup
}

func startMeter(ctx context.Context, e *env, tgt *target, win *window, p Params, recs ...*recorder) *meter {
	m := &meter{tgt: tgt, win: win, smp: newSampler(time.Duration(p.Interval), recs...),
		stopSmp: make(chan struct{}), smpDone: make(chan struct{})}
	m.start = time.Now()
	win.open(m.start)
	m.gen0 = selfCPU()
	m.srv0, m.srvOK = tgt.cpu()
	m.busy0, m.busyOK = machineBusy()
	go func() {
		defer close(m.smpDone)
		m.smp.run(m.start, m.stopSmp)
	}()
	if e.profileDir != "" {
		if err := os.MkdirAll(e.profileDir, 0o755); err != nil {
			fmt.Fprintf(e.log, "profiles: %v\n", err)
		} else {
			m.profile(ctx, e, p)
		}
	}
	return m
}

// profile fetches a CPU profile of the window from every server process.
func (m *meter) profile(ctx context.Context, e *env, p Params) {
	secs := max(1, int(time.Duration(p.Duration).Seconds()))
	for _, pr := range m.tgt.alive() {
		m.prof.Add(1)
		go func() {
			defer m.prof.Done()
			req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pr.httpBase, secs), nil)
			if err != nil {
				return
			}
			if pr.token != "" {
				req.Header.Set("Authorization", "Bearer "+pr.token)
			}
			client := &http.Client{Timeout: time.Duration(secs+30) * time.Second}
			resp, err := client.Do(req)
			if err != nil {
				fmt.Fprintf(e.log, "profile of %s: %v\n", pr.id, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				fmt.Fprintf(e.log, "profile of %s: %s: %s\n", pr.id, resp.Status, bytes.TrimSpace(msg))
				return
			}
			name := filepath.Join(e.profileDir, fmt.Sprintf("%s-%s-%s.cpu.pprof", p.Scenario, m.tgt.kind, pr.id))
			f, err := os.Create(name)
			if err != nil {
				fmt.Fprintf(e.log, "profile of %s: %v\n", pr.id, err)
				return
			}
			_, err = f.ReadFrom(resp.Body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				fmt.Fprintf(e.log, "profile of %s: %v\n", pr.id, err)
				return
			}
			fmt.Fprintf(e.log, "wrote %s\n", name)
		}()
	}
}

// stop closes the window and returns its length and the CPU used in it, in
// cores.
func (m *meter) stop(res *Result) {
	end := time.Now()
	m.win.close(end)
	secs := end.Sub(m.start).Seconds()
	res.Window = secs
	gen := selfCPU() - m.gen0
	res.GeneratorCPU = gen.Seconds() / secs
	var srv time.Duration
	if m.srvOK {
		if s, ok := m.tgt.cpu(); ok {
			srv = s - m.srv0
			res.ServerCPU = srv.Seconds() / secs
		}
	}
	if busy, ok := machineBusy(); ok && m.busyOK {
		res.OtherCPU = max(0, (busy-m.busy0-gen-srv).Seconds()/secs)
	}
	close(m.stopSmp)
	<-m.smpDone
	m.prof.Wait()
}

// acked gives res what the publishers of the window m measured recorded:
// the acknowledged publishes' latency and count, their throughput, the
// errors, and the series of acks.
func (m *meter) acked(res *Result, acks *recorder, errs *errorCounts) {
	res.Ack = summarize(acks.total())
	res.Ops = res.Ack.Count
	res.Throughput = float64(res.Ops) / res.Window
	res.Errors = errs.snapshot()
	res.Series = map[string][]Point{"ack": m.smp.get("ack")}
}

// sleepCtx sleeps for d or until ctx ends, and then returns its error.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if !wait.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// progress prints a status line every second until stop is closed.
func progress(e *env, label string, status func() string, stop <-chan struct{}) {
	if !e.progress {
		return
	}
	tty := isTerminal(e.log)
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// A log (make's output, CI) gets a line every 5 seconds, a terminal one
	// line rewritten every second.
	every := 5
	if tty {
		every = 1
	}
	for n := 1; ; n++ {
		select {
		case <-stop:
			if tty {
				fmt.Fprint(e.log, "\r\033[K")
			}
			return
		case <-t.C:
			st := status() // every second, so that its rates cover one second
			if n%every != 0 {
				continue
			}
			line := fmt.Sprintf("%s %5.1fs  %s", label, time.Since(start).Seconds(), st)
			if tty {
				fmt.Fprintf(e.log, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(e.log, line)
			}
		}
	}
}

// rate turns a counter into a per-second rate between calls.
type rateOf struct {
	last  int64
	lastT time.Time
}

func (r *rateOf) of(n int64) float64 {
	now := time.Now()
	var v float64
	if !r.lastT.IsZero() {
		v = float64(n-r.last) / now.Sub(r.lastT).Seconds()
	}
	r.last, r.lastT = n, now
	return v
}

// loadSpec is a publish load with optional subscribers.
type loadSpec struct {
	subs     int                  // subscriber sockets; 0: none
	subRooms func(i int) []string // the rooms socket i subscribes to
	perRoom  int                  // subscribers of each room
	dialers  int
	roomRSS  bool // measure the servers' memory before and after subscribing
	pub      pubConfig
	// during runs in the window's goroutine, from its start.
	during func(ctx context.Context, start time.Time, res *Result)
}

func roomNames(e *env, n int) []string {
	rooms := make([]string, n)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("bench-%s-%d", e.runID, i)
	}
	return rooms
}

// runLoad runs publishers (and subscribers) against a target for the
// warm-up and the window.
func runLoad(ctx context.Context, e *env, tgt *target, p Params, spec loadSpec) (*Result, error) {
	res := &Result{Scenario: p.Scenario, Target: tgt.kind, Mode: p.mode(), Params: p, Started: time.Now()}
	win := newWindow()
	ss := newSubscribers(e, win)
	defer ss.closeAll()
	if spec.subs > 0 {
		var before memSample
		if spec.roomRSS {
			before = tgt.settledMemory(ctx)
		}
		fmt.Fprintf(e.log, "%s on %s: opening %d subscriber sockets\n", p.Scenario, tgt.kind, spec.subs)
		took, err := ss.open(ctx, spec.subs, max(spec.dialers, 1), tgt.urls, spec.subRooms, true)
		if err != nil {
			return nil, err
		}
		res.Sockets = spec.subs
		res.ConnectRate = float64(spec.subs) / took.Seconds()
		res.Connect = summarize(ss.connects.total())
		subs := ss.subscribes.total()
		res.Subscribe = summarize(subs)
		res.SubscribeRate = float64(subs.TotalCount()) / took.Seconds()
		if spec.roomRSS && before.err == nil {
			if after := tgt.settledMemory(ctx); after.err == nil {
				res.ServerRSSBefore, res.ServerRSSAfter = before.rss, after.rss
				res.RSSPerRoom = float64(after.rss-before.rss) / float64(p.Rooms)
				res.ServerLiveBefore, res.ServerLiveAfter = before.live, after.live
				res.LivePerRoom = float64(after.live-before.live) / float64(p.Rooms)
			}
		}
	}
	ps := newPublishers(e, spec.pub, win)
	defer ps.closeAll()
	if err := ps.connect(ctx); err != nil {
		return nil, err
	}
	ps.start(ctx)
	halted := false
	defer func() {
		if !halted {
			ps.halt(0)
		}
	}()

	phase := "warm-up"
	var phaseMu sync.Mutex
	stopProgress := make(chan struct{})
	var acksRate, delRate, cpuRate rateOf
	go progress(e, fmt.Sprintf("%s/%s", p.Scenario, tgt.kind), func() string {
		phaseMu.Lock()
		ph := phase
		phaseMu.Unlock()
		s := fmt.Sprintf("%-7s acks %8s/s  errors %d  generator CPU %.2f", ph, thousands(acksRate.of(ps.okAll.Load())), ps.errs.n.Load(), cpuRate.of(int64(selfCPU()))/1e9)
		if spec.subs > 0 {
			s += fmt.Sprintf("  deliveries %9s/s", thousands(delRate.of(ss.all.Load())))
		}
		return s
	}, stopProgress)
	defer close(stopProgress)

	if err := sleepCtx(ctx, time.Duration(p.Warmup)); err != nil {
		return nil, err
	}
	phaseMu.Lock()
	phase = "measure"
	phaseMu.Unlock()
	m := startMeter(ctx, e, tgt, win, p, ps.acks, ss.deliveries)
	var during sync.WaitGroup
	if spec.during != nil {
		during.Add(1)
		go func() {
			defer during.Done()
			spec.during(ctx, m.start, res)
		}()
	}
	err := sleepCtx(ctx, time.Duration(p.Duration))
	m.stop(res)
	during.Wait()
	if err != nil {
		return nil, err
	}
	phaseMu.Lock()
	phase = "drain"
	phaseMu.Unlock()
	halted = true
	ps.halt(e.callTimeout + time.Second)
	if spec.subs > 0 {
		ss.waitQuiet(500*time.Millisecond, 5*time.Second)
	}

	m.acked(res, ps.acks, &ps.errs)
	if spec.pub.rate > 0 {
		res.SendLag = summarize(ps.lag.total())
	}
	res.Reconnects = ps.reconnects.Load()
	if spec.subs > 0 {
		for k, v := range ss.lost() {
			if res.Errors == nil {
				res.Errors = map[string]int64{}
			}
			res.Errors[k] += v
		}
		res.Delivery = summarize(ss.deliveries.total())
		res.Deliveries = res.Delivery.Count
		res.DeliveryRate = float64(res.Deliveries) / res.Window
		res.ExpectedDeliveries = ps.okInWindow() * int64(spec.perRoom)
		res.Series["delivery"] = m.smp.get("delivery")
	}
	return res, nil
}

// spreadOver gives each publisher its own room, round robin.
func spreadOver(rooms int) func(pub, k int) int { return func(pub, _ int) int { return pub % rooms } }

func runPublish(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	rooms := roomNames(e, p.Rooms)
	return runLoad(ctx, e, tgt, p, loadSpec{pub: pubConfig{
		n: p.Publishers, urls: tgt.urls, rate: p.Rate, inflight: p.Inflight,
		payload: newPayload(p.Payload), rooms: rooms, room: spreadOver(p.Rooms)}})
}

func runFanout(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	rooms := roomNames(e, p.Rooms)
	return runLoad(ctx, e, tgt, p, loadSpec{
		subs:     p.Rooms * p.Subscribers,
		subRooms: func(i int) []string { return []string{rooms[i%p.Rooms]} },
		perRoom:  p.Subscribers,
		dialers:  p.Dialers,
		pub: pubConfig{n: p.Publishers, urls: tgt.urls, rate: p.Rate, inflight: p.Inflight,
			payload: newPayload(p.Payload), rooms: rooms, room: spreadOver(p.Rooms)},
	})
}

// runRooms spreads many rooms over subscriber sockets (one subscriber per
// room) and publishes to rooms picked at random, at a fixed total rate.
func runRooms(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	rooms := roomNames(e, p.Rooms)
	socks := max(1, min(p.Conns, p.Rooms))
	per := (p.Rooms + socks - 1) / socks
	return runLoad(ctx, e, tgt, p, loadSpec{
		subs: socks,
		subRooms: func(i int) []string {
			lo, hi := i*per, min((i+1)*per, p.Rooms)
			return rooms[min(lo, hi):hi]
		},
		perRoom: 1,
		dialers: p.Dialers,
		roomRSS: true,
		pub: pubConfig{n: p.Publishers, urls: tgt.urls, rate: p.Rate, inflight: p.Inflight,
			payload: newPayload(p.Payload), rooms: rooms,
			room: func(pub, k int) int {
				return int(rand.Uint64N(uint64(p.Rooms)))
			}},
	})
}

// runConns opens idle sockets, each authenticated and subscribed to one
// room, and measures the servers' memory per socket and the connect rate.
func runConns(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	res := &Result{Scenario: p.Scenario, Target: tgt.kind, Params: p, Started: time.Now()}
	rooms := roomNames(e, p.Rooms)
	// The first socket pays for what is per node, not per socket: pools,
	// and in Herald the per-group event feeds of the rooms.
	warm := newSubscribers(e, newWindow())
	if _, err := warm.open(ctx, len(tgt.urls), len(tgt.urls), tgt.urls, func(int) []string { return rooms }, false); err != nil {
		return nil, err
	}
	defer warm.closeAll()
	if err := sleepCtx(ctx, time.Duration(p.Warmup)); err != nil {
		return nil, err
	}
	before := tgt.settledMemory(ctx)
	ss := newSubscribers(e, newWindow())
	defer ss.closeAll()
	fmt.Fprintf(e.log, "conns on %s: opening %d sockets, %d at a time\n", tgt.kind, p.Conns, p.Dialers)
	gen0 := selfCPU()
	srv0, srvOK := tgt.cpu()
	busy0, busyOK := machineBusy()
	took, err := ss.open(ctx, p.Conns, p.Dialers, tgt.urls, func(i int) []string { return []string{rooms[i%p.Rooms]} }, false)
	if err != nil {
		return nil, err
	}
	res.Sockets = p.Conns
	res.ConnectRate = float64(p.Conns) / took.Seconds()
	res.Connect = summarize(ss.connects.total())
	gen := selfCPU() - gen0
	res.GeneratorCPU = gen.Seconds() / took.Seconds()
	var srv time.Duration
	if s, ok := tgt.cpu(); ok && srvOK {
		srv = s - srv0
		res.ServerCPU = srv.Seconds() / took.Seconds()
	}
	if busy, ok := machineBusy(); ok && busyOK {
		res.OtherCPU = max(0, (busy-busy0-gen-srv).Seconds()/took.Seconds())
	}
	res.Window = took.Seconds()
	res.Notes = append(res.Notes, "CPU is over the connect phase")
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	after := tgt.settledMemory(ctx)
	if before.err == nil && after.err == nil {
		n := float64(p.Conns)
		res.ServerRSSBefore, res.ServerRSSAfter = before.rss, after.rss
		res.RSSPerSocket = float64(after.rss-before.rss) / n
		res.ServerLiveBefore, res.ServerLiveAfter = before.live, after.live
		res.LivePerSocket = float64(after.live-before.live) / n
		res.GoroutinesPerSocket = float64(after.goroutines-before.goroutines) / n
	} else {
		res.Notes = append(res.Notes, fmt.Sprintf("no server memory: %v", errors.Join(before.err, after.err)))
	}
	// Hold the sockets idle for the duration: none should be dropped.
	if err := sleepCtx(ctx, time.Duration(p.Duration)); err != nil {
		return nil, err
	}
	res.Errors = ss.lost()
	return res, nil
}

// runFailover publishes at a fixed rate and, KillAfter into the window,
// kills the node that leads the first room's group (or the named node).
func runFailover(ctx context.Context, e *env, tgt *target, p Params) (*Result, error) {
	if len(tgt.procs) == 0 {
		return nil, errors.New("failover kills a server process: it needs the cluster this tool starts, not --url")
	}
	if len(tgt.procs) < 3 {
		return nil, errors.New("failover needs at least 3 nodes")
	}
	rooms := roomNames(e, p.Rooms)
	sig := syscall.SIGKILL
	if strings.EqualFold(p.KillSignal, "term") {
		sig = syscall.SIGTERM
	}
	var fo Failover
	fo.Signal = map[syscall.Signal]string{syscall.SIGKILL: "kill", syscall.SIGTERM: "term"}[sig]
	res, err := runLoad(ctx, e, tgt, p, loadSpec{
		pub: pubConfig{n: p.Publishers, urls: tgt.urls, rate: p.Rate, inflight: p.Inflight,
			payload: newPayload(p.Payload), rooms: rooms, room: spreadOver(p.Rooms)},
		during: func(ctx context.Context, start time.Time, _ *Result) {
			leader, group, err := tgt.leaderOf(ctx, rooms[0])
			fo.Group = group
			victim := p.KillNode
			if victim == "" || victim == "leader" {
				if err != nil {
					fmt.Fprintf(e.log, "failover: %v\n", err)
					return
				}
				victim = leader
			}
			pr := tgt.procByID(victim)
			if pr == nil {
				fmt.Fprintf(e.log, "failover: no node %q\n", victim)
				return
			}
			if sleepCtx(ctx, time.Until(start.Add(time.Duration(p.KillAfter)))) != nil {
				return
			}
			killed := time.Now()
			fo.Killed, fo.KillAt = victim, killed.Sub(start).Seconds()
			fmt.Fprintf(e.log, "failover: SIG%s to %s (leader of group %d) at %.1fs\n", strings.ToUpper(fo.Signal), victim, group, fo.KillAt)
			pr.signal(sig)
			// Watch for the group's new leader through a surviving node.
			for ctx.Err() == nil && time.Since(killed) < 30*time.Second {
				for _, other := range tgt.alive() {
					if other == pr {
						continue
					}
					c := admin.NewClient(other.httpBase, other.token)
					qctx, cancel := context.WithTimeout(ctx, time.Second)
					g, err := c.Group(qctx, group)
					cancel()
					if err == nil && g.Leader != "" && g.Leader != victim {
						fo.NewLeader, fo.LeaderAfter = g.Leader, time.Since(killed).Seconds()
						return
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	analyzeFailover(&fo, res.Series["ack"], p.Rate)
	res.Failover = &fo
	return res, nil
}

// analyzeFailover reads the kill's effect off the acks' time series: the
// rate and p99 before; the lowest 1 s throughput and the worst latency
// after; when throughput came back (at 90% of the rate before, after its
// first dip under that); and when the publishes the kill
// held up were through (the end of the first run of intervals whose p99 is
// over five times the p99 before, and 50 ms over it, starting within 15 s
// of the kill). Only the kill's own dip and spike count: a shared machine
// has later hiccups of its own.
func analyzeFailover(fo *Failover, series []Point, rate float64) {
	fo.RecoveredAt, fo.LatencyAfter = -1, -1
	if len(series) < 2 || fo.Killed == "" {
		return
	}
	step := series[1].T - series[0].T
	if step <= 0 {
		return
	}
	var beforeN int64
	var beforeT float64
	var beforeP99 []float64
	killIdx := len(series)
	for i, pt := range series {
		if pt.T <= fo.KillAt {
			beforeN += pt.Count
			beforeT = pt.T
			if pt.Count > 0 {
				beforeP99 = append(beforeP99, pt.P99)
			}
		} else if killIdx == len(series) {
			killIdx = i
		}
	}
	if beforeT > 0 {
		fo.BeforeRate = float64(beforeN) / beforeT
	}
	if len(beforeP99) > 0 {
		// The median of the intervals' p99s: one slow interval before the
		// kill should not set the bar.
		slices.Sort(beforeP99)
		fo.BeforeP99 = beforeP99[len(beforeP99)/2]
	}
	target := 0.9 * fo.BeforeRate
	if rate > 0 {
		target = 0.9 * min(rate, fo.BeforeRate)
	}
	per := max(1, int(1/step+0.5)) // intervals in one second
	fo.MinRate = -1
	for i := killIdx; i+per <= len(series); i++ {
		var n int64
		for _, pt := range series[i : i+per] {
			n += pt.Count
		}
		if r := float64(n) / (float64(per) * step); fo.MinRate < 0 || r < fo.MinRate {
			fo.MinRate = r
		}
	}
	fo.MinRate = max(fo.MinRate, 0)
	// Throughput is judged per interval, two in a row either way: a 1 s
	// average would hide the dip behind the burst of held-up acks that
	// ends it.
	dipped, below, above := false, 0, 0
	for i := killIdx; i < len(series) && fo.RecoveredAt < 0; i++ {
		if float64(series[i].Count)/step < target {
			below, above = below+1, 0
			dipped = dipped || below >= 2
			continue
		}
		below = 0
		if above++; dipped && above >= 2 {
			fo.RecoveredAt = max(0, series[i-1].T-step-fo.KillAt)
		}
	}
	if !dipped {
		fo.RecoveredAt = 0
	}
	limit := max(5*fo.BeforeP99, fo.BeforeP99+50)
	spikeEnd, inSpike := -1, false
	for i := killIdx; i < len(series); i++ {
		fo.SpikeMax = max(fo.SpikeMax, series[i].Max)
		slow := series[i].Count > 0 && series[i].P99 > limit
		switch {
		case slow && spikeEnd < 0 && !inSpike && series[i].T-fo.KillAt <= 15:
			inSpike = true
		case !slow && inSpike:
			inSpike = false
			spikeEnd = i - 1
		}
		if spikeEnd >= 0 {
			break
		}
	}
	switch {
	case spikeEnd >= 0:
		fo.LatencyAfter = series[spikeEnd].T - fo.KillAt
	case !inSpike:
		fo.LatencyAfter = 0
	}
}
