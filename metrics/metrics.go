// Package metrics owns a node's Prometheus registry and the definition of
// every metric the node serves at /metrics: sockets, requests and event
// deliveries of the websocket front, proposals, applies, log syncs and
// forwarded requests of the raft groups, the state of every local group,
// and the Go runtime and process.
//
// It is the only package that imports Prometheus. The packages it measures
// report through interfaces they define themselves (wsfront.Observer,
// multiraft.Observer), which Node implements; the root package wires them.
// Each Node has its own registry, never the global default one, so that
// several nodes can run in one process.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/multiraft"
)

// Node holds the metrics of one node.
type Node struct {
	reg *prometheus.Registry

	socketsOpen   prometheus.Gauge
	socketsOpened prometheus.Counter
	socketsMax    prometheus.Gauge
	refused       *prometheus.CounterVec
	knownRefusals [len(refusalReasons)]prometheus.Counter
	serverCloses  *prometheus.CounterVec
	knownCloses   [len(closeCodes)]prometheus.Counter
	ops           *prometheus.CounterVec
	// opCounters caches the child of every (op, code) pair of the
	// protocol once it was first used: a request then costs one atomic
	// load and one atomic add, with no label hashing.
	opCounters  [len(opNames)][len(codeNames)]atomic.Pointer[prometheus.Counter]
	opDurations [len(opNames)]prometheus.Observer // nil: op not timed
	events      prometheus.Counter

	commit        prometheus.Histogram
	apply         prometheus.Histogram
	logSync       prometheus.Histogram
	forwarded     *prometheus.CounterVec
	forwardedBy   labelCache
	leaderChanges prometheus.Counter
}

// The protocol's ops and error codes (docs/protocol.md), which the front
// reports as label values. A value outside these lists still counts, only
// through a slower path.
var (
	opNames = [...]string{"auth", "join", "leave", "publish", "history", "members",
		"subscribe", "unsubscribe", "ping", "unknown"}
	codeNames = [...]string{"ok", "bad_request", "unauthorized", "forbidden", "not_found",
		"conflict", "too_large", "rate_limited", "limit_exceeded", "unavailable",
		"unknown_outcome", "internal"}
	// timedOps wait for the cluster; the others are answered inline and
	// their latency says nothing.
	timedOps = []string{"join", "leave", "publish", "history", "members", "subscribe"}
	// closeCodes are the codes the front closes sockets with.
	closeCodes = [...]int{1001, 4001, 4002, 4008, 4029}
	// refusalReasons are wsfront's Refused* reasons.
	refusalReasons = [...]string{"max_sockets", "per_ip", "per_user"}
)

// latencyBuckets span 100µs to about 6.5s: an fsync or a local apply at the
// low end, a proposal waiting out an election at the high end.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 17)

// New creates a node's registry with every metric registered, the Go
// runtime and process collectors included.
func New() *Node {
	n := &Node{reg: prometheus.NewRegistry()}
	f := factory{n.reg}
	n.socketsOpen = f.gauge("herald_ws_sockets_open", "Websockets open now.")
	n.socketsOpened = f.counter("herald_ws_sockets_opened_total", "Websockets accepted.")
	n.socketsMax = f.gauge("herald_ws_sockets_max", "The node's websocket limit (--max-sockets, or derived from the open-files limit).")
	n.refused = f.counterVec("herald_ws_sockets_refused_total",
		"Websockets refused for a limit, by reason: max_sockets (node full, HTTP 503), per_ip (HTTP 429), per_user (auth answered limit_exceeded, close 4029).", "reason")
	for i, reason := range refusalReasons {
		n.knownRefusals[i] = n.refused.WithLabelValues(reason)
	}
	n.serverCloses = f.counterVec("herald_ws_server_closes_total",
		"Websockets the node closed, by close code: 4001 not authenticated in time, 4002 idle, 4008 slow consumer, 4029 too many sockets for the user, 1001 node stopping.", "code")
	for i, code := range closeCodes {
		n.knownCloses[i] = n.serverCloses.WithLabelValues(strconv.Itoa(code))
	}
	n.ops = f.counterVec("herald_ws_ops_total",
		`Requests answered, by op and result code ("ok" or the protocol error code).`, "op", "code")
	opDur := f.histogramVec("herald_ws_op_duration_seconds",
		"Time from a request's frame arriving to its reply being queued, for ops that reach the cluster.", "op")
	for _, op := range timedOps {
		n.opDurations[opIndex(op)] = opDur.WithLabelValues(op)
	}
	n.events = f.counter("herald_ws_events_delivered_total", "Event frames queued for sockets, live and caught up from history.")

	n.commit = f.histogram("herald_raft_commit_duration_seconds",
		"Time a data group proposal took on its leader's node, from raft.Apply until the entry was committed and applied there.")
	n.apply = f.histogram("herald_raft_apply_duration_seconds",
		"Time a data group replica on this node took to apply one batch of committed entries.")
	n.logSync = f.histogram("herald_raft_log_sync_duration_seconds",
		"Time of one fsync of the raft log store; every raft write waits for one (badger log store only).")
	n.forwarded = f.counterVec("herald_raft_forwarded_total",
		"Requests sent to another node's peer port (forwarded proposals and queries, read indexes, meta requests), by kind.", "kind")
	n.forwardedBy = labelCache{vec: n.forwarded}
	n.leaderChanges = f.counter("herald_raft_leader_changes_total",
		"Leaders that local replicas saw their group elect or hand over to (lost leaders not counted).")

	n.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return n
}

// Registry is the node's registry, for programs that embed a node to add
// their own metrics to /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Handler serves the registry in Prometheus' exposition formats.
func (n *Node) Handler() http.Handler {
	return promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{
		// A group collector error (a replica stopping mid-scrape) must
		// not hide every other metric.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      n.reg,
	})
}

// SocketOpened implements wsfront.Observer.
func (n *Node) SocketOpened() {
	n.socketsOpen.Inc()
	n.socketsOpened.Inc()
}

// SetMaxSockets records the node's socket limit, so that dashboards can
// compare herald_ws_sockets_open with it.
func (n *Node) SetMaxSockets(limit int) { n.socketsMax.Set(float64(limit)) }

// SocketRefused implements wsfront.Observer.
func (n *Node) SocketRefused(reason string) {
	for i, r := range refusalReasons {
		if r == reason {
			n.knownRefusals[i].Inc()
			return
		}
	}
	n.refused.WithLabelValues(reason).Inc()
}

// SocketClosed implements wsfront.Observer.
func (n *Node) SocketClosed() { n.socketsOpen.Dec() }

// ServerClosed implements wsfront.Observer.
func (n *Node) ServerClosed(code int) {
	for i, c := range closeCodes {
		if c == code {
			n.knownCloses[i].Inc()
			return
		}
	}
	n.serverCloses.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Op implements wsfront.Observer.
func (n *Node) Op(op, code string, d time.Duration) {
	o, c := opIndex(op), codeIndex(code)
	if o < 0 || c < 0 {
		n.ops.WithLabelValues(op, code).Inc()
		return
	}
	cell := &n.opCounters[o][c]
	ctr := cell.Load()
	if ctr == nil {
		child := n.ops.WithLabelValues(op, code)
		cell.CompareAndSwap(nil, &child)
		ctr = cell.Load()
	}
	(*ctr).Inc()
	if h := n.opDurations[o]; h != nil {
		h.Observe(d.Seconds())
	}
}

// EventsDelivered implements wsfront.Observer.
func (n *Node) EventsDelivered(count int) { n.events.Add(float64(count)) }

// Committed implements multiraft.Observer.
func (n *Node) Committed(group uint64, d time.Duration) {
	if group != multiraft.MetaGroup {
		n.commit.Observe(d.Seconds())
	}
}

// Applied implements multiraft.Observer.
func (n *Node) Applied(group uint64, _ int, d time.Duration) {
	if group != multiraft.MetaGroup {
		n.apply.Observe(d.Seconds())
	}
}

// LogSynced implements multiraft.Observer.
func (n *Node) LogSynced(d time.Duration) { n.logSync.Observe(d.Seconds()) }

// Forwarded implements multiraft.Observer.
func (n *Node) Forwarded(kind string) { n.forwardedBy.get(kind).Inc() }

// LeaderChanged counts a leader change a local replica saw; a group
// losing its leader is not one (its next leader is).
func (n *Node) LeaderChanged(c multiraft.LeaderChange) {
	if c.LeaderID != "" {
		n.leaderChanges.Inc()
	}
}

func opIndex(op string) int {
	for i, name := range opNames {
		if name == op {
			return i
		}
	}
	return -1
}

func codeIndex(code string) int {
	for i, name := range codeNames {
		if name == code {
			return i
		}
	}
	return -1
}

// labelCache resolves the value of a vector's one label to its child
// counter once; the vector would hash the value on every call.
type labelCache struct {
	vec *prometheus.CounterVec // set at construction, read-only after

	mu       sync.RWMutex
	children map[string]prometheus.Counter // guarded by mu
}

func (c *labelCache) get(key string) prometheus.Counter {
	c.mu.RLock()
	ctr, ok := c.children[key]
	c.mu.RUnlock()
	if ok {
		return ctr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ctr, ok = c.children[key]; !ok {
		ctr = c.vec.WithLabelValues(key)
		if c.children == nil {
			c.children = make(map[string]prometheus.Counter)
		}
		c.children[key] = ctr
	}
	return ctr
}

// factory registers each metric as it is made.
type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets}, labels)
	f.reg.MustRegister(h)
	return h
}
