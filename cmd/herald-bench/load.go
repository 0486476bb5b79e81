package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// env is what every scenario shares: where to report, how to dial.
type env struct {
	log         io.Writer // progress lines and notes
	progress    bool
	dialer      *dialer
	token       string        // a JWT for every socket; empty: insecure auth by user name
	callTimeout time.Duration // a request's bound on the generator's side
	runID       string        // names rooms and users, so runs against one cluster do not mix
	profileDir  string        // where to write the servers' CPU profiles of the window, if set
}

// payload builds publish data of a given size that carries its send time:
// {"t":<unix ns>,"p":"xxx..."}.
type payload struct{ pad string }

// dataOverhead is the size of the data object without padding (a 19-digit
// timestamp).
const dataOverhead = len(`{"t":1234567890123456789,"p":""}`)

func newPayload(size int) payload {
	return payload{pad: strings.Repeat("x", max(0, size-dataOverhead))}
}

func (p payload) appendData(b []byte, t int64) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"p":"`...)
	b = append(b, p.pad...)
	return append(b, `"}`...)
}

func (p payload) publishBody(room string, t int64) func([]byte) []byte {
	return func(b []byte) []byte {
		b = append(b, `"op":"publish","room":`...)
		b = appendQuoted(b, room)
		b = append(b, `,"data":`...)
		b = p.appendData(b, t)
		return append(b, '}')
	}
}

var (
	dataKey = []byte(`"data":`)
	tKey    = []byte(`"t":`)
)

// eventTime reads the send time out of an event frame's data, 0 if it has
// none.
func eventTime(frame []byte) int64 {
	i := bytes.Index(frame, dataKey)
	if i < 0 {
		return 0
	}
	rest := frame[i+len(dataKey):]
	j := bytes.Index(rest, tKey)
	if j < 0 {
		return 0
	}
	rest = bytes.TrimLeft(rest[j+len(tKey):], " ")
	var t int64
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		t = t*10 + int64(c-'0')
	}
	return t
}

// pubConfig shapes a set of publishers.
type pubConfig struct {
	n        int
	urls     []string
	rate     float64 // publishes per second over all publishers; 0: closed loop
	inflight int     // requests in flight per publisher (closed loop), or its cap (open loop)
	payload  payload
	room     func(pub, k int) int // the room index of publisher pub's k-th publish
	rooms    []string
}

// publishers runs publishing sockets and measures their acks.
type publishers struct {
	tally
	cfg pubConfig
	env *env
	lag *recorder // open loop: how late the generator sent, against the schedule

	reconnects atomic.Int64
	okPerRoom  []atomic.Int64 // acked publishes started in the window, per room

	clients []atomic.Pointer[wsClient]
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newPublishers(e *env, cfg pubConfig, win *window) *publishers {
	if cfg.inflight <= 0 {
		cfg.inflight = 1
	}
	if cfg.rate > 0 && cfg.inflight < 1024 {
		// Open loop: a stalled server must not hold back the schedule.
		cfg.inflight = 1024
	}
	return &publishers{tally: newTally(win), cfg: cfg, env: e, lag: newRecorder("send_lag"),
		okPerRoom: make([]atomic.Int64, len(cfg.rooms)),
		clients:   make([]atomic.Pointer[wsClient], cfg.n), stop: make(chan struct{})}
}

func (ps *publishers) user(i int) string { return fmt.Sprintf("pub-%s-%d", ps.env.runID, i) }

// connect opens publisher i's sockets to their first node, in parallel.
func (ps *publishers) connect(ctx context.Context) error {
	errs := make(chan error, ps.cfg.n)
	sem := make(chan struct{}, 32)
	for i := range ps.cfg.n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, err := ps.env.dialer.dial(ctx, ps.cfg.urls[i%len(ps.cfg.urls)], nil)
			if err == nil {
				if err = c.auth(ctx, ps.user(i), ps.env.token); err != nil {
					c.close()
				}
			}
			if err == nil {
				ps.clients[i].Store(c)
			}
			errs <- err
		}()
	}
	var first error
	for range ps.cfg.n {
		if err := <-errs; err != nil && first == nil {
			first = fmt.Errorf("publisher socket: %w", err)
		}
	}
	return first
}

// start runs every publisher until halt.
func (ps *publishers) start(ctx context.Context) {
	t0 := time.Now()
	for i := range ps.cfg.n {
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			ps.run(ctx, i, t0)
		}()
	}
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ps.stop:
				return
			case now := <-tick.C:
				for i := range ps.clients {
					if c := ps.clients[i].Load(); c != nil {
						c.expire(now, ps.env.callTimeout)
					}
				}
			}
		}
	}()
}

func (ps *publishers) run(ctx context.Context, i int, t0 time.Time) {
	slots := make(chan struct{}, ps.cfg.inflight)
	var interval time.Duration
	next := t0
	if ps.cfg.rate > 0 {
		interval = time.Duration(float64(ps.cfg.n) / ps.cfg.rate * float64(time.Second))
		// Stagger the publishers over one interval.
		next = t0.Add(interval * time.Duration(i) / time.Duration(ps.cfg.n))
	}
	urlIdx := i % len(ps.cfg.urls)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for k := 0; ; k++ {
		c := ps.clients[i].Load()
		if c == nil || c.isClosed() {
			if c = ps.reconnect(ctx, i, &urlIdx); c == nil {
				return
			}
		}
		var start time.Time
		if interval > 0 {
			if wait := time.Until(next); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ps.stop:
					return
				}
			}
			start = next
			next = next.Add(interval)
		}
		select {
		case slots <- struct{}{}:
		case <-ps.stop:
			return
		}
		if interval == 0 {
			start = time.Now()
		} else if now := time.Now(); ps.win.holds(start) {
			ps.lag.record(i, now.Sub(start))
		}
		room := ps.cfg.room(i, k)
		c.send(start, ps.cfg.payload.publishBody(ps.cfg.rooms[room], start.UnixNano()), func(r reply, now time.Time) {
			<-slots
			ps.finish(i, room, start, r, now)
		})
	}
}

func (ps *publishers) finish(i, room int, start time.Time, r reply, now time.Time) {
	if !r.ok {
		ps.fail(start, r.code)
		return
	}
	if ps.ack(i, start, now) {
		ps.okPerRoom[room].Add(1)
	}
}

// reconnect replaces a closed socket, trying the nodes in turn, until it
// succeeds or the publishers stop.
func (ps *publishers) reconnect(ctx context.Context, i int, urlIdx *int) *wsClient {
	backoff := 20 * time.Millisecond
	for {
		select {
		case <-ps.stop:
			return nil
		default:
		}
		*urlIdx = (*urlIdx + 1) % len(ps.cfg.urls)
		ps.reconnects.Add(1)
		c, err := ps.env.dialer.dial(ctx, ps.cfg.urls[*urlIdx], nil)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = c.auth(actx, ps.user(i), ps.env.token)
			cancel()
			if err != nil {
				c.close()
			}
		}
		if err == nil {
			ps.clients[i].Store(c)
			return c
		}
		select {
		case <-time.After(backoff):
		case <-ps.stop:
			return nil
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// halt stops sending and waits, within bound, for the requests in flight.
func (ps *publishers) halt(bound time.Duration) {
	close(ps.stop)
	ps.wg.Wait()
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		n := 0
		for i := range ps.clients {
			if c := ps.clients[i].Load(); c != nil {
				n += c.inflight()
			}
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	now := time.Now()
	for i := range ps.clients {
		if c := ps.clients[i].Load(); c != nil {
			c.expire(now.Add(time.Hour), 0)
		}
	}
}

func (ps *publishers) closeAll() {
	for i := range ps.clients {
		if c := ps.clients[i].Load(); c != nil {
			c.close()
		}
	}
}

// okInWindow is the number of acked publishes started in the window.
func (ps *publishers) okInWindow() int64 {
	var n int64
	for i := range ps.okPerRoom {
		n += ps.okPerRoom[i].Load()
	}
	return n
}

// subscribers holds sockets subscribed to rooms and measures deliveries.
type subscribers struct {
	env        *env
	win        *window
	deliveries *recorder
	connects   *recorder // dial to the last subscribe's reply, per socket
	subscribes *recorder // one subscribe request each
	all        atomic.Int64
	clients    []*wsClient
}

func newSubscribers(e *env, win *window) *subscribers {
	return &subscribers{env: e, win: win, deliveries: newRecorder("delivery"),
		connects: newRecorder("connect"), subscribes: newRecorder("subscribe")}
}

// open opens n sockets with dialers at a time; socket i connects to
// urls[i % len(urls)] and subscribes to rooms(i), up to 16 requests in
// flight. It returns the time it took.
func (ss *subscribers) open(ctx context.Context, n, dialers int, urls []string, rooms func(i int) []string, withEvents bool) (time.Duration, error) {
	ss.clients = make([]*wsClient, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	var progressed atomic.Int64
	stopProgress := make(chan struct{})
	if ss.env.progress {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					fmt.Fprintf(ss.env.log, "  connecting: %d of %d sockets, %.1fs\n", progressed.Load(), n, time.Since(start).Seconds())
				}
			}
		}()
	}
	defer close(stopProgress)
	for range min(dialers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for firstErr.Load() == nil && ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := ss.openOne(ctx, i, urls[i%len(urls)], rooms(i), withEvents); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				progressed.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

func (ss *subscribers) openOne(ctx context.Context, i int, url string, rooms []string, withEvents bool) error {
	t0 := time.Now()
	var onEvent func([]byte, time.Time)
	if withEvents {
		onEvent = func(frame []byte, now time.Time) {
			t := eventTime(frame)
			if t == 0 {
				return
			}
			ss.all.Add(1)
			if ss.win.holdsNanos(t) {
				ss.deliveries.record(i, now.Sub(time.Unix(0, t)))
			}
		}
	}
	c, err := ss.env.dialer.dial(ctx, url, onEvent)
	if err != nil {
		return fmt.Errorf("socket %d: %w", i, err)
	}
	ss.clients[i] = c
	if err := c.auth(ctx, fmt.Sprintf("sub-%s-%d", ss.env.runID, i), ss.env.token); err != nil {
		return fmt.Errorf("socket %d: %w", i, err)
	}
	// Subscribes are pipelined: a socket of 100 rooms should not take 100
	// round trips.
	sem := make(chan struct{}, 16)
	errCh := make(chan error, len(rooms))
	for _, room := range rooms {
		sem <- struct{}{}
		s0 := time.Now()
		c.send(s0, subscribeBody(room), func(r reply, now time.Time) {
			<-sem
			ss.subscribes.record(i, now.Sub(s0))
			if !r.ok {
				errCh <- fmt.Errorf("socket %d: subscribe %s: %s", i, room, r.code)
				return
			}
			errCh <- nil
		})
	}
	for range rooms {
		select {
		case err := <-errCh:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * ss.env.callTimeout):
			return fmt.Errorf("socket %d: no reply to a subscribe in %v", i, 2*ss.env.callTimeout)
		}
	}
	ss.connects.record(i, time.Since(t0))
	return nil
}

// lost counts the sockets that closed, by close code.
func (ss *subscribers) lost() map[string]int64 {
	var out map[string]int64
	for _, c := range ss.clients {
		if c != nil && c.isClosed() {
			if out == nil {
				out = map[string]int64{}
			}
			out[fmt.Sprintf("socket_closed_%d", c.closeCode.Load())]++
		}
	}
	return out
}

func (ss *subscribers) closeAll() {
	for _, c := range ss.clients {
		if c != nil {
			c.close()
		}
	}
}

// waitQuiet waits until deliveries stop arriving (nothing new for quiet),
// within bound.
func (ss *subscribers) waitQuiet(quiet, bound time.Duration) {
	deadline := time.Now().Add(bound)
	last := ss.all.Load()
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if n := ss.all.Load(); n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) >= quiet {
			return
		}
	}
}

// isTerminal reports whether w is a terminal, where progress lines
// overwrite each other.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
