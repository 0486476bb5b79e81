package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/wsfront/auth"
)

// The raw commit baseline runs, by default, like the Herald cluster it is
// compared with: one process per node (this binary again, with roleEnv set
// to roleCommitNode), each proposing for the publishers whose sockets would
// have gone to it. Three nodes in one process share one Go scheduler and
// one heap, which on two cores makes them slower than three herald serve
// processes and the baseline no ceiling (docs/benchmarks.md shows both).
const roleCommitNode = "raw-commit-node"

const commitConfigEnv = "HERALD_BENCH_COMMIT_NODE"

// commitNodeConfig is what a node process of the baseline is told.
type commitNodeConfig struct {
	Index    int              `json:"index"`
	NodeID   string           `json:"node_id"`
	DataDir  string           `json:"data_dir"`
	PeerAddr string           `json:"peer_addr"`
	Peers    []multiraft.Peer `json:"peers"`
	Params   Params           `json:"params"`
	RunID    string           `json:"run_id"`
	Timeout  dur              `json:"timeout"`
	Timing   multiraft.Timing `json:"timing"`
	LeaseTTL dur              `json:"lease_ttl"`
	LogStore string           `json:"log_store"`
}

// commitNodeResult is what a node process reports: its share of the acks,
// as encoded histograms (the window's and one per interval), and errors.
type commitNodeResult struct {
	Total   string           `json:"total"`
	Periods []string         `json:"periods"`
	Errors  map[string]int64 `json:"errors,omitempty"`
}

// commitNodeMain is a baseline node process: it starts its node, reports
// READY once every group has a leader, waits for "GO <start> <window start>
// <window end>" (unix nanoseconds) on stdin, runs its publishers, prints
// RESULT and its JSON, and stops when stdin closes.
func commitNodeMain() {
	if err := commitNode(); err != nil {
		fmt.Fprintln(os.Stderr, "raw commit node:", err)
		os.Exit(1)
	}
}

func commitNode() error {
	var cfg commitNodeConfig
	if err := json.Unmarshal([]byte(os.Getenv(commitConfigEnv)), &cfg); err != nil {
		return err
	}
	p := cfg.Params
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(p.Warmup+p.Duration)+5*time.Minute)
	defer cancel()
	spec := multiraft.BootstrapSpec{ClusterID: "bench", Nodes: cfg.Peers, Groups: uint64(p.Groups), Replication: min(3, len(cfg.Peers))}
	n, err := herald.Start(ctx, herald.Config{
		NodeID: cfg.NodeID, DataDir: cfg.DataDir, ClientAddr: "127.0.0.1:0", PeerAddr: cfg.PeerAddr,
		Auth: auth.Config{Insecure: true}, Timing: cfg.Timing, LeaseTTL: time.Duration(cfg.LeaseTTL),
		LogStore: logstore.Kind(cfg.LogStore), Bootstrap: &spec,
	})
	if err != nil {
		return err
	}
	defer func() { _ = n.Crash() }()
	if err := (&inproc{nodes: []*herald.Node{n}}).waitReady(ctx, uint64(p.Groups)); err != nil {
		return err
	}
	fmt.Println("READY")
	in := bufio.NewScanner(os.Stdin)
	var t0, ws, we int64
	for in.Scan() {
		if _, err := fmt.Sscanf(in.Text(), "GO %d %d %d", &t0, &ws, &we); err == nil {
			break
		}
	}
	if t0 == 0 {
		return errors.New("no GO line")
	}
	win := newWindow()
	win.start.Store(ws)
	win.end.Store(we)
	l := newCommitLoad(p, cfg.RunID, time.Duration(cfg.Timeout), win)
	var pubs []int
	for i := range p.Publishers {
		if i%len(cfg.Peers) == cfg.Index {
			pubs = append(pubs, i)
		}
	}
	l.start(ctx, time.Unix(0, t0), pubs, func(int) *multiraft.Host { return n.Host() })
	if err := sleepCtx(ctx, time.Until(time.Unix(0, ws))); err != nil {
		return err
	}
	l.acks.takePeriod()
	var res commitNodeResult
	tick := time.NewTicker(time.Duration(p.Interval))
	for now := range tick.C {
		h := l.acks.takePeriod()
		enc, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
		if err != nil {
			return err
		}
		res.Periods = append(res.Periods, string(enc))
		if !now.Before(time.Unix(0, we)) {
			break
		}
	}
	tick.Stop()
	l.halt()
	enc, err := l.acks.total().Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return err
	}
	res.Total, res.Errors = string(enc), l.errs.snapshot()
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT %s\n", b)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// runCommit is the raw commit baseline with one process per node.
func runCommit(ctx context.Context, e *env, p Params, serverArgs []string) (_ *Result, err error) {
	set, err := settingsFrom(serverArgs)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "herald-bench-commit-*")
	if err != nil {
		return nil, err
	}
	tgt := &target{kind: "raw-commit", dir: dir, client: &http.Client{Timeout: 30 * time.Second}}
	defer tgt.close()
	ports, err := freePorts(p.Nodes)
	if err != nil {
		return nil, err
	}
	var peers []multiraft.Peer
	for i := range p.Nodes {
		peers = append(peers, multiraft.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	fmt.Fprintf(e.log, "%s on raw-commit: starting %d node processes (%d groups)\n", p.Scenario, p.Nodes, p.Groups)
	type child struct {
		stdin io.WriteCloser
		lines chan string
	}
	children := make([]*child, p.Nodes)
	for i, peer := range peers {
		cfg, err := json.Marshal(commitNodeConfig{Index: i, NodeID: peer.ID, DataDir: filepath.Join(dir, peer.ID),
			PeerAddr: peer.Addr, Peers: peers, Params: p, RunID: e.runID, Timeout: dur(e.callTimeout),
			Timing: set.timing, LeaseTTL: dur(set.leaseTTL), LogStore: string(set.logStore)})
		if err != nil {
			return nil, err
		}
		pr, out, err := startChild(peer.ID, roleEnv+"="+roleCommitNode, commitConfigEnv+"="+string(cfg))
		if err != nil {
			return nil, err
		}
		tgt.procs = append(tgt.procs, pr)
		c := &child{stdin: pr.stdin, lines: make(chan string, 4)}
		children[i] = c
		go func() {
			defer close(c.lines)
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
		}()
	}
	next := func(c *child, prefix string, bound time.Duration) (string, error) {
		timer := time.NewTimer(bound)
		defer timer.Stop()
		for {
			select {
			case line, ok := <-c.lines:
				if !ok {
					return "", errors.New("a node process ended early")
				}
				if rest, found := strings.CutPrefix(line, prefix); found {
					return rest, nil
				}
			case <-timer.C:
				return "", fmt.Errorf("no %s from a node process in %v", strings.TrimSpace(prefix), bound)
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
	}
	failed := func(err error) error {
		var outs []string
		for _, pr := range tgt.procs {
			outs = append(outs, pr.id+": "+pr.out.String())
		}
		return fmt.Errorf("%w; node output:\n%s", err, strings.Join(outs, "\n"))
	}
	for _, c := range children {
		if _, err := next(c, "READY", 2*time.Minute); err != nil {
			return nil, failed(err)
		}
	}
	res := &Result{Scenario: p.Scenario, Target: "raw-commit", Mode: p.mode(), Params: p, Started: time.Now()}
	t0 := time.Now().Add(200 * time.Millisecond)
	ws := t0.Add(time.Duration(p.Warmup))
	we := ws.Add(time.Duration(p.Duration))
	for _, c := range children {
		if _, err := fmt.Fprintf(c.stdin, "GO %d %d %d\n", t0.UnixNano(), ws.UnixNano(), we.UnixNano()); err != nil {
			return nil, failed(err)
		}
	}
	if err := sleepCtx(ctx, time.Until(ws)); err != nil {
		return nil, err
	}
	cpu0, _ := tgt.cpu()
	self0 := selfCPU()
	busy0, busyOK := machineBusy()
	if err := sleepCtx(ctx, time.Until(we)); err != nil {
		return nil, err
	}
	cpu1, _ := tgt.cpu()
	res.Window = we.Sub(ws).Seconds()
	res.ServerCPU = (cpu1 - cpu0).Seconds() / res.Window
	if busy1, ok := machineBusy(); ok && busyOK {
		res.OtherCPU = max(0, (busy1-busy0-(cpu1-cpu0)-(selfCPU()-self0)).Seconds()/res.Window)
	}
	total := newHist()
	var periods []*hdrhistogram.Histogram
	for _, c := range children {
		line, err := next(c, "RESULT ", e.callTimeout+time.Minute)
		if err != nil {
			return nil, failed(err)
		}
		var r commitNodeResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, err
		}
		h, err := hdrhistogram.Decode([]byte(r.Total))
		if err != nil {
			return nil, err
		}
		total.Merge(h)
		for k, enc := range r.Periods {
			ph, err := hdrhistogram.Decode([]byte(enc))
			if err != nil {
				return nil, err
			}
			for len(periods) <= k {
				periods = append(periods, newHist())
			}
			periods[k].Merge(ph)
		}
		for code, n := range r.Errors {
			if res.Errors == nil {
				res.Errors = map[string]int64{}
			}
			res.Errors[code] += n
		}
	}
	res.Ack = summarize(total)
	res.Ops = res.Ack.Count
	res.Throughput = float64(res.Ops) / res.Window
	step := time.Duration(p.Interval).Seconds()
	var series []Point
	for k, h := range periods {
		pt := Point{T: float64(k+1) * step, Count: h.TotalCount(), Rate: float64(h.TotalCount()) / step}
		if h.TotalCount() > 0 {
			pt.P50, pt.P99, pt.Max = usToMs(h.ValueAtQuantile(50)), usToMs(h.ValueAtQuantile(99)), usToMs(h.Max())
		}
		series = append(series, pt)
	}
	res.Series = map[string][]Point{"ack": series}
	res.Notes = append(res.Notes, fmt.Sprintf("%d node processes, each proposing for its publishers; server CPU is all of them", p.Nodes))
	return res, nil
}

// startChild runs this binary again as the process id, with env added to
// its environment (roleEnv says what it is to do). Its stdin is held for
// its life (proc.stdin) and its stdout returned for the caller to read.
func startChild(id string, env ...string) (*proc, io.ReadCloser, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	p, err := startProc(id, cmd)
	if err != nil {
		return nil, nil, err
	}
	p.stdin = stdin
	return p, out, nil
}
