package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// WorkloadConfig shapes the clients of a run.
type WorkloadConfig struct {
	LogRooms []string // unconditional publishes, history reads, subscriptions
	CasRooms []string // conditional publishes competing
	MemRooms []string // joins, leaves and member lists

	Writers     int // processes publishing unique values to LogRooms
	Readers     int // processes reading history of LogRooms and CasRooms
	Cas         int // processes publishing with expect_seq to CasRooms
	Members     int // processes (one user each) joining and leaving MemRooms
	Subscribers int // subscriptions, spread over LogRooms

	// Interval is a process's pause between operations.
	Interval time.Duration
	// RetryFor bounds the attempts of one publish.
	RetryFor time.Duration
	// RequestTimeout is how long a client waits for a reply before it
	// gives the socket up.
	RequestTimeout time.Duration
	Seed           int64
}

// Codes after which a write certainly did not happen but may be retried.
func retryable(code string) bool {
	switch code {
	case "unavailable", "rate_limited", "dial", "refused":
		return true
	}
	return false
}

// indeterminate reports whether a failed write may have taken effect.
func indeterminate(code string) bool {
	switch code {
	case "unknown_outcome", "internal", "timeout", "conn", "unfinished":
		return true
	}
	return false
}

// workload runs the client processes and records their operations.
type workload struct {
	cfg     WorkloadConfig
	rec     *Recorder
	cluster *Cluster

	wg      sync.WaitGroup
	subs    []*subscriber
	subsRun sync.WaitGroup

	mu       sync.Mutex
	sessions []*session // guarded by mu
}

// session is one client process's connection, moved from node to node.
// Only its process uses it, but the harness may close it from outside.
type session struct {
	w    *workload
	proc int
	user string
	// rng, next and lastNode are the process's own; they need no lock.
	rng  *rand.Rand
	next int
	// lastNode is the node last dialed, whether or not it answered.
	lastNode string

	mu   sync.Mutex
	conn *wsConn // guarded by mu: the harness may close it from outside
}

func (s *session) current() *wsConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (w *workload) newSession(proc int, user string) *session {
	s := &session{w: w, proc: proc, user: user,
		rng: rand.New(rand.NewPCG(uint64(w.cfg.Seed), uint64(proc)+1))}
	s.next = s.rng.IntN(64)
	w.mu.Lock()
	w.sessions = append(w.sessions, s)
	w.mu.Unlock()
	return s
}

// ensure returns the session's socket, dialing the next node if it has
// none.
func (s *session) ensure(ctx context.Context) (*wsConn, error) {
	if c := s.current(); c != nil {
		select {
		case <-c.done:
		default:
			return c, nil
		}
	}
	nodes := s.w.cluster.Members()
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no nodes")
	}
	s.next++
	n := nodes[s.next%len(nodes)]
	s.lastNode = n.ID
	c, err := dialWS(ctx, n.ID, n.Net.ClientAddr, s.user, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.ID, err)
	}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return c, nil
}

// drop gives the socket up; the next request goes to another node.
func (s *session) drop() {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.close()
	}
}

func (s *session) close() { s.drop() }

// request sends one request as one operation of the history. write says
// whether an unanswered request may have taken effect. It returns the
// reply (nil when there was none) and the operation's outcome.
func (s *session) request(ctx context.Context, op Op, req *protocol.Request, write bool, fill func(*Op, *protocol.Frame)) (*protocol.Frame, string, string) {
	op.Process = s.proc
	c, err := s.ensure(ctx)
	if err != nil {
		op.Node = s.lastNode
		id := s.w.rec.Invoke(op)
		code := errorCode(err)
		s.w.rec.Complete(id, TypeFail, func(o *Op) { o.Error, o.Message = code, err.Error() })
		return nil, TypeFail, code
	}
	op.Node = c.node
	id := s.w.rec.Invoke(op)
	f, err := c.call(ctx, req, s.w.cfg.RequestTimeout)
	if err != nil {
		s.drop()
		typ := TypeFail
		if write {
			typ = TypeInfo
		}
		code := errorCode(err)
		s.w.rec.Complete(id, typ, func(o *Op) { o.Error = code })
		return nil, typ, code
	}
	if f.OK {
		s.w.rec.Complete(id, TypeOK, func(o *Op) {
			if fill != nil {
				fill(o, f)
			}
		})
		return f, TypeOK, ""
	}
	e := f.Err()
	code := e.Code
	typ := TypeFail
	if write && indeterminate(code) {
		typ = TypeInfo
	}
	if retryable(code) || indeterminate(code) {
		// A node without a leader for the room is likely on the minority
		// side of a partition: try elsewhere, as a real client would.
		s.drop()
	}
	s.w.rec.Complete(id, typ, func(o *Op) {
		o.Error, o.Message, o.LastSeq = code, e.Message, f.LastSeq
	})
	return f, typ, code
}

// publish publishes value once, with value as its key, retrying what
// leaves the outcome open or certainly failed for want of a leader, until
// it succeeds, fails for good, or RetryFor passes.
func (s *session) publish(ctx context.Context, room, value string, expect *uint64) (*protocol.Frame, string) {
	deadline := time.Now().Add(s.w.cfg.RetryFor)
	backoff := 50 * time.Millisecond
	for {
		data, _ := json.Marshal(value)
		req := &protocol.Request{Op: protocol.OpPublish, Room: room, Data: data, Key: value, ExpectSeq: expect}
		op := Op{F: FPublish, Room: room, Value: value, Key: value, ExpectSeq: expect}
		f, typ, code := s.request(ctx, op, req, true, func(o *Op, f *protocol.Frame) {
			o.Seq, o.Duplicate, o.LastSeq = f.Seq, f.Duplicate, f.LastSeq
		})
		if typ == TypeOK {
			return f, typ
		}
		if typ == TypeFail && !retryable(code) {
			return f, typ
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, typ
		}
		wait.Sleep(ctx, backoff+time.Duration(s.rng.Int64N(int64(backoff))))
		backoff = min(2*backoff, time.Second)
	}
}

func (s *session) read(ctx context.Context, room string, from uint64) (*protocol.Frame, string) {
	f, typ, _ := s.request(ctx, Op{F: FRead, Room: room, FromSeq: from}, historyRequest(room, from), false, func(o *Op, f *protocol.Frame) {
		o.Events, o.LastSeq, o.Truncated = events(f), f.LastSeq, f.Truncated
	})
	return f, typ
}

// historyRequest reads a room's history from seq from, in pages as
// large as a node gives.
func historyRequest(room string, from uint64) *protocol.Request {
	limit := 1000
	return &protocol.Request{Op: protocol.OpHistory, Room: room, FromSeq: &from, Limit: &limit}
}

// pause waits a process's interval, jittered.
func (s *session) pause(ctx context.Context) {
	iv := s.w.cfg.Interval
	if iv <= 0 {
		return
	}
	wait.Sleep(ctx, iv/2+time.Duration(s.rng.Int64N(int64(iv))))
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// start launches every process. New operations start until phase ends;
// ops in progress (a publish's retries) run on until hard ends.
func (w *workload) start(phase, hard context.Context) {
	proc := 0
	next := func() int { proc++; return proc - 1 }
	spawn := func(n int, user string, f func(phase, hard context.Context, s *session)) {
		for range n {
			p := next()
			s := w.newSession(p, fmt.Sprintf("%s%d", user, p))
			w.run(func() { f(phase, hard, s) })
		}
	}
	spawn(w.cfg.Writers, "w", w.writer)
	spawn(w.cfg.Cas, "c", w.casWriter)
	spawn(w.cfg.Readers, "r", w.reader)
	spawn(w.cfg.Members, "u", w.member)
	for i := range w.cfg.Subscribers {
		sub := &subscriber{w: w, id: i + 1, room: w.cfg.LogRooms[i%len(w.cfg.LogRooms)], stop: make(chan struct{})}
		sub.s = w.newSession(next(), fmt.Sprintf("s%d", i+1))
		w.subs = append(w.subs, sub)
		w.subsRun.Add(1)
		go func() {
			defer w.subsRun.Done()
			sub.run(hard)
		}()
	}
}

func (w *workload) run(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// wait waits for the processes (not the subscribers) to finish.
func (w *workload) wait() { w.wg.Wait() }

// closeSessions drops every socket. Sockets of member processes stay open
// until the final reads are done, since closing one leaves its rooms.
func (w *workload) closeSessions() {
	for _, sub := range w.subs {
		sub.halt()
	}
	w.subsRun.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sessions {
		s.close()
	}
}

func (w *workload) writer(phase, hard context.Context, s *session) {
	for n := 1; phase.Err() == nil; n++ {
		room := pick(s.rng, w.cfg.LogRooms)
		s.publish(hard, room, fmt.Sprintf("w%d-%d", s.proc, n), nil)
		s.pause(phase)
	}
	s.close()
}

func (w *workload) casWriter(phase, hard context.Context, s *session) {
	known := map[string]*uint64{}
	for n := 1; phase.Err() == nil; n++ {
		room := pick(s.rng, w.cfg.CasRooms)
		if known[room] == nil {
			f, typ := s.read(hard, room, 1<<40)
			if typ == TypeOK {
				last := f.LastSeq
				known[room] = &last
			}
			s.pause(phase)
			continue
		}
		expect := *known[room]
		f, typ := s.publish(hard, room, fmt.Sprintf("c%d-%d", s.proc, n), &expect)
		switch {
		case typ == TypeOK:
			seq := f.Seq
			known[room] = &seq
		case f != nil && replyCode(f) == protocol.CodeConflict:
			last := f.LastSeq
			known[room] = &last
		default:
			known[room] = nil
		}
		s.pause(phase)
	}
	s.close()
}

func (w *workload) reader(phase, hard context.Context, s *session) {
	rooms := append(append([]string(nil), w.cfg.LogRooms...), w.cfg.CasRooms...)
	last := map[string]uint64{}
	for phase.Err() == nil {
		room := pick(s.rng, rooms)
		// Mostly the tail, now and then from the start: both are checked
		// against the one log, and tails keep histories small.
		from := uint64(1)
		if l := last[room]; l > 20 && s.rng.IntN(25) > 0 {
			from = l - uint64(s.rng.IntN(20))
		}
		if f, typ := s.read(hard, room, from); typ == TypeOK {
			last[room] = f.LastSeq
		}
		s.pause(phase)
	}
	s.close()
}

func (w *workload) member(phase, hard context.Context, s *session) {
	for phase.Err() == nil {
		room := pick(s.rng, w.cfg.MemRooms)
		switch r := s.rng.IntN(10); {
		case r < 4:
			s.request(hard, Op{F: FJoin, Room: room, Value: s.user}, &protocol.Request{Op: protocol.OpJoin, Room: room}, true,
				func(o *Op, f *protocol.Frame) { o.Seq = f.Seq })
		case r < 7:
			s.request(hard, Op{F: FLeave, Room: room, Value: s.user}, &protocol.Request{Op: protocol.OpLeave, Room: room}, true,
				func(o *Op, f *protocol.Frame) { o.Seq = f.Seq })
		default:
			s.request(hard, Op{F: FMembers, Room: room}, &protocol.Request{Op: protocol.OpMembers, Room: room}, false,
				func(o *Op, f *protocol.Frame) {
					o.Seq = f.Seq
					for _, m := range f.Members {
						o.Members = append(o.Members, m.Member)
					}
				})
		}
		s.pause(phase)
	}
	// The socket stays open: see closeSessions.
}

// subscriber keeps one subscription to a room alive across sockets and
// nodes, resuming from the last event it received.
type subscriber struct {
	w    *workload
	s    *session
	id   int
	room string
	stop chan struct{}
	once sync.Once

	// mu guards last and epoch, which position reads from another
	// goroutine.
	mu    sync.Mutex
	last  uint64
	epoch string
}

func (sub *subscriber) halt() { sub.once.Do(func() { close(sub.stop) }) }

// position is the last seq delivered.
func (sub *subscriber) position() uint64 {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.last
}

func (sub *subscriber) run(hard context.Context) {
	defer sub.s.close()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-sub.stop:
			return
		case <-hard.Done():
			return
		default:
		}
		from := sub.position() + 1
		req := &protocol.Request{Op: protocol.OpSubscribe, Room: sub.room, FromSeq: &from}
		sub.mu.Lock()
		if sub.epoch != "" {
			epoch := sub.epoch
			req.Epoch = &epoch
		}
		sub.mu.Unlock()
		var streamID int
		op := Op{F: FSubscribe, Room: sub.room, FromSeq: from, Sub: sub.id}
		f, typ, _ := sub.s.request(hard, op, req, false, func(o *Op, f *protocol.Frame) {
			o.LastSeq, o.Truncated = f.LastSeq, f.Truncated || f.EpochChanged
			streamID = o.ID
		})
		if typ != TypeOK {
			sub.s.drop()
			wait.Sleep(hard, backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if f.Epoch != "" {
			sub.mu.Lock()
			sub.epoch = f.Epoch
			sub.mu.Unlock()
		}
		sub.drain(hard, streamID)
		sub.s.drop()
	}
}

// drain records the subscription's events until its socket ends.
func (sub *subscriber) drain(hard context.Context, stream int) {
	c := sub.s.current()
	if c == nil {
		return
	}
	for {
		select {
		case <-sub.stop:
			return
		case <-hard.Done():
			return
		case <-c.done:
			return
		case f := <-c.pushes:
			if f.Room != sub.room {
				continue
			}
			op := Op{Process: sub.s.proc, Node: c.node, F: FDeliver, Room: sub.room, Type: TypeOK, Sub: sub.id, Stream: stream}
			switch f.Ev {
			case protocol.EvEvent:
				ev := Ev{Seq: f.Seq, Type: evType(f.Type), Member: f.Member}
				if ev.Type == "" {
					ev.Value = dataValue(f.Data)
				}
				op.Seq, op.Events = f.Seq, []Ev{ev}
				sub.w.rec.Record(op)
				sub.mu.Lock()
				sub.last, sub.epoch = f.Seq, f.Epoch
				sub.mu.Unlock()
			default:
				// truncated, room_deleted, unsubscribed: none should happen
				// in these rooms; record it and start over.
				op.Error, op.Seq = f.Ev, f.FirstSeq
				sub.w.rec.Record(op)
				if f.Ev == protocol.EvUnsubscribed {
					return
				}
			}
		}
	}
}
