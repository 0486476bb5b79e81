package wsfront_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/wsfront"
)

// benchConn is a lean websocket client for benchmarks: thousands of them
// run at once, so it keeps no per-frame history.
type benchConn struct {
	conn    *gws.Conn
	replies chan []byte
	onEvent func(frame []byte, at time.Time)
}

type benchHandler struct {
	gws.BuiltinEventHandler
	c *benchConn
}

func (h benchHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	if bytes.HasPrefix(b, []byte(`{"ev"`)) {
		if h.c.onEvent != nil {
			h.c.onEvent(b, time.Now())
		}
		return
	}
	select {
	case h.c.replies <- append([]byte(nil), b...):
	default:
	}
}

func dialBench(tb testing.TB, url string, onEvent func([]byte, time.Time)) *benchConn {
	c := &benchConn{replies: make(chan []byte, 256), onEvent: onEvent}
	conn, _, err := gws.NewClient(benchHandler{c: c}, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    http.Header{"Sec-WebSocket-Protocol": []string{wsfront.Subprotocol}},
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	})
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	c.conn = conn
	go conn.ReadLoop()
	return c
}

// do sends a request and waits for its reply (requests are not pipelined
// on a benchConn used this way).
func (c *benchConn) do(tb testing.TB, req string) []byte {
	if err := c.conn.WriteMessage(gws.OpcodeText, []byte(req)); err != nil {
		tb.Fatalf("send: %v", err)
	}
	select {
	case r := <-c.replies:
		if !bytes.Contains(r, []byte(`"ok":true`)) {
			tb.Fatalf("%s: %s", req, r)
		}
		return r
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s: no reply", req)
	}
	return nil
}

func (c *benchConn) close() { _ = c.conn.NetConn().Close() }

// The idle-connection benchmark runs the node in its own process (this
// test binary, re-executed) so that its RSS is the server's alone and the
// two sides' sockets count against two open-file limits.
const frontNodeEnv = "HERALD_BENCH_FRONT_NODE"

// TestBenchFrontNodeProcess is the body of the node process; it is skipped
// unless BenchmarkIdleConnections started it.
func TestBenchFrontNodeProcess(t *testing.T) {
	if os.Getenv(frontNodeEnv) == "" {
		t.Skip("runs only as the node process of BenchmarkIdleConnections")
	}
	if os.Getenv("HERALD_BENCH_HEAPPROFILE") != "" {
		// Every allocation sampled, so that the profile's per-socket
		// entries divided by the sockets are bytes, not estimates.
		runtime.MemProfileRate = 1
	}
	// Every socket comes from one loopback address.
	lim := wsfront.DefaultLimits()
	lim.MaxSocketsPerIP = wsfront.NoLimit
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Groups: 16, Limits: &lim})
	fmt.Println("URL", c.URL(0))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "rss" {
			runtime.GC()
			debug.FreeOSMemory()
			if p := os.Getenv("HERALD_BENCH_HEAPPROFILE"); p != "" {
				if f, err := os.Create(p); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					_ = f.Close()
				}
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Println("RSS", rssBytes(os.Getpid()), "SESSIONS", c.Node(0).Front().Sessions(),
				"HEAP", ms.HeapInuse, "STACK", ms.StackInuse, "GOROUTINES", runtime.NumGoroutine())
		}
	}
}

func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// BenchmarkIdleConnections opens HERALD_BENCH_CONNS (default 10,000)
// authenticated sockets, each subscribed to one of 100 rooms, and reports
// the node's RSS growth per socket. Run with -benchtime=1x.
func BenchmarkIdleConnections(b *testing.B) {
	n := 10_000
	if s := os.Getenv("HERALD_BENCH_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchFrontNodeProcess$", "-test.v")
	cmd.Env = append(os.Environ(), frontNodeEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	out := bufio.NewScanner(stdout)
	readField := func(prefix string) string {
		for out.Scan() {
			if rest, ok := strings.CutPrefix(out.Text(), prefix+" "); ok {
				return rest
			}
		}
		b.Fatalf("node process ended before printing %s", prefix)
		return ""
	}
	url := readField("URL")
	var lastRSS string
	rss := func() (int64, string) {
		fmt.Fprintln(stdin, "rss")
		line := readField("RSS")
		lastRSS = line
		f := strings.Fields(line)
		v, _ := strconv.ParseInt(f[0], 10, 64)
		return v, f[2]
	}
	for b.Loop() {
		// Warm up: the first socket pays for pools and the rooms' group feeds,
		// which are per node, not per socket.
		warm := dialBench(b, url, nil)
		warm.do(b, `{"id":1,"op":"auth","user":"warm"}`)
		for r := range 100 {
			warm.do(b, fmt.Sprintf(`{"id":%d,"op":"subscribe","room":"idle-%d"}`, r+2, r))
		}
		before, _ := rss()
		conns := make([]*benchConn, n)
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					c := dialBench(b, url, nil)
					c.do(b, fmt.Sprintf(`{"id":1,"op":"auth","user":"u%d"}`, i))
					c.do(b, fmt.Sprintf(`{"id":2,"op":"subscribe","room":"idle-%d"}`, i%100))
					conns[i] = c
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		time.Sleep(time.Second)
		after, sessions := rss()
		b.Logf("node memory: %s", lastRSS)
		b.ReportMetric(float64(after-before)/float64(n), "rss-bytes/conn")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "conns/s")
		b.Logf("%d sockets (node counts %s sessions): node RSS %d MiB -> %d MiB", n, sessions, before>>20, after>>20)
		for _, c := range conns {
			c.close()
		}
		warm.close()
	}
}

// BenchmarkPublishToDelivery publishes at a fixed rate (HERALD_BENCH_RATE,
// default 500/s, open loop: sends do not wait for replies) on one node of a
// 3-node cluster and measures, on a subscriber attached to another node,
// the time from send to delivery, and the publish-ack time. b.N messages.
func BenchmarkPublishToDelivery(b *testing.B) {
	rate := 500
	if s := os.Getenv("HERALD_BENCH_RATE"); s != "" {
		rate, _ = strconv.Atoi(s)
	}
	lim := wsfront.DefaultLimits()
	lim.PublishRate, lim.PublishBurst, lim.MaxInflight = 1e6, 1e6, 1<<20
	c := testcluster.Start(b, testcluster.Options{Limits: &lim})
	room := "latency"
	n := b.N
	var mu sync.Mutex
	delivery := make([]time.Duration, 0, n)
	sent := make([]time.Time, n)
	allIn := make(chan struct{})
	sub := dialBench(b, c.URL(0), func(frame []byte, at time.Time) {
		var ev struct {
			Data struct{ I int } `json:"data"`
		}
		if json.Unmarshal(frame, &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		delivery = append(delivery, at.Sub(sent[ev.Data.I]))
		if len(delivery) == n {
			close(allIn)
		}
	})
	defer sub.close()
	sub.do(b, `{"id":1,"op":"auth","user":"reader"}`)
	sub.do(b, `{"id":2,"op":"subscribe","room":"`+room+`"}`)
	acks := make([]time.Duration, 0, n)
	pub := &benchConn{}
	pub = dialBench(b, c.URL(1), nil)
	defer pub.close()
	pub.do(b, `{"id":"a","op":"auth","user":"writer"}`)
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		for range n {
			select {
			case r := <-pub.replies:
				var rep struct{ ID int }
				_ = json.Unmarshal(r, &rep)
				acks = append(acks, time.Since(sent[rep.ID]))
			case <-time.After(30 * time.Second):
				return
			}
		}
	}()
	b.ResetTimer()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		req := fmt.Sprintf(`{"id":%d,"op":"publish","room":"%s","data":{"i":%d}}`, i, room, i)
		if err := pub.conn.WriteMessage(gws.OpcodeText, []byte(req)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-allIn:
	case <-time.After(60 * time.Second):
		b.Fatalf("only %d of %d events delivered", len(delivery), n)
	}
	<-ackDone
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	reportPercentiles(b, "deliver", delivery)
	reportPercentiles(b, "ack", acks)
}

func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	p := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / 1e6 }
	b.ReportMetric(p(0.50), name+"-p50-ms")
	b.ReportMetric(p(0.99), name+"-p99-ms")
}

// BenchmarkFanout has HERALD_BENCH_SUBS (default 1,000) sockets, spread
// over a 3-node cluster, subscribe to one room; b.N messages are published
// (at most 32 in flight) and the benchmark reports deliveries per second
// until every socket has every message. Clients share the machine's cores
// with the cluster, so the figure is a floor.
func BenchmarkFanout(b *testing.B) {
	subs := 1000
	if s := os.Getenv("HERALD_BENCH_SUBS"); s != "" {
		subs, _ = strconv.Atoi(s)
	}
	lim := wsfront.DefaultLimits()
	lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	c := testcluster.Start(b, testcluster.Options{Limits: &lim})
	room := "fanout"
	var delivered atomic.Int64
	want := int64(subs) * int64(b.N)
	done := make(chan struct{})
	var conns []*benchConn
	for i := range subs {
		s := dialBench(b, c.URL(i%c.Len()), func([]byte, time.Time) {
			if delivered.Add(1) == want {
				close(done)
			}
		})
		s.do(b, fmt.Sprintf(`{"id":1,"op":"auth","user":"s%d"}`, i))
		s.do(b, `{"id":2,"op":"subscribe","room":"`+room+`"}`)
		conns = append(conns, s)
	}
	defer func() {
		for _, s := range conns {
			s.close()
		}
	}()
	pub := dialBench(b, c.URL(0), nil)
	defer pub.close()
	pub.do(b, `{"id":"a","op":"auth","user":"writer"}`)
	payload := strings.Repeat("x", 100)
	b.ResetTimer()
	start := time.Now()
	window := make(chan struct{}, 32)
	go func() {
		for range b.N {
			select {
			case <-pub.replies:
				<-window
			case <-time.After(30 * time.Second):
				return
			}
		}
	}()
	for i := range b.N {
		window <- struct{}{}
		req := fmt.Sprintf(`{"id":%d,"op":"publish","room":"%s","data":"%s"}`, i, room, payload)
		if err := pub.conn.WriteMessage(gws.OpcodeText, []byte(req)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		b.Fatalf("%d of %d deliveries", delivered.Load(), want)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
}
