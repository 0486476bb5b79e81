package main

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 2 minutes, with
// three significant digits.
const (
	histLowest  = 1
	histHighest = int64(2 * time.Minute / time.Microsecond)
	histDigits  = 3
	shards      = 8 // recorders are hit from every socket's read goroutine
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histLowest, histHighest, histDigits) }

// window is the measured part of a run. Operations count when they
// started (were scheduled) inside it; what starts during the warm-up or
// after the end does not.
type window struct {
	start atomic.Int64 // unix nanoseconds; MaxInt64 until the warm-up ends
	end   atomic.Int64
}

func newWindow() *window {
	w := &window{}
	w.start.Store(math.MaxInt64)
	w.end.Store(math.MaxInt64)
	return w
}

func (w *window) open(at time.Time)  { w.start.Store(at.UnixNano()) }
func (w *window) close(at time.Time) { w.end.Store(at.UnixNano()) }

func (w *window) holds(t time.Time) bool {
	n := t.UnixNano()
	return n >= w.start.Load() && n < w.end.Load()
}

func (w *window) holdsNanos(n int64) bool { return n >= w.start.Load() && n < w.end.Load() }

// recorder collects one latency distribution (publish acks, deliveries,
// connects): the whole window's histogram and, for the time series, one
// histogram per interval.
type recorder struct {
	name   string
	shards [shards]recShard
}

type recShard struct {
	mu     sync.Mutex
	total  *hdrhistogram.Histogram
	period *hdrhistogram.Histogram
	_      [40]byte // keeps shards on separate cache lines
}

func newRecorder(name string) *recorder {
	r := &recorder{name: name}
	for i := range r.shards {
		r.shards[i].total = newHist()
		r.shards[i].period = newHist()
	}
	return r
}

func clampMicros(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	return min(max(us, histLowest), histHighest)
}

// record adds one value; key spreads concurrent callers over shards.
func (r *recorder) record(key int, d time.Duration) {
	us := clampMicros(d)
	s := &r.shards[uint(key)%shards]
	s.mu.Lock()
	_ = s.total.RecordValue(us)
	_ = s.period.RecordValue(us)
	s.mu.Unlock()
}

// total merges the shards' whole-window histograms.
func (r *recorder) total() *hdrhistogram.Histogram {
	return r.merge(func(s *recShard) *hdrhistogram.Histogram { return s.total }, false)
}

// takePeriod returns the values recorded since the last call.
func (r *recorder) takePeriod() *hdrhistogram.Histogram {
	return r.merge(func(s *recShard) *hdrhistogram.Histogram { return s.period }, true)
}

// merge merges the histogram of each shard that which names, emptying it
// if reset; each shard is locked while it is read.
func (r *recorder) merge(which func(*recShard) *hdrhistogram.Histogram, reset bool) *hdrhistogram.Histogram {
	h := newHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(which(s))
		if reset {
			which(s).Reset()
		}
		s.mu.Unlock()
	}
	return h
}

// Latency summarizes a histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func usToMs(v int64) float64 { return float64(v) / 1000 }

func summarize(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return &Latency{}
	}
	return &Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   usToMs(h.ValueAtQuantile(50)),
		P90:   usToMs(h.ValueAtQuantile(90)),
		P99:   usToMs(h.ValueAtQuantile(99)),
		P999:  usToMs(h.ValueAtQuantile(99.9)),
		Max:   usToMs(h.Max()),
	}
}

// Point is one interval of a run's time series.
type Point struct {
	T     float64 `json:"t_s"` // end of the interval, seconds since the window opened
	Count int64   `json:"count"`
	Rate  float64 `json:"per_s"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// sampler cuts the recorders' per-interval histograms into time series.
type sampler struct {
	interval time.Duration
	recs     []*recorder
	mu       sync.Mutex
	series   map[string][]Point
}

func newSampler(interval time.Duration, recs ...*recorder) *sampler {
	return &sampler{interval: interval, recs: recs, series: map[string][]Point{}}
}

// run samples until stop is closed; the window's start is time zero. The
// last sample is cut at the window's end.
func (s *sampler) run(start time.Time, stop <-chan struct{}) {
	for _, r := range s.recs {
		r.takePeriod() // drop what came before the window
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	last := start
	for {
		select {
		case <-stop:
			// A last interval much shorter than the others would plot as a
			// drop in throughput that did not happen; its values stay in
			// the totals.
			if now := time.Now(); now.Sub(last) >= s.interval/2 {
				s.sample(start, last, now)
			}
			return
		case now := <-t.C:
			s.sample(start, last, now)
			last = now
		}
	}
}

func (s *sampler) sample(start, from, to time.Time) {
	secs := to.Sub(from).Seconds()
	if secs <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		h := r.takePeriod()
		p := Point{T: to.Sub(start).Seconds(), Count: h.TotalCount(), Rate: float64(h.TotalCount()) / secs}
		if h.TotalCount() > 0 {
			p.P50, p.P99, p.Max = usToMs(h.ValueAtQuantile(50)), usToMs(h.ValueAtQuantile(99)), usToMs(h.Max())
		}
		s.series[r.name] = append(s.series[r.name], p)
	}
}

func (s *sampler) get(name string) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Point(nil), s.series[name]...)
}

// tally is what a load's publishers measured: the latency of each
// acknowledged publish that started in the window, the errors of those by
// code, and, for the progress line, every ack and error.
type tally struct {
	win   *window
	acks  *recorder
	errs  errorCounts
	okAll atomic.Int64
}

func newTally(win *window) tally { return tally{win: win, acks: newRecorder("ack")} }

// ack records publisher i's publish scheduled at start and acknowledged at
// now, and reports whether it started in the window.
func (t *tally) ack(i int, start, now time.Time) bool {
	t.okAll.Add(1)
	if !t.win.holds(start) {
		return false
	}
	t.acks.record(i, now.Sub(start))
	return true
}

// fail records a publish scheduled at start that failed with code.
func (t *tally) fail(start time.Time, code string) {
	if t.win.holds(start) {
		t.errs.add(code)
	} else {
		t.errs.n.Add(1)
	}
}

// errorCounts counts failed operations by code; n counts them all, also
// those left out of the map.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
	n  atomic.Int64
}

func (e *errorCounts) add(code string) {
	e.n.Add(1)
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[code]++
	e.mu.Unlock()
}

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}
