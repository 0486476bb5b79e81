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

// groupFeed pumps one group's committed events to the subscriptions of its
// rooms on this node.
type groupFeed struct {
	group  uint64
	cancel context.CancelFunc

	mu    sync.Mutex
	rooms map[string]map[*subscription]struct{}
}

// add registers sub so that it receives its room's events from now on.
func (h *hub) add(sub *subscription) {
	g := h.be.Group(sub.room)
	h.mu.Lock()
	defer h.mu.Unlock()
	gf := h.groups[g]
	if gf == nil {
		ctx, cancel := context.WithCancel(h.ctx)
		gf = &groupFeed{group: g, cancel: cancel, rooms: make(map[string]map[*subscription]struct{})}
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
		subs = make(map[*subscription]struct{})
		gf.rooms[sub.room] = subs
	}
	subs[sub] = struct{}{}
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
		delete(subs, sub)
		if len(subs) == 0 {
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

func (h *hub) pump(ctx context.Context, gf *groupFeed, stream rooms.Feed) {
	stop := context.AfterFunc(ctx, stream.Close)
	defer stop()
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				h.log.Debug("group event stream ended", "group", gf.group, "err", err)
			}
			return
		}
		var frame []byte // encoded once for all of the room's sockets
		gf.mu.Lock()
		for sub := range gf.rooms[ev.Room] {
			if frame == nil && ev.Type != fsm.EventRoomDeleted {
				frame = eventFrame(&ev)
			}
			sub.offer(&ev, frame)
		}
		gf.mu.Unlock()
	}
}
