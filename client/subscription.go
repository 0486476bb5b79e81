package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// Kind tells a room event from the notices a subscription delivers in
// line with the events.
type Kind uint8

const (
	// KindEvent is an event of the room; Type says which (message, join,
	// leave).
	KindEvent Kind = iota
	// KindTruncated: the events of Epoch below Seq were trimmed before
	// they could be delivered; delivery continues at Seq.
	KindTruncated
	// KindEpochChanged: the incarnation being delivered ended (the room
	// was deleted and created again) while the subscription was away;
	// delivery continues in the new Epoch at Seq.
	KindEpochChanged
	// KindRoomDeleted: incarnation Epoch ended with seq Seq. If the room
	// is used again, its events follow with a new Epoch from seq 1.
	KindRoomDeleted
	// KindPresence: a join or leave (Type) in a room that keeps them out
	// of its history. It has no seq of its own and comes right after the
	// event with seq Seq (0: before the room's first). It is not stored,
	// so a subscription that was away or catching up does not get it.
	KindPresence
)

func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindTruncated:
		return "truncated"
	case KindEpochChanged:
		return "epoch_changed"
	case KindRoomDeleted:
		return "room_deleted"
	case KindPresence:
		return "presence"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Event is an event of a room (Kind KindEvent) or a subscription notice.
type Event struct {
	Kind   Kind
	Room   string
	Epoch  string // the room's incarnation, a decimal string
	Seq    uint64
	Type   string // message, join or leave
	Member string
	Data   json.RawMessage // the message, or the member's meta for a join
	TS     time.Time       // when the leader appended it, UTC
}

// SubscribeOptions say where a subscription starts.
type SubscribeOptions struct {
	// FromSeq is the first seq to deliver; 0 starts after the room's
	// current last seq. A seq below the retained history starts at the
	// oldest retained event, after a KindTruncated notice.
	FromSeq uint64
	// Epoch is the incarnation FromSeq belongs to, as LastSeq returned it.
	// If the room has been deleted and created again since, delivery
	// starts in the new incarnation after a KindEpochChanged notice.
	Epoch string
	// Buffer is how many events the subscription holds for Next; default
	// 256. Past it, the client stops taking events and subscribes again
	// from where Next left off once the application has caught up, so a
	// slow reader costs neither unbounded memory nor a gap.
	Buffer int
}

// Subscription delivers a room's events, each seq exactly once and in
// order, across reconnections to any node: on a new socket the client
// subscribes again from the seq after the last one it took, and drops
// anything it already has. Notices (truncated, epoch changed, room
// deleted) arrive through Next as Events of their Kind.
type Subscription struct {
	c     *Client
	room  string
	opts  SubscribeOptions
	ready chan struct{} // closed at the first answer to subscribe, or at the end
	done  chan struct{} // closed at the end

	// mu guards everything below; offer runs under it on the read
	// goroutine, so a subscription's state changes in frame order.
	mu         sync.Mutex
	notify     chan struct{}
	readyDone  bool
	err        error  // why it ended; nil while it runs
	closed     bool   // Close was called
	wire       *conn  // the socket subscribed on, or being subscribed on
	inflight   bool   // a subscribe loop runs for wire
	awaiting   bool   // its request is sent and the answer not yet applied
	resync     bool   // subscribe again once the loop's request is answered
	positioned bool   // the first subscribe was answered
	cur        cursor // where delivery stands
	lagging    bool   // the queue overflowed: events are dropped until Next catches up
	gaps       int    // subscribes since the last accepted event, for backoff
	queue      []Event
	head       int
	posSeq     uint64
	posEpoch   string
	lastErr    error // of the last failed subscribe, for Subscribe's error
}

// Subscribe starts delivering room's events and returns once a node
// answered. It fails at once for a non-retryable refusal (ErrForbidden,
// ErrLimitExceeded, ...), retries anything else until ctx ends, and
// returns ErrSubscribed if the client already subscribes to room.
func (c *Client) Subscribe(ctx context.Context, room string, opts SubscribeOptions) (*Subscription, error) {
	if _, err := parseEpoch(opts.Epoch); err != nil {
		return nil, fmt.Errorf("herald: subscribe: %w", err)
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 256
	}
	s := &Subscription{
		c: c, room: room, opts: opts,
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
	c.subSend.Lock()
	c.mu.Lock()
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		c.subSend.Unlock()
		return nil, err
	case c.subs[room] != nil:
		c.mu.Unlock()
		c.subSend.Unlock()
		return nil, ErrSubscribed
	}
	c.subs[room] = s
	cn := c.cur
	c.mu.Unlock()
	c.subSend.Unlock()
	if cn != nil {
		s.ensure(cn)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		_ = s.Close()
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		return nil, stopError(ctx.Err(), last)
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Next returns the next event or notice, waiting for one within ctx.
// After Close it returns ErrClosed. A subscription that ends otherwise
// first hands out the events it holds, then the reason: the node's refusal
// to subscribe again (ErrForbidden, say), ErrUnsubscribed when the
// application's backend ended it, or the client's closing or fatal error.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if s.head < len(s.queue) {
			ev := s.pop()
			s.mu.Unlock()
			return ev, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return Event{}, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.done:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// LastSeq is the position of the last event or notice Next returned (or,
// before any, where the subscription started): subscribing with FromSeq
// seq+1 and Epoch epoch resumes right after it.
func (s *Subscription) LastSeq() (seq uint64, epoch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.posSeq, s.posEpoch
}

// Room is the subscription's room.
func (s *Subscription) Room() string { return s.room }

// Err is why the subscription ended, or nil while it runs.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the subscription ends.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Close ends the subscription and tells the node to stop sending it.
func (s *Subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.endLocked(ErrClosed)
	s.queue, s.head = nil, 0
	wire, awaiting := s.wire, s.awaiting
	s.mu.Unlock()
	if awaiting {
		// The node registers a subscription after reading the request,
		// in its own time: an unsubscribe sent now could overtake it.
		// The subscribe loop sends it once the subscribe is answered.
		s.c.detach(s, nil)
	} else {
		s.c.detach(s, wire)
	}
	return nil
}

// end ends the subscription with err, if it has not ended yet.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	s.endLocked(err)
	s.mu.Unlock()
}

func (s *Subscription) endLocked(err error) {
	if s.err != nil {
		return
	}
	if err == nil {
		err = ErrClosed
	}
	s.err = err
	close(s.done)
	s.signalReadyLocked()
}

func (s *Subscription) signalReadyLocked() {
	if !s.readyDone {
		s.readyDone = true
		close(s.ready)
	}
}

// detach removes s from the client and, if cn is set and no newer
// subscription took the room, unsubscribes on cn.
func (c *Client) detach(s *Subscription, cn *conn) {
	c.subSend.Lock()
	defer c.subSend.Unlock()
	c.mu.Lock()
	if c.subs[s.room] == s {
		delete(c.subs, s.room)
	}
	taken := c.subs[s.room] != nil
	c.mu.Unlock()
	if cn == nil || taken || cn.ctx.Err() != nil {
		return
	}
	// The reply is not waited for: an unknown id is ignored when it comes.
	req := protocol.Request{ID: protocol.NumericID(c.ids.Add(1)), Op: protocol.OpUnsubscribe, Room: s.room}
	if b, err := json.Marshal(&req); err == nil {
		_ = cn.write(b)
	}
}

// ensure subscribes on cn unless s already is (or is being) subscribed
// there.
func (s *Subscription) ensure(cn *conn) {
	s.mu.Lock()
	if s.err != nil || s.wire == cn {
		s.mu.Unlock()
		return
	}
	s.wire, s.inflight, s.awaiting, s.resync = cn, true, false, false
	s.mu.Unlock()
	s.start(cn, 0)
}

// start runs a subscribe loop on cn; the caller has set inflight. Once
// the client is closing no loop starts, and none is needed.
func (s *Subscription) start(cn *conn, delay time.Duration) {
	s.c.goRun(func() { s.subscribe(cn, delay) })
}

// lost forgets cn, whose socket ended.
func (s *Subscription) lost(cn *conn) {
	s.mu.Lock()
	if s.wire == cn {
		s.wire, s.inflight, s.awaiting, s.resync = nil, false, false, false
	}
	s.mu.Unlock()
}

// subscribe sends subscribe on cn, from the subscription's position, until
// the node accepts it, refuses it for good, or cn ends.
func (s *Subscription) subscribe(cn *conn, delay time.Duration) {
	for attempt := 0; ; attempt++ {
		if !wait.Sleep(cn.ctx, delay) {
			return
		}
		s.mu.Lock()
		if s.wire != cn || s.err != nil {
			s.mu.Unlock()
			return
		}
		req := protocol.Request{Op: protocol.OpSubscribe, Room: s.room}
		if s.positioned {
			from := s.cur.next
			req.FromSeq, req.Epoch = &from, optional(s.cur.epochStr)
		} else {
			if s.opts.FromSeq > 0 {
				from := s.opts.FromSeq
				req.FromSeq = &from
			}
			req.Epoch = optional(s.opts.Epoch)
		}
		s.awaiting = true
		s.mu.Unlock()

		rctx, cancel := context.WithTimeout(cn.ctx, s.c.opts.RequestTimeout)
		_, sent, err := s.c.roundTrip(rctx, cn, &req, func(f *protocol.Frame) error { return s.answered(cn, &req, f) })
		cancel()
		unanswered := err != nil && rctx.Err() != nil && cn.ctx.Err() == nil

		s.mu.Lock()
		if s.wire != cn {
			s.mu.Unlock()
			return
		}
		s.awaiting = false
		if s.closed {
			s.inflight = false
			s.mu.Unlock()
			s.c.detach(s, cn)
			return
		}
		if err == nil {
			if s.resync {
				s.resync, delay = false, 0
				s.mu.Unlock()
				continue
			}
			s.inflight = false
			s.mu.Unlock()
			return
		}
		var he *Error
		if errors.As(err, &he) && !he.Retryable {
			s.inflight = false
			s.endLocked(err)
			s.mu.Unlock()
			s.c.detach(s, nil)
			return
		}
		s.lastErr = err
		s.mu.Unlock()
		if unanswered {
			// No answer in time: subscribe again. One the node took
			// meanwhile is replaced, and its answer, if it comes, is
			// no longer awaited.
			delay = s.c.opts.Backoff.Delay(attempt)
			continue
		}
		retry, wait, _ := s.c.retryable(err, sent, attempt)
		if !retry || errors.Is(err, errConnLost) {
			return // the socket is gone; the next one subscribes again
		}
		delay = wait
	}
}

// answered applies the node's answer to req on the read goroutine, before
// the subscription's first event can arrive.
func (s *Subscription) answered(cn *conn, req *protocol.Request, f *protocol.Frame) error {
	e, err := parseEpoch(f.Epoch)
	if err != nil {
		return &Error{Code: CodeInternal, Retryable: true, Message: "subscribe reply: " + err.Error()}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wire != cn || s.err != nil {
		return nil
	}
	s.awaiting = false
	if !s.positioned {
		s.positioned = true
		if req.FromSeq == nil {
			s.cur.epoch, s.cur.epochStr, s.cur.next = e, f.Epoch, f.LastSeq+1
		} else {
			s.cur.epochStr, s.cur.next = valueOf(req.Epoch), *req.FromSeq
			s.cur.epoch, _ = parseEpoch(s.cur.epochStr)
		}
		s.posSeq, s.posEpoch = s.cur.next-1, s.cur.epochStr
		s.signalReadyLocked()
	}
	s.notices(s.cur.answered(subscribed{epoch: e, epochStr: f.Epoch, epochChanged: f.EpochChanged,
		truncated: f.Truncated, firstSeq: f.FirstSeq}))
	return nil
}

// notices queues the notices the cursor said the application is owed.
func (s *Subscription) notices(ns []notice) {
	for _, n := range ns {
		s.notice(n.kind, n.epoch, n.seq)
	}
}

// acceptEpoch reports whether a push of incarnation e (already parsed)
// belongs to what the subscription delivers, moving it to e if e is newer.
func (s *Subscription) acceptEpoch(e uint64, str string) bool {
	ok, ns := s.cur.accept(e, str)
	s.notices(ns)
	return ok
}

// offer takes a push of cn for this subscription's room, on the read
// goroutine.
func (s *Subscription) offer(cn *conn, f *protocol.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wire != cn || !s.positioned || s.err != nil {
		// Pushes before the first answer belong to a subscription of
		// this room the node had before (a closed one, not yet gone).
		return
	}
	e, err := parseEpoch(f.Epoch)
	if err != nil {
		s.c.log.Warn("herald: push with a bad epoch", "room", s.room, "err", err)
		return
	}
	switch f.Ev {
	case protocol.EvEvent:
		if !s.acceptEpoch(e, f.Epoch) || s.lagging {
			return
		}
		switch s.cur.event(f.Seq) {
		case repeat:
			return
		case gap:
			s.resubscribe(cn)
			return
		}
		if len(s.queue)-s.head >= s.opts.Buffer {
			s.lagging = true
			return
		}
		s.gaps = 0
		s.cur.next++
		s.enqueue(eventOf(&f.Event))
	case protocol.EvPresence:
		// Only in its place, right after the event it follows; never one
		// that would count against the buffer of events owed.
		if !s.acceptEpoch(e, f.Epoch) || s.lagging || f.AfterSeq != s.cur.next-1 || len(s.queue)-s.head >= s.opts.Buffer {
			return
		}
		ev := eventOf(&f.Event)
		ev.Kind, ev.Seq = KindPresence, f.AfterSeq
		s.enqueue(ev)
	case protocol.EvTruncated:
		s.notices(s.cur.truncated(e, f.Epoch, f.FirstSeq))
	case protocol.EvRoomDeleted:
		s.notices(s.cur.roomDeleted(e, f.Epoch, f.LastSeq))
	case protocol.EvUnsubscribed:
		// The application's backend ended it: subscribing again would
		// undo that. The events before the notice are still handed out.
		s.endLocked(ErrUnsubscribed)
		s.c.goRun(func() { s.c.detach(s, nil) })
	}
}

// resubscribe subscribes again on cn from next, after a gap the node
// should never leave or after the queue overflowed.
func (s *Subscription) resubscribe(cn *conn) {
	switch {
	case s.awaiting:
		// The subscribe in flight starts at or below next: it covers the
		// gap, which the subscription it replaces keeps making until the
		// answer.
		return
	case s.inflight:
		s.resync = true
		return
	}
	s.inflight = true
	var delay time.Duration
	if s.gaps > 0 {
		// A node that keeps leaving gaps must not make the client spin.
		delay = s.c.opts.Backoff.Delay(s.gaps - 1)
	}
	s.gaps++
	s.start(cn, delay)
}

func (s *Subscription) notice(k Kind, epoch string, seq uint64) {
	s.enqueue(Event{Kind: k, Room: s.room, Epoch: epoch, Seq: seq})
}

func (s *Subscription) enqueue(ev Event) {
	if s.head > 0 && s.head >= len(s.queue)/2 {
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue, s.head = s.queue[:n], 0
	}
	s.queue = append(s.queue, ev)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// pop takes the next queued event; the caller holds the lock and has
// checked there is one.
func (s *Subscription) pop() Event {
	ev := s.queue[s.head]
	s.queue[s.head] = Event{}
	s.head++
	if s.head == len(s.queue) {
		s.queue, s.head = s.queue[:0], 0
	}
	switch ev.Kind {
	case KindTruncated, KindEpochChanged:
		s.posSeq, s.posEpoch = ev.Seq-1, ev.Epoch
	default:
		s.posSeq, s.posEpoch = ev.Seq, ev.Epoch
	}
	if s.head < len(s.queue) {
		// More to take: let another waiting Next know.
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	if s.lagging && len(s.queue)-s.head <= s.opts.Buffer/2 {
		// Caught up: take events again, from where the queue stopped.
		// Without a socket, the next one subscribes from there anyway.
		s.lagging, s.gaps = false, 0
		if s.wire != nil {
			s.resubscribe(s.wire)
		}
	}
	return ev
}
