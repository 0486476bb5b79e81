package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/heraldbin"
	"github.com/heraldhq/herald/internal/leakcheck"
	"github.com/heraldhq/herald/internal/wstest"
)

// These tests build the herald binary and drive real processes on loopback.

var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin-*")
	if err == nil {
		heraldBin, err = heraldbin.Build(dir, "-race")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	leakcheck.Main(m, func() { _ = os.RemoveAll(dir) })
}

// freePorts returns n ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// proc is one herald process with its output collected.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(heraldBin, args...), done: make(chan struct{})}
	w := &lockedWriter{p: p}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of herald %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

type lockedWriter struct{ p *proc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("herald did not exit within %v", timeout)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func (p *proc) waitOutput(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), text) {
		select {
		case <-p.done:
			t.Fatalf("herald exited before printing %q", text)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald did not print %q within %v", text, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveCluster is a cluster of herald serve processes on loopback: node i
// is n<i+1>, with its data in dir/n<i+1>; the first three bootstrap it.
type serveCluster struct {
	t     *testing.T
	dir   string
	ports []int    // the nodes' client ports, then their peer ports
	args  []string // flags every node gets
	boot  []string // the bootstrap flag of the first three
	procs []*proc  // by node; a restart replaces its entry
}

// fastElections are raft timings that let a test see failovers quickly.
var fastElections = []string{"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--leader-lease-timeout", "250ms"}

// startServeCluster starts the three nodes that bootstrap a cluster with
// room for nodes in all, each with args and warn-level logs, and waits
// until they are ready.
func startServeCluster(t *testing.T, dir string, nodes int, args ...string) *serveCluster {
	t.Helper()
	c := &serveCluster{t: t, dir: dir, ports: freePorts(t, 2*nodes), args: args}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, c.peer(i)))
	}
	c.boot = []string{"--bootstrap", strings.Join(peers, ",")}
	for i := range 3 {
		c.start(i, c.boot...)
	}
	for i := range 3 {
		waitReady(t, c.url(i), 60*time.Second)
	}
	return c
}

func (c *serveCluster) client(i int) string { return fmt.Sprintf("127.0.0.1:%d", c.ports[i]) }
func (c *serveCluster) peer(i int) string {
	return fmt.Sprintf("127.0.0.1:%d", c.ports[len(c.ports)/2+i])
}
func (c *serveCluster) url(i int) string { return "http://" + c.client(i) }
func (c *serveCluster) ws(i int) string  { return "ws://" + c.client(i) + "/ws" }

// writePrivate writes data to a file at path that only its owner may
// read, as herald wants of a key or secret, and returns path.
func writePrivate(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// admin runs herald admin against node i with the token "secret", which
// the tests that use it start their nodes with, and returns its output.
func (c *serveCluster) admin(i int, args ...string) (string, error) {
	cmd := exec.Command(heraldBin, append([]string{"admin", "--addr", c.url(i), "--token", "secret"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustAdmin is admin that fails the test if the command fails.
func (c *serveCluster) mustAdmin(i int, args ...string) string {
	c.t.Helper()
	out, err := c.admin(i, args...)
	if err != nil {
		c.t.Fatalf("herald admin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// start starts node i with the cluster's flags and extra.
func (c *serveCluster) start(i int, extra ...string) *proc {
	c.t.Helper()
	args := append([]string{"serve", "--node-id", fmt.Sprintf("n%d", i+1),
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)),
		"--client-addr", c.client(i), "--peer-addr", c.peer(i), "--log-level", "warn"}, c.args...)
	p := startProc(c.t, append(args, extra...)...)
	for len(c.procs) <= i {
		c.procs = append(c.procs, nil)
	}
	c.procs[i] = p
	return p
}

// stop sends SIGTERM to nodes and fails the test unless each exits with 0
// within 30 s.
func (c *serveCluster) stop(nodes ...int) {
	c.t.Helper()
	for _, i := range nodes {
		_ = c.procs[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, i := range nodes {
		if code := c.procs[i].wait(c.t, 30*time.Second); code != 0 {
			c.t.Errorf("node %d exit code %d", i+1, code)
		}
	}
}

// waitReady waits until the node at base says it is ready.
func waitReady(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	waitOK(t, base+"/readyz", timeout)
}

// waitOK waits until a GET of url answers 200 OK.
func waitOK(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within %v (last: %v)", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ports := freePorts(t, 2)
	peer := fmt.Sprintf("127.0.0.1:%d", ports[1])
	common := []string{"--insecure-auth", "--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", peer}
	owned := filepath.Join(dir, "owned")
	if err := os.MkdirAll(owned, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(owned, "herald-node.json"), []byte(`{"node_id":"other"}`), 0o640); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "file")
	_ = os.WriteFile(notDir, nil, 0o640)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", dir + "/a"}, "--node-id is required"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/b", "--bootstrap", "n1=nowhere"}, "--bootstrap"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/c", "--bootstrap", "n2=" + peer}, "does not list this node"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/d", "--bootstrap", "n1=" + peer, "--join", "x:1"}, "exclude each other"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/e", "--log-store", "tape"}, "--log-store"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/f", "--max-frame", "-1"}, "--max-frame -1 is negative"},
		{[]string{"--node-id", "n1", "--data-dir", owned}, "belongs to node other"},
		{[]string{"--node-id", "n1", "--data-dir", notDir}, "data dir"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/g", "--heartbeat-timeout", "1ms"}, "raft timeouts"},
		{[]string{"--node-id", "n1", "--data-dir", dir + "/h", "--jwt-public-keys", notDir}, "--jwt-public-keys"},
	}
	for _, tc := range cases {
		p := startProc(t, append(append([]string{"serve"}, common...), tc.args...)...)
		if code := p.wait(t, 20*time.Second); code == 0 || !strings.Contains(p.output(), tc.want) {
			t.Errorf("serve %v: exit %d, output %q; want an error mentioning %q", tc.args, code, p.output(), tc.want)
		}
	}
	// No auth configured at all.
	p := startProc(t, "serve", "--node-id", "n1", "--data-dir", dir+"/i")
	if code := p.wait(t, 20*time.Second); code == 0 || !strings.Contains(p.output(), "--jwt-secret-file") {
		t.Errorf("serve without auth: exit %d, %q", code, p.output())
	}
	// The client port in use.
	p = startProc(t, "serve", "--node-id", "n1", "--data-dir", dir+"/j", "--insecure-auth",
		"--client-addr", busy.Addr().String(), "--peer-addr", peer)
	if code := p.wait(t, 20*time.Second); code == 0 || !strings.Contains(p.output(), "address already in use") {
		t.Errorf("serve on a busy port: exit %d, %q", code, p.output())
	}
	// A config file with a typo'd value.
	cfgFile := filepath.Join(dir, "herald.yaml")
	_ = os.WriteFile(cfgFile, []byte("node-id: n1\ngroups: many\n"), 0o640)
	p = startProc(t, "serve", "--config", cfgFile, "--insecure-auth")
	if code := p.wait(t, 20*time.Second); code == 0 || !strings.Contains(p.output(), "--config") {
		t.Errorf("serve with a bad config file: exit %d, %q", code, p.output())
	}
}

// Three serve processes; SIGTERM on one while a client publishes: nothing
// acknowledged is lost, the node exits cleanly in bounded time and comes
// back with its data.
func TestServeClusterSurvivesSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "common.toml")
	_ = os.WriteFile(cfgFile, []byte("insecure-auth = true\ngroups = 8\nheartbeat-timeout = \"500ms\"\nelection-timeout = \"500ms\"\nleader-lease-timeout = \"250ms\"\nlease-ttl = \"3s\"\n"), 0o640)
	c := startServeCluster(t, dir, 3, "--config", cfgFile)
	pub := wstest.Login(t, c.ws(1), "writer")
	acked := map[int]bool{}
	publish := func(k int) {
		for attempt := 0; ; attempt++ {
			if attempt > 200 {
				t.Fatalf("publish %d never succeeded", k)
			}
			r, _ := pub.TryCall("publish", wstest.Obj{"room": "durable", "data": k, "key": fmt.Sprint(k)})
			if r == nil {
				pub = wstest.Login(t, c.ws(1+attempt%2), "writer")
				continue
			}
			if r["ok"] == true {
				acked[k] = true
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for k := range 20 {
		publish(k)
	}
	stopStart := time.Now()
	if err := c.procs[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for k := 20; k < 40; k++ {
		publish(k)
	}
	if code := c.procs[0].wait(t, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit code %d", code)
	}
	t.Logf("graceful stop took %v", time.Since(stopStart))
	c.start(0, c.boot...)
	waitReady(t, c.url(0), 60*time.Second)
	for k := 40; k < 50; k++ {
		publish(k)
	}
	// Read the full history from the restarted node.
	r, _ := wstest.Login(t, c.ws(0), "reader").TryCall("history", wstest.Obj{"room": "durable", "from_seq": 1, "limit": 1000})
	if r == nil || r["ok"] != true {
		t.Fatalf("history: %v", r)
	}
	seen := map[int]int{}
	for _, e := range r["events"].([]any) {
		seen[int(e.(map[string]any)["data"].(float64))]++
	}
	for k := range acked {
		if seen[k] != 1 {
			t.Fatalf("acknowledged publish %d appears %d times", k, seen[k])
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("history has %d values, %d were acknowledged", len(seen), len(acked))
	}
	c.stop(0, 1, 2)
}

// herald dev starts, serves a publish/subscribe round trip, and stops
// cleanly on Ctrl-C.
func TestDevRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 1)
	basePort := ports[0] - 1
	// The dev ports are base+1..3 and base+101..103; find a base whose
	// ports are all free.
	for try := 0; try < 20; try++ {
		if portsFree(basePort+1, basePort+2, basePort+3, basePort+101, basePort+102, basePort+103) {
			break
		}
		basePort = freePorts(t, 1)[0] - 1
	}
	p := startProc(t, "dev", "--base-port", fmt.Sprint(basePort), "--data", filepath.Join(dir, "data"))
	p.waitOutput(t, "Herald dev cluster is up", 60*time.Second)
	sub := wstest.Login(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", basePort+1), "alice")
	if r := sub.Call("subscribe", wstest.Obj{"room": "lobby"}); r["ok"] != true {
		t.Fatalf("subscribe: %v", r)
	}
	pub := wstest.Login(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", basePort+3), "bob")
	if r := pub.Call("publish", wstest.Obj{"room": "lobby", "data": map[string]any{"text": "hi"}}); r["ok"] != true {
		t.Fatalf("publish: %v", r)
	}
	if f := sub.Event(10 * time.Second); f["seq"] != 1.0 || f["member"] != "bob" {
		t.Fatalf("event: %v", f)
	}
	// The admin API answers without a token from loopback.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/admin/v1/status", basePort+1))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin status: %d %s", resp.StatusCode, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("dev exit code %d", code)
	}
	if !strings.Contains(p.output(), "stopped") {
		t.Fatalf("dev output: %s", p.output())
	}
	// Running it again reuses the data.
	p = startProc(t, "dev", "--base-port", fmt.Sprint(basePort), "--data", filepath.Join(dir, "data"))
	p.waitOutput(t, "Herald dev cluster is up", 60*time.Second)
	r, _ := wstest.Login(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", basePort+2), "carol").TryCall("history", wstest.Obj{"room": "lobby"})
	if r == nil || r["ok"] != true || len(r["events"].([]any)) != 1 {
		t.Fatalf("history after a restart: %v", r)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("second dev exit code %d", code)
	}
}

func portsFree(ports ...int) bool {
	for _, port := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		_ = l.Close()
	}
	return true
}

// The admin API is on the client port from the moment the port answers,
// not only once the node has joined its cluster: here the node's peers
// never start, so its start never finishes, and an API mounted after the
// start would answer 404 for as long as it waits.
func TestServeMountsAdminBeforeListening(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 4)
	var boot []string
	for i := range 3 {
		boot = append(boot, fmt.Sprintf("n%d=127.0.0.1:%d", i+1, ports[1+i]))
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	p := startProc(t, "serve", "--insecure-auth", "--groups", "2", "--admin-token", "secret", "--log-level", "warn",
		"--node-id", "n1", "--data-dir", filepath.Join(dir, "n1"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--bootstrap", strings.Join(boot, ","))
	waitOK(t, base+"/healthz", 60*time.Second)
	req, _ := http.NewRequest("GET", base+"/admin/v1/status?timeout=1s", nil)
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("admin API while the node waits for its cluster: %d %s %s, want the API's JSON answer",
			resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	t.Logf("admin API while the node waits for its cluster: %d %s", resp.StatusCode, body)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 30*time.Second)
}
