package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

var (
	_ wsfront.Observer   = (*metrics.Node)(nil)
	_ multiraft.Observer = (*metrics.Node)(nil)
)

// scrape is one node's /metrics, parsed.
type scrape map[string]*dto.MetricFamily

func scrapeNode(t *testing.T, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s", base, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", base, err)
	}
	return fams
}

// series returns the series of name whose labels include want.
func (s scrape) series(name string, want ...string) []*dto.Metric {
	fam := s[name]
	if fam == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range fam.GetMetric() {
		if hasLabels(m, want...) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, kv ...string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is the sum of the matching series' values (histograms: their
// sample counts); absent series count as 0.
func (s scrape) value(name string, labels ...string) float64 {
	var v float64
	for _, m := range s.series(name, labels...) {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v
}

// A cluster serving sockets reports them, their requests and deliveries,
// its raft groups' state, proposals, log syncs, forwarding and leader
// changes, each node on its own /metrics.
func TestClusterMetrics(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	base := c.HTTP(0)
	front := c.Node(0).Front()
	sub := wstest.Login(t, c.URL(0), "reader")
	pub := wstest.Login(t, c.URL(0), "writer")

	// Publishing through node 1 into a group it does not lead forwards
	// the proposal. Leadership may move under the test: try rooms until
	// one publish was forwarded.
	var room string
	attempt := 0
	eventually.Nil(t, 20*time.Second, "a forwarded publish", func() error {
		h := c.Node(0).Host()
		for i := 0; ; i++ {
			room = fmt.Sprintf("room-%d", i)
			if id, _ := h.Leader(h.GroupForKey(room)); id != "" && id != h.NodeID() {
				break
			}
		}
		before := scrapeNode(t, base).value("herald_raft_forwarded_total", "kind", "propose")
		sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": room}))
		attempt++ // a key per attempt: a retried attempt must publish anew
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": room, "data": "hello", "key": fmt.Sprint("hello-", attempt)}))
		if ev := sub.Event(10 * time.Second); ev["room"] != room {
			return fmt.Errorf("event from room %v, want %s", ev["room"], room)
		}
		if after := scrapeNode(t, base).value("herald_raft_forwarded_total", "kind", "propose"); after <= before {
			return fmt.Errorf("publish to room %s through a follower: forwarded proposals %v -> %v", room, before, after)
		}
		return nil
	})
	if r := pub.Call("publish", wstest.Obj{"room": room}); wstest.ErrCode(r) != "bad_request" {
		t.Fatalf("publish without data: %v", r)
	}
	if r := pub.Call("frobnicate", wstest.Obj{"room": room}); wstest.ErrCode(r) != "bad_request" {
		t.Fatalf("unknown op: %v", r)
	}

	m := scrapeNode(t, base)
	if got, want := m.value("herald_ws_sockets_open"), float64(front.Sessions()); got != want || want != 2 {
		t.Errorf("sockets open: metric %v, front %v, want 2", got, want)
	}
	if got := m.value("herald_ws_sockets_opened_total"); got != 2 {
		t.Errorf("sockets opened: %v, want 2", got)
	}
	for _, tc := range []struct {
		op, code string
		min      float64
	}{
		{"auth", "ok", 2}, {"subscribe", "ok", 1}, {"publish", "ok", 1},
		{"publish", "bad_request", 1}, {"unknown", "bad_request", 1},
	} {
		if got := m.value("herald_ws_ops_total", "op", tc.op, "code", tc.code); got < tc.min {
			t.Errorf("ops{op=%s,code=%s} = %v, want at least %v", tc.op, tc.code, got, tc.min)
		}
	}
	if s := m.series("herald_ws_ops_total", "op", "frobnicate"); len(s) > 0 {
		t.Errorf("a client's op text became a label value: %v", s)
	}
	if got := m.value("herald_ws_op_duration_seconds", "op", "publish"); got < 2 {
		t.Errorf("publish latency samples: %v, want at least 2", got)
	}
	if got := m.value("herald_ws_op_duration_seconds", "op", "ping"); got != 0 {
		t.Errorf("ping latency samples: %v, want none", got)
	}
	if got := m.value("herald_ws_events_delivered_total"); got < 1 {
		t.Errorf("events delivered: %v", got)
	}
	if got := m.value("herald_raft_log_sync_duration_seconds"); got < 1 {
		t.Errorf("log syncs: %v", got)
	}
	if got := m.value("herald_raft_apply_duration_seconds"); got < 1 {
		t.Errorf("applied batches: %v", got)
	}
	if m["go_goroutines"] == nil || m["process_resident_memory_bytes"] == nil {
		t.Errorf("runtime or process metrics missing")
	}
	var commits float64
	for i := range c.Len() {
		commits += scrapeNode(t, c.HTTP(i)).value("herald_raft_commit_duration_seconds")
	}
	if commits < 1 {
		t.Errorf("no node measured a commit")
	}

	// The socket count follows a close.
	pub.Close()
	eventually.Nil(t, 10*time.Second, "the socket count after a close", func() error {
		got := scrapeNode(t, base).value("herald_ws_sockets_open")
		if want := float64(front.Sessions()); got != want || want != 1 {
			return fmt.Errorf("after a close: sockets open metric %v, front %v, want 1", got, want)
		}
		return nil
	})

	// Every local replica reports its group, and exactly one replica of
	// each group leads.
	eventually.Nil(t, 10*time.Second, "a leader for every group", func() error {
		leaders := map[string]float64{}
		for i := range c.Len() {
			s := scrapeNode(t, c.HTTP(i))
			local := c.Node(i).Host().LocalGroups()
			series := s.series("herald_raft_group_leader")
			if len(series) != len(local) {
				return fmt.Errorf("node %d: %d group series for %d local groups", i+1, len(series), len(local))
			}
			for _, g := range local {
				gl := strconv.FormatUint(g, 10)
				for _, name := range []string{"herald_raft_group_leader", "herald_raft_group_term", "herald_raft_group_last_index",
					"herald_raft_group_commit_index", "herald_raft_group_applied_index", "herald_raft_group_apply_lag"} {
					if len(s.series(name, "group", gl)) != 1 {
						return fmt.Errorf("node %d: no %s for group %d", i+1, name, g)
					}
				}
				if s.value("herald_raft_group_term", "group", gl) < 1 || s.value("herald_raft_group_applied_index", "group", gl) < 1 {
					return fmt.Errorf("node %d: group %d has no term or applied index", i+1, g)
				}
			}
			for _, m := range series {
				leaders[label(m, "group")] += m.Gauge.GetValue()
			}
		}
		if len(leaders) != int(c.Node(0).Host().Cluster().Groups)+1 {
			return fmt.Errorf("groups reported: %v, want every data group and the meta group", leaders)
		}
		for g, n := range leaders {
			if n != 1 {
				return fmt.Errorf("group %s has %v leaders", g, n)
			}
		}
		return nil
	})

	// A leadership handed over is counted on the replicas that saw it.
	changes := func() float64 {
		var sum float64
		for i := range c.Len() {
			sum += scrapeNode(t, c.HTTP(i)).value("herald_raft_leader_changes_total")
		}
		return sum
	}
	before := changes()
	if before < 1 {
		t.Errorf("the first elections were not counted")
	}
	h := c.Node(0).Host()
	g := h.GroupForKey(room)
	// Node 1 may not have heard from a leader the others already report.
	var id string
	eventually.True(t, 10*time.Second, "node 1 knows the room's leader", func() bool { id, _ = h.Leader(g); return id != "" })
	to := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}[id]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.TransferLeader(ctx, g, to); err != nil {
		t.Fatalf("transfer group %d from %s to %s: %v", g, id, to, err)
	}
	eventually.Nil(t, 10*time.Second, "a leader change counted", func() error {
		if after := changes(); after <= before {
			return fmt.Errorf("leader changes %v -> %v after a transfer", before, after)
		}
		return nil
	})
}

// A socket that does not read is closed as a slow consumer, and counted.
func TestSlowConsumerCloseCounted(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: testcluster.SlowConsumerLimits()})
	base := c.HTTP(0)
	m := scrapeNode(t, base)
	for _, code := range []string{"1001", "4001", "4002", "4008"} {
		if s := m.series("herald_ws_server_closes_total", "code", code); len(s) != 1 || s[0].Counter.GetValue() != 0 {
			t.Errorf("close code %s before any close: %v", code, s)
		}
	}
	room := "firehose"
	slow := wstest.DialRaw(t, base)
	slow.Send(t, `{"id":1,"op":"auth","user":"slow"}`)
	slow.Send(t, `{"id":2,"op":"subscribe","room":"`+room+`"}`)
	front := c.Node(0).Front()
	pub := wstest.Login(t, c.URL(0), "writer")
	eventually.Nil(t, 10*time.Second, "the slow socket subscribed", func() error {
		if got := scrapeNode(t, base).value("herald_ws_ops_total", "op", "subscribe", "code", "ok"); got != 1 {
			return fmt.Errorf("the slow socket has not subscribed yet")
		}
		return nil
	})
	payload := strings.Repeat("x", 8<<10)
	for published := 0; front.Sessions() == 2; published++ {
		if published == 2000 {
			t.Fatalf("the slow socket was not closed after %d events of 8 KiB", published)
		}
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": room, "data": payload}))
	}
	m = scrapeNode(t, base)
	if got := m.value("herald_ws_server_closes_total", "code", "4008"); got != 1 {
		t.Errorf("slow consumer closes: %v, want 1", got)
	}
	if got := m.value("herald_ws_sockets_open"); got != 1 {
		t.Errorf("sockets open: %v, want 1", got)
	}
	if got := m.value("herald_ws_events_delivered_total"); got < 1 {
		t.Errorf("events delivered: %v", got)
	}
}

// A node started without metrics serves no /metrics.
func TestMetricsDisabled(t *testing.T) {
	n, err := herald.Start(context.Background(), herald.Config{NodeID: "n1", DataDir: t.TempDir(),
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Auth: auth.Config{Insecure: true}, DisableMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Metrics() != nil {
		t.Errorf("metrics exist while disabled")
	}
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics with metrics disabled: %s", resp.Status)
	}
}

// The calls the front makes per request and per event frame allocate
// nothing once their series exist.
func TestHotPathsDoNotAllocate(t *testing.T) {
	n := metrics.New()
	n.Op("publish", "ok", time.Millisecond)
	if a := testing.AllocsPerRun(1000, func() {
		n.Op("publish", "ok", time.Millisecond)
		n.EventsDelivered(1)
		n.Forwarded("propose")
		n.SocketOpened()
		n.SocketClosed()
		n.SocketRefused("max_sockets") // a flood of refusals must stay cheap
	}); a != 0 {
		t.Fatalf("%v allocations per call", a)
	}
}

// Values the front does not send today still count, under their own label.
func TestUnknownLabelValuesStillCount(t *testing.T) {
	n := metrics.New()
	n.Op("publish", "some_new_code", 0)
	n.ServerClosed(1011)
	n.SocketRefused("per_tenant")
	fams, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := scrape{}
	for _, f := range fams {
		s[f.GetName()] = f
	}
	if s.value("herald_ws_ops_total", "op", "publish", "code", "some_new_code") != 1 {
		t.Errorf("op with a new code not counted")
	}
	if s.value("herald_ws_server_closes_total", "code", "1011") != 1 {
		t.Errorf("close with a new code not counted")
	}
	if s.value("herald_ws_sockets_refused_total", "reason", "per_tenant") != 1 {
		t.Errorf("refusal with a new reason not counted")
	}
}
