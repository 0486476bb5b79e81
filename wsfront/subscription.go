package wsfront

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wait"
)

// maxCatchUpBuffer bounds the live events a subscription holds while it
// reads history; past it they are dropped and read from history instead.
const maxCatchUpBuffer = 4096

// subscription delivers one room's events to one socket, in seq order and
// exactly once. Its position (epoch, next) is the whole truth about what the
// socket has received: events below next are never sent again, and an event
// above next is held back until history fills the gap.
type subscription struct {
	sess *session
	room string
	// hubIndex is its place in its room's list in the hub (under the
	// group feed's lock).
	hubIndex int

	mu      sync.Mutex
	epoch   uint64 // the incarnation being delivered (0: none yet)
	deleted bool   // epoch ended; its room_deleted was pushed
	next    uint64 // seq of the next event the socket is owed
	// catching is set while a goroutine reads history for this
	// subscription; live events then wait in buf, in arrival order.
	catching bool
	buf      []*hubEvent
	overflow bool
	closed   bool
}

func newSubscription(sess *session, room string) *subscription {
	return &subscription{sess: sess, room: room, catching: true}
}

func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.buf = nil
	s.mu.Unlock()
}

// offer hands the subscription live events from its group's feed, in
// order; the events and their frames are shared with every other
// subscription. What it sends goes through sink, reused from one
// subscription to the next.
func (s *subscription) offer(evs []*hubEvent, sink *eventSink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	sink.sess = s.sess
	for _, ev := range evs {
		if s.catching {
			if len(s.buf) < maxCatchUpBuffer {
				s.buf = append(s.buf, ev)
			} else {
				s.overflow = true
			}
			continue
		}
		if !s.deliverLocked(ev, sink) {
			sink.flush()
			s.startCatchUpLocked()
			s.buf = append(s.buf, ev)
		}
	}
	sink.flush()
}

// eventSink gathers the frames one subscription sends while it holds its
// lock, so that they reach its socket's outbox at once.
type eventSink struct {
	sess   *session
	frames []outFrame
	events int // how many of frames are events
}

func (k *eventSink) event(wire []byte) {
	k.frames = append(k.frames, outFrame{b: wire, wire: true})
	k.events++
}

func (k *eventSink) push(frame []byte) { k.frames = append(k.frames, outFrame{b: frame}) }

func (k *eventSink) flush() {
	if len(k.frames) == 0 {
		return
	}
	if k.sess.queue(k.frames...) && k.events > 0 {
		k.sess.srv.obs.EventsDelivered(k.events)
	}
	clear(k.frames)
	k.frames, k.events = k.frames[:0], 0
}

// tail tells the subscription where its room stands after the feed
// reopened; if events were missed it catches up.
func (s *subscription) tail(epoch, lastSeq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.catching {
		return
	}
	if epoch != s.epoch || (!s.deleted && lastSeq >= s.next) {
		s.startCatchUpLocked()
	}
}

// recheck makes the subscription read history from its position, for when
// the room's state could not be learnt.
func (s *subscription) recheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && !s.catching {
		s.startCatchUpLocked()
	}
}

// deliverLocked sends ev if it is the next event owed. It returns false on
// a gap: events between next and ev must come from history first.
func (s *subscription) deliverLocked(ev *hubEvent, sink *eventSink) bool {
	if ev.Type == fsm.EventRoomDeleted {
		if ev.Epoch == s.epoch && s.epoch != 0 && !s.deleted {
			s.pushDeletedLocked(sink)
		}
		return true
	}
	if ev.Epoch != s.epoch || s.deleted {
		if ev.Epoch <= s.epoch {
			return true // an ended incarnation's straggler
		}
		if s.epoch != 0 && !s.deleted {
			s.pushDeletedLocked(sink)
		}
		s.epoch, s.deleted, s.next = ev.Epoch, false, 1
	}
	if isPresence(ev.Type) {
		// It takes no seq and is not in history: it goes out only in its
		// place, right after the event it follows; a subscription that is
		// not there (catching up, resuming) never sees it.
		if ev.Seq == s.next-1 {
			sink.event(ev.wire)
		}
		return true
	}
	switch {
	case ev.Seq < s.next:
		return true
	case ev.Seq > s.next:
		return false
	}
	sink.event(ev.wire)
	s.next++
	return true
}

// pushDeletedLocked pushes room_deleted through sink when it is given (in
// order with the events sink holds), else at once.
func (s *subscription) pushDeletedLocked(sink *eventSink) {
	frame := newPush("room_deleted").str("room", s.room).epoch(s.epoch).uint("last_seq", s.next-1).done()
	if sink != nil {
		sink.push(frame)
	} else {
		s.sess.send(frame)
	}
	s.deleted = true
}

func (s *subscription) startCatchUpLocked() {
	s.catching = true
	s.overflow = false
	clear(s.buf)
	s.buf = s.buf[:0]
	s.sess.goOwned(0, s.catchUp)
}

// catchUp reads history from the subscription's position until it has
// delivered everything committed, then drains the live events that arrived
// meanwhile and hands delivery back to the feed.
//
// Each page waits for room in the socket's and the node's read budgets
// before it is read, so many subscriptions resuming at once read a few
// pages at a time rather than all of theirs together.
func (s *subscription) catchUp(ctx context.Context) {
	backoff := feedRetryMin
	pageBytes := s.sess.srv.cfg.Limits.pageBytes()
	for {
		g, ok := s.sess.waitRead(ctx, pageBytes)
		if !ok {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			g.release()
			return
		}
		from := s.next
		s.mu.Unlock()
		page, err := s.readHistory(ctx, from, pageBytes)
		if err != nil {
			g.release()
			if !wait.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, feedRetryMax)
			continue
		}
		backoff = feedRetryMin
		live := s.applyPage(&page, g)
		g.release()
		if live {
			return
		}
		if !s.sess.waitDrained(ctx) {
			return
		}
	}
}

func (s *subscription) readHistory(ctx context.Context, from uint64, maxBytes int) (fsm.History, error) {
	ctx, cancel := context.WithTimeout(ctx, s.sess.srv.cfg.Limits.RequestTimeout)
	defer cancel()
	page, err := s.sess.srv.be.History(ctx, s.room, max(from, 1), maxHistoryLimit, maxBytes, false)
	if errors.Is(err, fsm.ErrRoomNotFound) {
		return fsm.History{}, nil
	}
	return page, err
}

// applyPage delivers a page of history read at the subscription's position
// and reports whether the subscription is now live. The page's events are
// sent through g, the budget the page was read with (nil: none was taken).
func (s *subscription) applyPage(page *fsm.History, g *readGrant) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true
	}
	switch {
	case page.Epoch == 0:
		// The room is gone (or never was): nothing to read; what comes
		// next is a new incarnation, delivered live from seq 1.
		if s.epoch != 0 && !s.deleted {
			s.pushDeletedLocked(nil)
		}
	case page.Epoch != s.epoch || s.deleted:
		if page.Epoch < s.epoch {
			return false // a read that raced a newer incarnation: read again
		}
		if s.epoch != 0 && !s.deleted {
			s.pushDeletedLocked(nil)
		}
		s.epoch, s.deleted, s.next = page.Epoch, false, 1
		return false
	default:
		if page.FirstSeq > s.next && page.FirstSeq <= page.LastSeq+1 && s.next <= page.LastSeq {
			s.sess.send(newPush("truncated").str("room", s.room).epoch(s.epoch).uint("first_seq", page.FirstSeq).done())
			s.next = page.FirstSeq
		}
		for i := range page.Events {
			if s.sess.backlogged() {
				return false // history waits for the socket; live events would not
			}
			if ev := &page.Events[i]; ev.Seq == s.next {
				if g != nil {
					if g.send(eventFrame(ev)) {
						s.sess.srv.obs.EventsDelivered(1)
					}
				} else {
					s.sess.sendEvent(eventWire(ev))
				}
				s.next++
			}
		}
		if s.next <= page.LastSeq {
			return false
		}
	}
	if s.overflow {
		s.overflow = false
		clear(s.buf)
		s.buf = s.buf[:0]
		return false
	}
	// Each event is queued before the next backlogged check, which
	// paces the drain by the socket.
	sink := eventSink{sess: s.sess}
	for i := range s.buf {
		if s.sess.backlogged() || !s.deliverLocked(s.buf[i], &sink) {
			sink.flush()
			n := copy(s.buf, s.buf[i:])
			clear(s.buf[n:])
			s.buf = s.buf[:n]
			return false
		}
		sink.flush()
	}
	s.buf = nil
	s.catching = false
	return true
}

// recheckRooms runs after a group's feed reopened: for every room with
// subscribers it learns the room's last seq once and lets each subscription
// decide whether it missed events.
func (h *hub) recheckRooms(ctx context.Context, gf *groupFeed, timeout time.Duration) {
	gf.mu.Lock()
	rooms := make([]string, 0, len(gf.rooms))
	for room := range gf.rooms {
		rooms = append(rooms, room)
	}
	gf.mu.Unlock()
	for _, room := range rooms {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		info, err := h.be.Room(rctx, room)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, fsm.ErrRoomNotFound) {
			info, err = fsm.RoomInfo{}, nil
		}
		gf.mu.Lock()
		var subs roomSubs
		if p := gf.rooms[room]; p != nil {
			subs = *p
		}
		for _, sub := range subs {
			if err != nil {
				sub.recheck()
			} else {
				sub.tail(info.Epoch, info.LastSeq)
			}
		}
		gf.mu.Unlock()
	}
}
