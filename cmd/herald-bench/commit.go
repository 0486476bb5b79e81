package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/wsfront/auth"
)

// inproc is a Herald cluster inside this process, for the raw commit
// baseline: the same nodes as herald serve runs (default raft timing,
// badger log store, the same groups), driven through Host.Propose with no
// websocket in between. It follows internal/testcluster, which needs a
// testing.TB.
type inproc struct {
	dir   string
	nodes []*herald.Node
}

// inprocSettings are the herald serve flags of the measured cluster that
// change the commit path, so that the baseline runs with the same.
type inprocSettings struct {
	timing   multiraft.Timing
	leaseTTL time.Duration
	logStore logstore.Kind
}

// settingsFrom reads the raft timing, lease and log store flags out of
// --server-arg values (--name=value or --name value); the rest do not
// touch the commit path.
func settingsFrom(args []string) (inprocSettings, error) {
	s := inprocSettings{timing: multiraft.DefaultTiming(), leaseTTL: 10 * time.Second, logStore: logstore.DefaultKind}
	durations := map[string]*time.Duration{
		"heartbeat-timeout": &s.timing.HeartbeatTimeout, "election-timeout": &s.timing.ElectionTimeout,
		"leader-lease-timeout": &s.timing.LeaderLeaseTimeout, "commit-timeout": &s.timing.CommitTimeout,
		"lease-ttl": &s.leaseTTL,
	}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		_, isDur := durations[name]
		if !isDur && name != "log-store" {
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return s, fmt.Errorf("--server-arg %s: no value", args[i])
			}
			i++
			value = args[i]
		}
		if isDur {
			d, err := time.ParseDuration(value)
			if err != nil {
				return s, fmt.Errorf("--server-arg --%s: %w", name, err)
			}
			*durations[name] = d
			continue
		}
		kind, err := logstore.ParseKind(value)
		if err != nil {
			return s, fmt.Errorf("--server-arg --log-store: %w", err)
		}
		s.logStore = kind
	}
	return s, s.timing.Validate()
}

func startInproc(ctx context.Context, nodes, groups int, set inprocSettings) (_ *inproc, err error) {
	dir, err := os.MkdirTemp("", "herald-bench-commit-*")
	if err != nil {
		return nil, err
	}
	c := &inproc{dir: dir}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var peers []multiraft.Peer
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		n, err := herald.Start(ctx, herald.Config{
			NodeID:     id,
			DataDir:    filepath.Join(dir, id),
			ClientAddr: "127.0.0.1:0",
			PeerAddr:   "127.0.0.1:0",
			Auth:       auth.Config{Insecure: true},
			LeaseTTL:   set.leaseTTL,
			Timing:     set.timing,
			LogStore:   set.logStore,
		})
		if err != nil {
			return nil, fmt.Errorf("start in-process node %s: %w", id, err)
		}
		c.nodes = append(c.nodes, n)
		peers = append(peers, multiraft.Peer{ID: id, Addr: n.PeerAddr()})
	}
	spec := multiraft.BootstrapSpec{ClusterID: "bench", Nodes: peers, Groups: uint64(groups), Replication: min(3, nodes)}
	errs := make(chan error, len(c.nodes))
	for _, n := range c.nodes {
		go func() { errs <- n.Bootstrap(ctx, spec) }()
	}
	for range c.nodes {
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("bootstrap the in-process cluster: %w", err)
		}
	}
	return c, c.waitReady(ctx, uint64(groups))
}

// waitReady waits until every node knows a leader for every group.
func (c *inproc) waitReady(ctx context.Context, groups uint64) error {
	deadline := time.Now().Add(90 * time.Second)
	for i, n := range c.nodes {
		for {
			st := n.Host().Cluster()
			ready := st.Initialized() && n.Host().Epoch() != 0
			for g := uint64(1); ready && g <= groups; g++ {
				if id, _ := n.Host().Leader(g); id == "" {
					if _, err := n.Host().LeaderStatus(ctx, g); err != nil {
						ready = false
					}
				}
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("in-process node %d not ready after 90s", i+1)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *inproc) close() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.Crash()
		}()
	}
	wg.Wait()
	_ = os.RemoveAll(c.dir)
}

func proposeCode(err error) string {
	switch {
	case errors.Is(err, multiraft.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, multiraft.ErrUnknownOutcome):
		return "unknown_outcome"
	case errors.Is(err, context.DeadlineExceeded):
		return codeTimeout
	}
	return "internal"
}

// commitLoad is the raw commit baseline's publishers: the same ones as
// the websocket run (publisher i proposes through the node its socket would
// have used, i mod nodes), with the same rooms, payloads, in-flight window
// or rate, as fsm publish commands straight to Host.Propose.
type commitLoad struct {
	p       Params
	rooms   []string
	pay     payload
	runID   string
	timeout time.Duration
	tally
	stop chan struct{}
	wg   sync.WaitGroup
}

func newCommitLoad(p Params, runID string, timeout time.Duration, win *window) *commitLoad {
	rooms := make([]string, p.Rooms)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("bench-%s-%d", runID, i)
	}
	return &commitLoad{p: p, rooms: rooms, pay: newPayload(p.Payload), runID: runID, timeout: timeout,
		tally: newTally(win), stop: make(chan struct{})}
}

func (l *commitLoad) propose(ctx context.Context, host *multiraft.Host, i int, start time.Time) {
	room := l.rooms[i%len(l.rooms)]
	cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: fmt.Sprintf("pub-%s-%d", l.runID, i),
		Data: l.pay.appendData(nil, start.UnixNano())}
	pctx, cancel := context.WithTimeout(ctx, l.timeout)
	out, err := host.Propose(pctx, meta.GroupForKey(room, uint64(l.p.Groups)), cmd.Encode())
	cancel()
	now := time.Now()
	if err == nil {
		if r, ok := out.(*fsm.Result); !ok || r.Err != nil {
			err = fmt.Errorf("publish result %v", out)
		}
	}
	if err != nil {
		l.fail(start, proposeCode(err))
		return
	}
	l.ack(i, start, now)
}

// start runs the publishers pubs, publisher i through host(i), from t0
// until halt.
func (l *commitLoad) start(ctx context.Context, t0 time.Time, pubs []int, host func(i int) *multiraft.Host) {
	drive(l.p, t0, pubs, l.stop, &l.wg, func(i int, start time.Time) { l.propose(ctx, host(i), i, start) })
}

// drive runs the publishers pubs of a baseline whose publish call blocks
// until its ack, from t0 until stop closes: closed loop with p.Inflight
// calls outstanding per publisher, or open loop at p.Rate over all
// p.Publishers, with fire(i, start) given the publish's scheduled start. It
// is one schedule for every baseline, so that they differ from Herald's
// run in the server alone. wg counts every goroutine it starts, calls in
// flight included.
func drive(p Params, t0 time.Time, pubs []int, stop <-chan struct{}, wg *sync.WaitGroup, fire func(i int, start time.Time)) {
	for _, i := range pubs {
		if p.Rate == 0 {
			for range max(p.Inflight, 1) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if sleepUntil(t0, stop) != nil {
						return
					}
					for {
						select {
						case <-stop:
							return
						default:
						}
						fire(i, time.Now())
					}
				}()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(p.Publishers) / p.Rate * float64(time.Second))
			next := t0.Add(interval * time.Duration(i) / time.Duration(p.Publishers))
			slots := make(chan struct{}, 1024)
			for {
				if err := sleepUntil(next, stop); err != nil {
					return
				}
				select {
				case slots <- struct{}{}:
				case <-stop:
					return
				}
				start := next
				next = next.Add(interval)
				wg.Add(1)
				go func() {
					defer wg.Done()
					fire(i, start)
					<-slots
				}()
			}
		}()
	}
}

// halt stops the publishers and waits for the proposals in flight, which
// the timeout bounds.
func (l *commitLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// runCommitInproc is the raw commit baseline with the three nodes in this
// process (see inproc).
func runCommitInproc(ctx context.Context, e *env, p Params, serverArgs []string) (*Result, error) {
	set, err := settingsFrom(serverArgs)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.log, "%s on raw-commit-inproc: starting %d in-process nodes (%d groups)\n", p.Scenario, p.Nodes, p.Groups)
	c, err := startInproc(ctx, p.Nodes, p.Groups, set)
	if err != nil {
		return nil, err
	}
	defer c.close()
	res := &Result{Scenario: p.Scenario, Target: "raw-commit-inproc", Mode: p.mode(), Params: p, Started: time.Now()}
	win := newWindow()
	l := newCommitLoad(p, e.runID, e.callTimeout, win)
	pubs := make([]int, p.Publishers)
	for i := range pubs {
		pubs[i] = i
	}
	l.start(ctx, time.Now(), pubs, func(i int) *multiraft.Host { return c.nodes[i%len(c.nodes)].Host() })
	stopProgress := make(chan struct{})
	var acksRate, cpuRate rateOf
	go progress(e, p.Scenario+"/raw-commit-inproc", func() string {
		return fmt.Sprintf("commits %8s/s  errors %d  process CPU %.2f", thousands(acksRate.of(l.okAll.Load())), l.errs.n.Load(), cpuRate.of(int64(selfCPU()))/1e9)
	}, stopProgress)
	defer close(stopProgress)
	if err := sleepCtx(ctx, time.Duration(p.Warmup)); err != nil {
		l.halt()
		return nil, err
	}
	m := startMeter(ctx, &env{log: e.log}, &target{kind: "raw-commit-inproc"}, win, p, l.acks)
	err = sleepCtx(ctx, time.Duration(p.Duration))
	m.stop(res)
	l.halt()
	if err != nil {
		return nil, err
	}
	m.acked(res, l.acks, &l.errs)
	res.ServerCPU, res.GeneratorCPU = res.GeneratorCPU, 0
	res.Notes = append(res.Notes, "one process: the 3 nodes and the proposers (server CPU is all of it)")
	return res, nil
}

func sleepUntil(t time.Time, stop <-chan struct{}) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-stop:
		return errors.New("stopped")
	}
}
