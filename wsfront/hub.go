package wsfront

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/rooms"
)

// hub owns the node's group feeds: one per raft group that has a subscriber
// on this node, started with the group's first subscription and stopped
// with its last.
type hub struct {
	be      Backend
	log     *slog.Logger
	ctx     context.Context
	timeout time.Duration // of one read
	wg      sync.WaitGroup

	mu     sync.Mutex
	groups map[uint64]*groupFeed
}

func newHub(ctx context.Context, be Backend, log *slog.Logger, timeout time.Duration) *hub {
	return &hub{be: be, log: log, ctx: ctx, timeout: timeout, groups: make(map[uint64]*groupFeed)}
}

// hubEvent is a committed event as the hub hands it to subscriptions:
// received once per node, its frame built once, shared by every
// subscription of its room and never changed, so that neither the event
// nor its frame is copied per subscriber.
type hubEvent struct {
	fsm.Event
	wire []byte // the event's websocket frame; nil for room deletions
}

func newHubEvent(ev fsm.Event) *hubEvent {
	he := &hubEvent{Event: ev}
	if ev.Type != fsm.EventRoomDeleted {
		he.wire = eventWire(&he.Event)
	}
	return he
}

// roomSubs lists a room's subscriptions on this node; each knows its index.
type roomSubs []*subscription

// groupFeed pumps one group's committed events to the subscriptions of its
// rooms on this node.
type groupFeed struct {
	group  uint64
	cancel context.CancelFunc

	mu    sync.Mutex
	rooms map[string]*roomSubs
}

// add registers sub so that it receives its room's events from now on.
func (h *hub) add(sub *subscription) {
	g := h.be.Group(sub.room)
	h.mu.Lock()
	defer h.mu.Unlock()
	gf := h.groups[g]
	if gf == nil {
		ctx, cancel := context.WithCancel(h.ctx)
		gf = &groupFeed{group: g, cancel: cancel, rooms: make(map[string]*roomSubs)}
		h.groups[g] = gf
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.run(ctx, gf)
		}()
	}
	gf.mu.Lock()
	subs := gf.rooms[sub.room]
	if subs == nil {
		subs = new(roomSubs)
		gf.rooms[sub.room] = subs
	}
	sub.hubIndex = len(*subs)
	*subs = append(*subs, sub)
	gf.mu.Unlock()
}

// remove unregisters sub; the group's feed stops with its last subscription.
func (h *hub) remove(sub *subscription) {
	g := h.be.Group(sub.room)
	h.mu.Lock()
	defer h.mu.Unlock()
	gf := h.groups[g]
	if gf == nil {
		return
	}
	gf.mu.Lock()
	if subs := gf.rooms[sub.room]; subs != nil {
		if i := sub.hubIndex; i < len(*subs) && (*subs)[i] == sub {
			last := len(*subs) - 1
			(*subs)[i] = (*subs)[last]
			(*subs)[i].hubIndex = i
			(*subs)[last] = nil
			*subs = (*subs)[:last]
		}
		if len(*subs) == 0 {
			delete(gf.rooms, sub.room)
		}
	}
	empty := len(gf.rooms) == 0
	gf.mu.Unlock()
	if empty {
		gf.cancel()
		delete(h.groups, g)
	}
}

// wait returns once every feed has stopped (after the hub's context ended).
func (h *hub) wait() { h.wg.Wait() }

const (
	feedRetryMin = 50 * time.Millisecond
	feedRetryMax = time.Second
)

// run keeps a stream of the group's events open until ctx ends, reopening it
// whenever it ends (the leader moved, the node lagged, a peer failed).
func (h *hub) run(ctx context.Context, gf *groupFeed) {
	backoff := feedRetryMin
	for ctx.Err() == nil {
		stream, err := h.be.GroupEvents(ctx, gf.group)
		if err != nil {
			h.log.Debug("group event stream did not open", "group", gf.group, "err", err)
			if !wait.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, feedRetryMax)
			continue
		}
		backoff = feedRetryMin
		// Events may have committed while no stream was open: every
		// subscription checks its room's last seq against what it
		// delivered, now that the new stream will carry what follows.
		// A recheck cut short by the stream's end is redone in full
		// when the next stream opens.
		sctx, stopRecheck := context.WithCancel(ctx)
		rechecked := make(chan struct{})
		go func() {
			defer close(rechecked)
			h.recheckRooms(sctx, gf, h.timeout)
		}()
		h.pump(ctx, gf, stream)
		stream.Close()
		stopRecheck()
		<-rechecked
	}
}

// maxFeedBatch bounds the events a feed hands on at once, and the events
// its reader holds ahead of it (a feed's buffer is this many fsm.Events).
const maxFeedBatch = 64

// pump hands the stream's events to the subscriptions, a batch at a time:
// every event that arrived while the previous batch was being handed on
// (a raft batch commits many) goes to each socket at once, so that it
// costs the socket one wake of its writer and one write.
func (h *hub) pump(ctx context.Context, gf *groupFeed, stream rooms.Feed) {
	stop := context.AfterFunc(ctx, stream.Close)
	defer stop()
	// The reader ends when the stream does (ctx's end closes it), and
	// then closes evs, which ends the loop below.
	evs := make(chan fsm.Event, maxFeedBatch)
	go func() {
		defer close(evs)
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil {
					h.log.Debug("group event stream ended", "group", gf.group, "err", err)
				}
				return
			}
			select {
			case evs <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	var batch []fsm.Event
	var rooms roomBatches
	for {
		ev, ok := <-evs
		if !ok {
			return
		}
		batch = append(batch[:0], ev)
	more:
		for len(batch) < maxFeedBatch {
			select {
			case ev, ok := <-evs:
				if !ok {
					break more
				}
				batch = append(batch, ev)
			default:
				break more
			}
		}
		gf.mu.Lock()
		rooms.group(batch, gf.rooms)
		for _, rb := range rooms.list {
			offerAll(*gf.rooms[rb.room], rb.evs)
		}
		gf.mu.Unlock()
		rooms.reset()
	}
}

// roomBatches splits a batch of a group's events by room, in order, keeping
// only rooms with subscribers here; each event becomes a hubEvent.
type roomBatches struct {
	list []roomBatch
	idx  map[string]int // room -> its place in list
}

type roomBatch struct {
	room string
	evs  []*hubEvent
}

func (rb *roomBatches) group(batch []fsm.Event, rooms map[string]*roomSubs) {
	if rb.idx == nil {
		rb.idx = make(map[string]int)
	}
	for i := range batch {
		ev := &batch[i]
		if rooms[ev.Room] == nil {
			continue
		}
		j, ok := rb.idx[ev.Room]
		if !ok {
			j = len(rb.list)
			rb.idx[ev.Room] = j
			rb.list = append(rb.list, roomBatch{room: ev.Room})
		}
		rb.list[j].evs = append(rb.list[j].evs, newHubEvent(*ev))
	}
}

func (rb *roomBatches) reset() {
	clear(rb.list)
	rb.list = rb.list[:0]
	clear(rb.idx)
}

// offerAll hands evs to every subscription of a room. It only queues
// shared frames, a fraction of a microsecond per subscription; the writes,
// which are most of a fan-out's work, run in the sockets' own writers on
// every core. (Sharing the walk itself among goroutines made delivery 3 to
// 6 times slower on a loaded 2-core machine: each event waited for every
// helper to be scheduled. docs/benchmarks.md#fan-out-encode-once-write-once.)
func offerAll(subs []*subscription, evs []*hubEvent) {
	var sink eventSink
	for _, sub := range subs {
		sub.offer(evs, &sink)
	}
}
