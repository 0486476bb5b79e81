package jepsen

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/jepsen/lazyfs"
)

var errAnotherRun = errors.New("another herald-jepsen run holds the lock on this machine")

// Node states.
const (
	StateUp      = "up"
	StateKilled  = "killed"
	StatePaused  = "paused"
	StateStopped = "stopped" // gracefully, for good (a removed node)
	// StateOff is a node killed by a power loss whose unsynced data is
	// being dropped: nothing may restart it until that is done.
	StateOff = "off"
)

// diskName is the lazy filesystems' type suffix in mountinfo, by which a
// later run finds the mounts a crashed one left.
const diskName = "herald-jepsen"

// Node is one herald serve process.
type Node struct {
	ID      string
	Net     NodeNet
	dataDir string
	logPath string
	// disk is the lazy filesystem dataDir is mounted from, nil without.
	disk *lazyfs.FS
	// args and the fields above are set before the node first starts,
	// read-only after.
	args []string

	// mu guards everything below.
	mu       sync.Mutex
	state    string
	cmd      *exec.Cmd
	exited   chan struct{}
	expected bool // the harness caused the next exit
	ready    bool // answered /readyz since its last start
}

// State is the node's process state.
func (n *Node) State() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// ClusterConfig describes the cluster to run.
type ClusterConfig struct {
	Bin         string // the herald binary
	Dir         string // data dirs and logs go here
	Nodes       int
	Groups      int
	Replication int
	// ServeArgs are added to every node's serve flags.
	ServeArgs []string
	// LazyDisks puts each node's data dir on a lazy filesystem of its
	// own (package lazyfs), which the power-loss fault needs.
	LazyDisks bool
	Logf      func(string, ...any)
	Rec       *Recorder
}

// Cluster runs the nodes as processes on a Network.
type Cluster struct {
	cfg   ClusterConfig
	net   Network
	token string
	// secretFile holds the cluster secret every node is started with.
	secretFile string
	spawn      chan spawnReq
	pids       *pidFile

	// mu guards everything below; NewCluster fills nodes before the
	// cluster is shared.
	mu       sync.Mutex
	nodes    []*Node
	crashes  []string
	failures []string // starts that failed
	closing  bool
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

// spawner starts processes from one thread that lives as long as the
// cluster: a child's parent-death signal fires when the thread that
// started it exits, and Go may retire other threads at any time.
func spawner(reqs chan spawnReq) {
	runtime.LockOSThread()
	for r := range reqs {
		r.err <- r.cmd.Start()
	}
}

// StartCluster starts cfg.Nodes nodes that bootstrap a cluster together
// and waits until every one is ready.
func StartCluster(ctx context.Context, cfg ClusterConfig, nw Network, pids *pidFile) (*Cluster, error) {
	c := &Cluster{cfg: cfg, net: nw, token: "jepsen-admin-token", spawn: make(chan spawnReq), pids: pids}
	// The nodes' peer ports sit on namespace addresses off loopback, where
	// herald serve requires peers to authenticate.
	c.secretFile = filepath.Join(cfg.Dir, "cluster-secret")
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.secretFile, []byte(rand.Text()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the cluster secret: %w", err)
	}
	go spawner(c.spawn)
	var boot []string
	for i := range cfg.Nodes {
		id := fmt.Sprintf("n%d", i+1)
		nn, err := nw.AddNode(id)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("network for %s: %w", id, err)
		}
		n, err := c.newNode(id, nn)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		boot = append(boot, id+"="+nn.PeerAdvertise)
	}
	for _, n := range c.nodes {
		n.args = append(n.args, "--bootstrap", strings.Join(boot, ","),
			"--groups", strconv.Itoa(cfg.Groups), "--replication", strconv.Itoa(cfg.Replication))
		if err := c.start(n); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if err := c.WaitReady(ctx, n, 90*time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) newNode(id string, nn NodeNet) (*Node, error) {
	n := &Node{ID: id, Net: nn, dataDir: filepath.Join(c.cfg.Dir, "data", id), logPath: filepath.Join(c.cfg.Dir, id+".log")}
	if c.cfg.LazyDisks {
		// The node sees the mount; the files live in data/<id> as they
		// would without it, so a kept run's data dirs are where they
		// always are.
		disk, err := lazyfs.Mount(n.dataDir, filepath.Join(c.cfg.Dir, "mnt", id), lazyfs.Options{Name: diskName, Logf: c.cfg.Logf})
		if err != nil {
			return nil, fmt.Errorf("lazy filesystem for %s: %w", id, err)
		}
		n.disk, n.dataDir = disk, disk.Mountpoint()
	}
	n.args = append([]string{"serve",
		"--node-id", id, "--data-dir", n.dataDir,
		"--client-addr", nn.ClientAddr, "--advertise-client-addr", nn.ClientAddr,
		"--peer-addr", nn.PeerBind, "--advertise-peer-addr", nn.PeerAdvertise,
		"--insecure-auth", "--admin-token", c.token, "--cluster-secret-file", c.secretFile,
	}, c.cfg.ServeArgs...)
	return n, nil
}

// start launches a node's process.
func (c *Cluster) start(n *Node) error {
	if err := os.MkdirAll(filepath.Dir(n.logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== herald-jepsen: starting %s at %s ===\n", n.ID, time.Now().Format(time.RFC3339Nano))
	argv := append(slices.Clone(n.Net.Wrap), c.cfg.Bin)
	argv = append(argv, n.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	errc := make(chan error, 1)
	c.spawn <- spawnReq{cmd: cmd, err: errc}
	if err := <-errc; err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	c.pids.add(cmd.Process.Pid)
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited, n.state, n.expected, n.ready = cmd, exited, StateUp, false, false
	n.mu.Unlock()
	go c.watchReady(n, exited)
	go func() {
		err := cmd.Wait()
		c.pids.remove(cmd.Process.Pid)
		fmt.Fprintf(logf, "=== herald-jepsen: %s exited: %v ===\n", n.ID, err)
		_ = logf.Close()
		n.mu.Lock()
		expected, ready := n.expected, n.ready
		if n.state != StateStopped {
			n.state = StateKilled
		}
		n.mu.Unlock()
		close(exited)
		if expected {
			return
		}
		var ee *exec.ExitError
		if !ready && errors.As(err, &ee) && ee.ExitCode() == 1 {
			c.startFailed(n, err)
		} else {
			c.crashed(n, err)
		}
		// As a supervisor (systemd's Restart=on-failure) would.
		time.AfterFunc(2*time.Second, func() {
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			if !closing {
				_ = c.Restart(n)
			}
		})
	}()
	return nil
}

// watchReady marks the node ready once its /readyz answers 200.
func (c *Cluster) watchReady(n *Node, exited chan struct{}) {
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			return
		case <-time.After(250 * time.Millisecond):
		}
		resp, err := hc.Get("http://" + n.Net.ClientAddr + "/readyz")
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			n.mu.Lock()
			if n.exited == exited {
				n.ready = true
			}
			n.mu.Unlock()
			return
		}
	}
}

// startFailed records a node that gave up starting (exit status 1 before
// it was ever ready): the node's choice, not a crash.
func (c *Cluster) startFailed(n *Node, err error) {
	last := tail(n.logPath, 2)
	msg := fmt.Sprintf("%s exited while starting (%v): %s", n.ID, err, strings.ReplaceAll(last, "\n", " "))
	c.mu.Lock()
	c.failures = append(c.failures, msg)
	c.mu.Unlock()
	if c.cfg.Rec != nil {
		now := c.cfg.Rec.Now()
		c.cfg.Rec.Record(Op{Process: NemesisProcess, F: FFault, Fault: FaultStartFailed, Type: TypeInfo, Start: now, End: now,
			Value: msg, Nodes: []string{n.ID}})
	}
	c.cfg.Logf("%s", msg)
}

// StartFailures lists starts that failed.
func (c *Cluster) StartFailures() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.failures)
}

// crashed records a node that exited without the harness asking: a
// safety-relevant event in itself.
func (c *Cluster) crashed(n *Node, err error) {
	msg := fmt.Sprintf("%s exited on its own (%v); last lines of %s:\n%s", n.ID, err, filepath.Base(n.logPath), tail(n.logPath, 15))
	c.mu.Lock()
	c.crashes = append(c.crashes, msg)
	c.mu.Unlock()
	if c.cfg.Rec != nil {
		now := c.cfg.Rec.Now()
		c.cfg.Rec.Record(Op{Process: NemesisProcess, F: FFault, Fault: "crash", Type: TypeInfo, Start: now, End: now,
			Value: fmt.Sprintf("%s exited on its own: %v", n.ID, err), Nodes: []string{n.ID}})
	}
	c.cfg.Logf("node %s exited on its own: %v", n.ID, err)
}

// tail returns the last lines of a file.
func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var ring []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ring = append(ring, sc.Text())
		if len(ring) > lines {
			ring = ring[1:]
		}
	}
	return strings.Join(ring, "\n")
}

// Crashes lists nodes that exited without the harness asking.
func (c *Cluster) Crashes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.crashes)
}

// Nodes returns every node ever started, removed ones included.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Members returns the nodes that are part of the cluster (not removed),
// whatever their process state: clients may try any of them.
func (c *Cluster) Members() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.State() != StateStopped {
			out = append(out, n)
		}
	}
	return out
}

// Up returns the members whose process runs and is not paused.
func (c *Cluster) Up() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.State() == StateUp {
			out = append(out, n)
		}
	}
	return out
}

// Node returns a node by id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes() {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Admin is a client of a node's admin API.
func (c *Cluster) Admin(n *Node) *admin.Client {
	return admin.NewClient("http://"+n.Net.ClientAddr, c.token)
}

// WaitReady waits until the node's /readyz answers 200.
func (c *Cluster) WaitReady(ctx context.Context, n *Node, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Net.ClientAddr+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status + " " + strings.TrimSpace(string(body))
		} else {
			last = err.Error()
		}
		if n.State() == StateKilled {
			return fmt.Errorf("%s is not running", n.ID)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v (last: %s); see %s", n.ID, timeout, last, n.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// signal sends sig to a node's process.
func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("%s has no process", n.ID)
	}
	return n.cmd.Process.Signal(sig)
}

// Kill kills a node with SIGKILL and waits for it to die.
func (c *Cluster) Kill(n *Node) error {
	n.mu.Lock()
	if n.state == StateKilled || n.state == StateStopped {
		n.mu.Unlock()
		return nil
	}
	n.expected = true
	exited := n.exited
	n.mu.Unlock()
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-exited
	n.mu.Lock()
	n.state = StateKilled
	n.mu.Unlock()
	return nil
}

// Terminate sends a node SIGTERM, a graceful stop, and returns at once
// with a channel closed when the process has exited. The node counts as
// killed from now on (down until Restart), so no other fault picks it
// while it stops.
func (c *Cluster) Terminate(n *Node) (<-chan struct{}, error) {
	n.mu.Lock()
	if n.state != StateUp {
		n.mu.Unlock()
		return nil, fmt.Errorf("%s is %s, not up", n.ID, n.state)
	}
	n.expected = true
	n.state = StateKilled
	exited := n.exited
	n.mu.Unlock()
	if err := n.signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	return exited, nil
}

// Restart starts a killed node again with its data.
func (c *Cluster) Restart(n *Node) error {
	n.mu.Lock()
	if n.state != StateKilled {
		n.mu.Unlock()
		return nil
	}
	n.state = StateUp // claimed: nobody else restarts it meanwhile
	n.mu.Unlock()
	err := c.start(n)
	if err != nil {
		n.mu.Lock()
		n.state = StateKilled
		n.mu.Unlock()
	}
	return err
}

// Pause stops a node with SIGSTOP.
func (c *Cluster) Pause(n *Node) error {
	if n.State() != StateUp {
		return nil
	}
	if err := n.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	n.mu.Lock()
	n.state = StatePaused
	n.mu.Unlock()
	return nil
}

// Resume continues a paused node with SIGCONT.
func (c *Cluster) Resume(n *Node) error {
	if n.State() != StatePaused {
		return nil
	}
	if err := n.signal(syscall.SIGCONT); err != nil {
		return err
	}
	n.mu.Lock()
	if n.state == StatePaused {
		n.state = StateUp
	}
	n.mu.Unlock()
	return nil
}

// Stop stops a node gracefully (SIGTERM) for good, killing it if it takes
// longer than timeout.
func (c *Cluster) Stop(n *Node, timeout time.Duration) {
	n.mu.Lock()
	state, exited := n.state, n.exited
	n.expected = true
	n.mu.Unlock()
	if state == StatePaused {
		_ = n.signal(syscall.SIGCONT)
	}
	if state == StateUp || state == StatePaused {
		_ = n.signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(timeout):
			_ = n.signal(syscall.SIGKILL)
			<-exited
		}
	}
	n.mu.Lock()
	n.state = StateStopped
	n.mu.Unlock()
}

// Reconcile stops the nodes the cluster no longer lists (a decommission
// that finished after the harness stopped waiting for it) and returns
// them.
func (c *Cluster) Reconcile(ctx context.Context) []string {
	var listed map[string]bool
	for _, n := range c.Up() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nodes, err := c.Admin(n).Nodes(cctx)
		cancel()
		if err == nil {
			listed = map[string]bool{}
			for _, m := range nodes {
				listed[m.ID] = true
			}
			break
		}
	}
	var removed []string
	for _, n := range c.Members() {
		if listed != nil && !listed[n.ID] {
			c.Stop(n, 20*time.Second)
			removed = append(removed, n.ID)
		}
	}
	return removed
}

// AddNode starts a new node that joins the cluster through the members'
// peer addresses; it holds no replica until a rebalance.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	c.mu.Lock()
	id := fmt.Sprintf("n%d", len(c.nodes)+1)
	c.mu.Unlock()
	nn, err := c.net.AddNode(id)
	if err != nil {
		return nil, err
	}
	n, err := c.newNode(id, nn)
	if err != nil {
		return nil, err
	}
	for _, m := range c.Members() {
		n.args = append(n.args, "--join", m.Net.PeerAdvertise)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	if err := c.start(n); err != nil {
		return n, err
	}
	return n, c.WaitReady(ctx, n, 60*time.Second)
}

// Close kills every node. Data and logs stay.
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	for _, n := range c.Nodes() {
		n.mu.Lock()
		n.expected = true
		cmd, exited, state := n.cmd, n.exited, n.state
		n.mu.Unlock()
		if cmd == nil || state == StateKilled || state == StateStopped {
			continue
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	}
	close(c.spawn)
	for _, n := range c.Nodes() {
		if n.disk != nil {
			if err := n.disk.Unmount(10 * time.Second); err != nil && c.cfg.Logf != nil {
				c.cfg.Logf("%s: %v", n.ID, err)
			}
		}
	}
}

// PowerLoss kills the nodes with SIGKILL at once and then drops what
// their disks hold that was never fsynced, as a power cut would. Nodes
// already down lose their unsynced data too. The nodes stay down (killed)
// until Restart. It returns what each disk lost.
func (c *Cluster) PowerLoss(nodes []*Node) (string, error) {
	exits := map[*Node]chan struct{}{}
	var errs []error
	for _, n := range nodes {
		if n.disk == nil {
			return "", fmt.Errorf("%s has no lazy filesystem", n.ID)
		}
		n.mu.Lock()
		state, exited := n.state, n.exited
		if state == StateUp || state == StatePaused {
			n.expected = true
		}
		n.mu.Unlock()
		if state == StateUp || state == StatePaused {
			if err := n.signal(syscall.SIGKILL); err != nil {
				errs = append(errs, err)
				continue
			}
			exits[n] = exited
		}
	}
	// All at once: every node dies before any disk is rolled back. One
	// that outlives SIGKILL (stuck in the kernel) keeps its disk: rolling
	// back under a live process would race its writes.
	deadline := time.After(30 * time.Second)
	alive := map[*Node]bool{}
	for n, e := range exits {
		select {
		case <-e:
		case <-deadline:
			alive[n] = true
			errs = append(errs, fmt.Errorf("%s did not exit 30s after SIGKILL: its disk keeps its unsynced data", n.ID))
		}
	}
	var lost []string
	for _, n := range nodes {
		n.mu.Lock()
		if n.state == StateStopped || alive[n] {
			n.mu.Unlock()
			continue
		}
		n.state = StateOff
		n.mu.Unlock()
		st, err := n.disk.Drop()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: drop: %w", n.ID, err))
		}
		lost = append(lost, fmt.Sprintf("%s: %v", n.ID, st))
		if c.cfg.Logf != nil {
			c.cfg.Logf("power loss of %s: %s", n.ID, strings.Join(st.Detail, "; "))
		}
		n.mu.Lock()
		n.state = StateKilled
		n.mu.Unlock()
	}
	return strings.Join(lost, "; "), errors.Join(errs...)
}

// pidFile lists the processes a run started, so that the next run can
// kill any a crashed harness left behind (which the parent-death signal
// should already have done).
type pidFile struct {
	path string
	mu   sync.Mutex
	pids map[int]string // guarded by mu; also the file's content
}

func openPidFile(path string) *pidFile {
	return &pidFile{path: path, pids: map[int]string{}}
}

func (p *pidFile) add(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pids[pid] = procStartTime(pid)
	p.writeLocked()
}

func (p *pidFile) remove(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pids, pid)
	p.writeLocked()
}

func (p *pidFile) writeLocked() {
	var b strings.Builder
	for pid, start := range p.pids {
		fmt.Fprintf(&b, "%d %s\n", pid, start)
	}
	_ = os.WriteFile(p.path, []byte(b.String()), 0o600)
}

// killStale kills the processes listed by an earlier run that are still
// the same processes (same start time).
func (p *pidFile) killStale(logf func(string, ...any)) {
	b, err := os.ReadFile(p.path)
	if err != nil {
		return
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 1 {
			continue
		}
		if start := procStartTime(pid); start != "" && start == f[1] {
			logf("killing node process %d left by an earlier run", pid)
			killPid(pid)
		}
	}
	_ = os.Remove(p.path)
}
