package multiraft_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
	"github.com/heraldhq/herald/multiraft/logstore"
)

// The idle benchmark runs each node in its own process (this test binary,
// re-executed), so CPU and memory are measured per node as an operator
// would see them.

const (
	nodeEnv     = "HERALD_BENCH_NODE" // id,dir,groups,store,peers(id=addr;...)
	perGroupEnv = "HERALD_BENCH_PER_GROUP_HEARTBEATS"
)

// TestBenchNodeProcess is the body of a benchmark node process; it is
// skipped unless the benchmark started it.
func TestBenchNodeProcess(t *testing.T) {
	spec := os.Getenv(nodeEnv)
	if spec == "" {
		t.Skip("runs only as a node process of BenchmarkIdleGroups")
	}
	if err := runBenchNode(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runBenchNode(spec string, in io.Reader, out io.Writer) error {
	parts := strings.Split(spec, ",")
	if len(parts) != 5 {
		return fmt.Errorf("bad node spec %q", spec)
	}
	id, dir, store := parts[0], parts[1], parts[3]
	groups, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return err
	}
	var peers []multiraft.Peer
	self := ""
	for _, p := range strings.Split(parts[4], ";") {
		k, v, _ := strings.Cut(p, "=")
		peers = append(peers, multiraft.Peer{ID: k, Addr: v})
		if k == id {
			self = v
		}
	}
	kind, err := logstore.ParseKind(store)
	if err != nil {
		return err
	}
	timing := multiraft.DefaultTiming()
	// For comparison runs: every group sends its own heartbeats.
	timing.PerGroupHeartbeats = os.Getenv(perGroupEnv) != ""
	h, err := multiraft.Start(multiraft.Config{NodeID: id, DataDir: dir, PeerAddr: self, LogStore: kind, App: &kvtest.App{}, Timing: timing})
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := h.Bootstrap(ctx, multiraft.BootstrapSpec{ClusterID: "idle", Nodes: peers, Groups: groups, Replication: 3}); err != nil {
		return err
	}
	for g := uint64(1); g <= groups; g++ {
		for {
			if st, err := h.Status(g); err == nil && st.LeaderID != "" {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("group %d has no leader", g)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Fprintln(out, "READY")
	lines := bufio.NewScanner(in)
	var watched uint64
	for lines.Scan() {
		switch cmd, arg, _ := strings.Cut(lines.Text(), " "); cmd {
		case "goroutines":
			fmt.Fprintln(out, "goroutines", runtime.NumGoroutine())
		case "heartbeats":
			fmt.Fprintf(out, "heartbeats %+v\n", multiraft.HeartbeatStatsOf(h))

		case "leaders":
			n := 0
			for g := uint64(1); g <= groups; g++ {
				if st, err := h.Status(g); err == nil && st.State == raft.Leader.String() {
					n++
				}
			}
			fmt.Fprintln(out, "leaders", n)
		case "watch": // pick a group led by node arg
			watched = 0
			for g := uint64(1); g <= groups && watched == 0; g++ {
				if st, err := h.Status(g); err == nil && st.LeaderID == arg {
					watched = g
				}
			}
			fmt.Fprintln(out, "watching", watched)
		case "failover": // the watched group's leader was just killed
			t0 := time.Now()
			pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
			var err error
			for pctx.Err() == nil {
				if _, err = h.Propose(pctx, watched, []byte("x")); err == nil {
					break
				}
			}
			pcancel()
			if err != nil {
				fmt.Fprintln(out, "failover-error", err)
			} else {
				fmt.Fprintln(out, "failover", time.Since(t0).Milliseconds())
			}
		case "quit":
			return nil
		}
	}
	return nil
}

type nodeProc struct {
	id   string
	cmd  *exec.Cmd
	in   io.WriteCloser
	outs *bufio.Scanner
}

func (p *nodeProc) ask(b *testing.B, line, wantPrefix string) string {
	b.Helper()
	fmt.Fprintln(p.in, line)
	for p.outs.Scan() {
		if s := p.outs.Text(); strings.HasPrefix(s, wantPrefix) {
			return strings.TrimSpace(strings.TrimPrefix(s, wantPrefix))
		} else if strings.HasPrefix(s, "ERROR") {
			b.Fatalf("%s: %s", p.id, s)
		}
	}
	b.Fatalf("%s ended before answering %q", p.id, line)
	return ""
}

// cpuSeconds is the user+system CPU time the process used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

func rssMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, err := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// BenchmarkIdleGroups starts three node processes hosting G data groups of
// 3 replicas each (so G replicas per node), lets them idle, and reports CPU
// (fraction of one core) and RSS per node, then kills the node leading a
// group and reports how long until a write commits through a new leader.
// One iteration is one whole measurement; run with -benchtime=1x.
func BenchmarkIdleGroups(b *testing.B) {
	for _, groups := range []uint64{256, 1024} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			for range b.N {
				measureIdle(b, groups, logstore.KindBadger)
			}
		})
	}
}

func measureIdle(b *testing.B, groups uint64, kind logstore.Kind) {
	dir := b.TempDir()
	var addrs []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	peers := fmt.Sprintf("n1=%s;n2=%s;n3=%s", addrs[0], addrs[1], addrs[2])
	var procs []*nodeProc
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchNodeProcess$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%s,%s", nodeEnv, id, filepath.Join(dir, id), groups, kind, peers))
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		p := &nodeProc{id: id, cmd: cmd, in: in, outs: bufio.NewScanner(out)}
		procs = append(procs, p)
		b.Cleanup(func() {
			in.Close()
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	start := time.Now()
	for _, p := range procs {
		p.ask(b, "", "READY")
	}
	b.Logf("%d groups elected their leaders in %v", groups, time.Since(start))
	time.Sleep(5 * time.Second) // let start-up work (elections, registration) settle
	const window = 10 * time.Second
	before := make([]float64, 3)
	for i, p := range procs {
		before[i], _ = cpuSeconds(p.cmd.Process.Pid)
	}
	time.Sleep(window)
	var cpu, rss, gor, leaders []float64
	for i, p := range procs {
		after, err := cpuSeconds(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		cpu = append(cpu, (after-before[i])/window.Seconds())
		r, err := rssMB(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rss = append(rss, r)
		g, _ := strconv.ParseFloat(p.ask(b, "goroutines", "goroutines "), 64)
		gor = append(gor, g)
		l, _ := strconv.ParseFloat(p.ask(b, "leaders", "leaders "), 64)
		leaders = append(leaders, l)
	}
	for _, p := range procs {
		b.Logf("%s heartbeats %s", p.id, p.ask(b, "heartbeats", "heartbeats "))
	}
	b.Logf("per node: cpu %.3v cores, rss %.0f MB, goroutines %v, leaders %v", cpu, rss, gor, leaders)
	b.ReportMetric(maxOf(cpu), "max-cpu-cores/node")
	b.ReportMetric(maxOf(rss), "max-rss-MB/node")
	b.ReportMetric(maxOf(gor), "max-goroutines/node")

	// Failover: kill n3 and time the first write to one of its groups.
	if got := procs[0].ask(b, "watch n3", "watching "); got == "0" {
		b.Fatal("n3 leads no group")
	}
	procs[2].cmd.Process.Signal(syscall.SIGKILL)
	res := procs[0].ask(b, "failover", "failover")
	ms, err := strconv.ParseFloat(strings.TrimSpace(res), 64)
	if err != nil {
		b.Fatalf("failover: %s", res)
	}
	b.Logf("a write committed %v ms after the group's leader was killed", ms)
	b.ReportMetric(ms, "failover-ms")
	b.ReportMetric(0, "ns/op")
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
