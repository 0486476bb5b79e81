package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/multiraft/meta"
)

// proc is a server process the tool started: a herald node or the raw gws
// baseline server.
type proc struct {
	id       string
	cmd      *exec.Cmd
	httpBase string // http://host:port of its client port
	wsURL    string
	token    string // admin token: guards its profiler

	done     chan struct{}
	exitErr  error       // how it exited; set before done closes
	wantExit atomic.Bool // the tool stopped it: its exit is no failure
	out      tail
	// stdin, when piped, is held for the process's life: a child that
	// watches it for EOF would otherwise stop once it is collected.
	stdin io.WriteCloser
}

// tail keeps the last bytes a process wrote, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - 16<<10; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig and, with a bound, waits for the exit; past the bound
// the process is killed.
func (p *proc) stop(sig syscall.Signal, bound time.Duration) {
	if !p.alive() {
		return
	}
	p.signal(sig)
	select {
	case <-p.done:
	case <-time.After(bound):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// signal sends sig, marking the exit that may follow as the tool's doing.
func (p *proc) signal(sig syscall.Signal) {
	p.wantExit.Store(true)
	_ = p.cmd.Process.Signal(sig)
}

// startProc starts cmd as the process id. Its output is kept for error
// messages: stderr, and stdout unless the caller reads it (StdoutPipe).
func startProc(id string, cmd *exec.Cmd) (*proc, error) {
	p := &proc{id: id, cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.out
	}
	cmd.Stderr = &p.out
	childAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// target is what a scenario loads: websocket URLs and, when the tool
// started the servers, their processes.
type target struct {
	kind   string // "herald", "raw-gws" or "external"
	urls   []string
	procs  []*proc
	groups int
	dir    string
	client *http.Client
}

// close stops the processes the tool started and removes their data.
func (t *target) close() {
	var wg sync.WaitGroup
	for _, p := range t.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(syscall.SIGKILL, 5*time.Second)
		}()
	}
	wg.Wait()
	if t.dir != "" {
		_ = os.RemoveAll(t.dir)
	}
}

// watch cancels the scenario when a server the tool started exits on its
// own (a crash, or something else killing it): its numbers would be
// meaningless. The watchers end with the processes.
func (t *target) watch(cancel context.CancelFunc) {
	for _, p := range t.procs {
		go func() {
			<-p.done
			if !p.wantExit.Load() {
				cancel()
			}
		}()
	}
}

// unexpectedExits describes the servers that exited without the tool
// stopping them.
func (t *target) unexpectedExits() error {
	var errs []error
	for _, p := range t.procs {
		if !p.alive() && !p.wantExit.Load() {
			errs = append(errs, fmt.Errorf("%s exited during the run (%v); its last output:\n%s", p.id, p.exitErr, p.out.String()))
		}
	}
	return errors.Join(errs...)
}

func (t *target) alive() []*proc {
	var out []*proc
	for _, p := range t.procs {
		if p.alive() {
			out = append(out, p)
		}
	}
	return out
}

func (t *target) procByID(id string) *proc {
	for _, p := range t.procs {
		if p.id == id {
			return p
		}
	}
	return nil
}

// rss sums the servers' resident memory: from /proc for processes the
// tool started, else from each node's process_resident_memory_bytes metric.
func (t *target) rss(ctx context.Context) (int64, error) {
	var sum int64
	if len(t.procs) > 0 {
		for _, p := range t.alive() {
			v, err := procRSS(p.pid())
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}
	for _, u := range t.urls {
		v, err := t.metric(ctx, httpBase(u), "process_resident_memory_bytes")
		if err != nil {
			return 0, err
		}
		sum += int64(v)
	}
	return sum, nil
}

// cpu is the servers' CPU time so far (processes the tool started only).
func (t *target) cpu() (time.Duration, bool) {
	if len(t.procs) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, p := range t.alive() {
		v, err := procCPU(p.pid())
		if err != nil {
			return 0, false
		}
		sum += v
	}
	return sum, true
}

// collectGarbage asks every server the tool started to run a GC (the
// profiler's heap endpoint does one first), so that RSS readings before
// and after compare live memory, not garbage not yet collected.
func (t *target) collectGarbage(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range t.alive() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, "GET", p.httpBase+"/debug/pprof/heap?gc=1", nil)
			if err != nil {
				return
			}
			if p.token != "" {
				req.Header.Set("Authorization", "Bearer "+p.token)
			}
			if resp, err := t.client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// memSample is the servers' memory at one moment.
type memSample struct {
	rss        int64
	live       int64 // Go live heap and stacks
	goroutines int64
	err        error
}

// settledMemory collects garbage, gives the runtime a moment to return
// freed pages, and reads the servers' memory.
func (t *target) settledMemory(ctx context.Context) memSample {
	t.collectGarbage(ctx)
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return memSample{err: ctx.Err()}
	}
	t.collectGarbage(ctx)
	var m memSample
	m.rss, m.err = t.rss(ctx)
	if m.err == nil {
		m.live, m.goroutines, m.err = t.goMemory(ctx)
	}
	return m
}

// metrics reads the named metrics (unlabelled ones) from a node's
// /metrics.
func (t *target) metrics(ctx context.Context, base string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for _, name := range names {
			if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
					out[name] = v
				}
			}
		}
	}
	for _, name := range names {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("%s/metrics has no %s", base, name)
		}
	}
	return out, nil
}

func (t *target) metric(ctx context.Context, base, name string) (float64, error) {
	m, err := t.metrics(ctx, base, name)
	return m[name], err
}

// bases are the servers' HTTP base URLs.
func (t *target) bases() []string {
	if len(t.procs) > 0 {
		var out []string
		for _, p := range t.alive() {
			out = append(out, p.httpBase)
		}
		return out
	}
	var out []string
	for _, u := range t.urls {
		out = append(out, httpBase(u))
	}
	return out
}

// goMemory sums, over the servers, the Go runtime's live heap (allocated
// bytes, read after a GC) and stacks, and the goroutines: what RSS holds
// live, without the garbage and the freed pages the runtime keeps.
func (t *target) goMemory(ctx context.Context) (live, goroutines int64, err error) {
	for _, base := range t.bases() {
		m, err := t.metrics(ctx, base, "go_memstats_heap_alloc_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines")
		if err != nil {
			return 0, 0, err
		}
		live += int64(m["go_memstats_heap_alloc_bytes"] + m["go_memstats_stack_inuse_bytes"])
		goroutines += int64(m["go_goroutines"])
	}
	return live, goroutines, nil
}

// httpBase turns ws://host:port/ws into http://host:port.
func httpBase(wsURL string) string {
	s := strings.TrimPrefix(wsURL, "ws://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return "http://" + s
}

func externalTarget(urls []string, groups int) *target {
	return &target{kind: "external", urls: urls, groups: groups, client: &http.Client{Timeout: 30 * time.Second}}
}

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterSpec says how to start herald serve processes.
type clusterSpec struct {
	bin        string
	nodes      int
	groups     int
	serverArgs []string // more flags for every node
}

// benchLimits lift the per-socket limits that exist to protect a node
// from one client: a load generator is one client many times over. The
// outgoing queue limits stay at their defaults.
var benchLimits = []string{
	"--publish-rate", "1000000", "--publish-burst", "1000000",
	"--max-inflight", "100000", "--max-rooms", "10000",
	"--max-sockets-per-ip", "0", "--max-sockets-per-user", "0",
	"--idle-timeout", "5m", "--ping-interval", "1m",
}

// startHerald starts a cluster of herald serve processes on loopback,
// bootstrapped together, and waits until every node is ready.
func startHerald(ctx context.Context, spec clusterSpec, log io.Writer) (_ *target, err error) {
	if spec.bin == "" {
		return nil, errors.New("no herald binary: give --herald-bin (go build -o /tmp/herald ./cmd/herald)")
	}
	dir, err := os.MkdirTemp("", "herald-bench-*")
	if err != nil {
		return nil, err
	}
	t := &target{kind: "herald", groups: spec.groups, dir: dir, client: &http.Client{Timeout: 60 * time.Second}}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	ports, err := freePorts(2 * spec.nodes)
	if err != nil {
		return nil, err
	}
	var boot []string
	for i := range spec.nodes {
		boot = append(boot, fmt.Sprintf("n%d=127.0.0.1:%d", i+1, ports[spec.nodes+i]))
	}
	token := randomToken()
	if t, ok := flagValue(spec.serverArgs, "admin-token"); ok {
		token = t // the profiler and the admin API then need this one
	}
	// Peers authenticate as in production; the cost is per connection.
	secret := randomToken()
	for i := range spec.nodes {
		id := fmt.Sprintf("n%d", i+1)
		client := fmt.Sprintf("127.0.0.1:%d", ports[i])
		args := []string{"serve", "--node-id", id, "--data-dir", filepath.Join(dir, id),
			"--client-addr", client, "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[spec.nodes+i]),
			"--bootstrap", strings.Join(boot, ","), "--groups", strconv.Itoa(spec.groups),
			"--replication", strconv.Itoa(min(3, spec.nodes)),
			"--insecure-auth", "--pprof", "--log-level", "warn"}
		args = append(args, benchLimits...)
		args = append(args, spec.serverArgs...)
		cmd := exec.Command(spec.bin, args...)
		// The admin token goes through the environment, not the command line.
		cmd.Env = append(os.Environ(), "HERALD_ADMIN_TOKEN="+token, "HERALD_CLUSTER_SECRET="+secret)
		p, err := startProc(id, cmd)
		if err != nil {
			return nil, err
		}
		p.httpBase, p.wsURL, p.token = "http://"+client, "ws://"+client+"/ws", token
		t.procs = append(t.procs, p)
		t.urls = append(t.urls, p.wsURL)
	}
	fmt.Fprintf(log, "started %d herald nodes (%d groups) in %s\n", spec.nodes, spec.groups, dir)
	if err := t.waitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	return t, nil
}

// flagValue finds --name=value or --name value among args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if n != name || !strings.HasPrefix(a, "-") {
			continue
		}
		if hasValue {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// waitReady waits until every running process answers /readyz with 200.
func (t *target) waitReady(ctx context.Context, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for _, p := range t.alive() {
		for {
			req, _ := http.NewRequestWithContext(ctx, "GET", p.httpBase+"/readyz", nil)
			resp, err := t.client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("status %s", resp.Status)
			}
			if !p.alive() {
				return fmt.Errorf("%s exited while starting:\n%s", p.id, p.out.String())
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s not ready after %v (%v); its output:\n%s", p.id, bound, err, p.out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// leaderOf finds the node that leads the group holding room, through the
// admin API of a running node.
func (t *target) leaderOf(ctx context.Context, room string) (string, uint64, error) {
	g := meta.GroupForKey(room, uint64(t.groups))
	var last error
	for _, p := range t.alive() {
		c := admin.NewClient(p.httpBase, p.token)
		grp, err := c.Group(ctx, g)
		if err != nil {
			last = err
			continue
		}
		if grp.Leader != "" {
			return grp.Leader, g, nil
		}
		last = fmt.Errorf("group %d has no leader: %s", g, grp.Error)
	}
	return "", g, fmt.Errorf("leader of group %d: %w", g, last)
}
