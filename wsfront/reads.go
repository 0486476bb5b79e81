package wsfront

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
)

// history answers a history request. The page's bytes are taken from the
// socket's and the node's budgets before it is read, and held until its
// reply is written, so a client asking for more than it reads is refused
// (rate_limited) instead of the node building replies without bound.
func (sess *session) history(ctx context.Context, req *request) {
	stale, perr := consistencyOf(req)
	if perr != nil {
		sess.answer(req, nil, perr)
		return
	}
	limit := 100
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > maxHistoryLimit {
			sess.answer(req, nil, badRequest("limit must be 1..%d", maxHistoryLimit))
			return
		}
		limit = *req.Limit
	}
	var from uint64
	if req.FromSeq != nil {
		from = *req.FromSeq
	}
	pageBytes := sess.srv.cfg.Limits.pageBytes()
	g, perr := sess.tryRead(pageBytes)
	if perr != nil {
		sess.answer(req, nil, perr)
		return
	}
	defer g.release()
	var page fsm.History
	perr = rooms.Read(ctx, func(ctx context.Context) (err error) {
		page, err = sess.srv.be.History(ctx, req.Room, from, limit, pageBytes, stale)
		return err
	})
	if perr != nil {
		sess.answer(req, nil, perr)
		return
	}
	w := newReply(req.ID, true)
	w.key("events")
	w.b = append(w.b, '[')
	for i := range page.Events {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = appendEvent(w.b, &page.Events[i])
	}
	w.b = append(w.b, ']')
	w.uint("first_seq", page.FirstSeq).uint("last_seq", page.LastSeq).epoch(page.Epoch)
	if page.More() {
		w.bool("more", true)
	}
	if page.Truncated {
		w.bool("truncated", true)
	}
	if stale {
		w.bool("stale", true)
	}
	sess.srv.obs.Op(protocol.OpHistory, "ok", time.Since(req.received))
	g.send(w.done())
}

func (sess *session) members(ctx context.Context, req *request) ([]byte, *protocol.Error) {
	stale, perr := consistencyOf(req)
	if perr != nil {
		return nil, perr
	}
	var ms fsm.Members
	perr = rooms.Read(ctx, func(ctx context.Context) (err error) {
		ms, err = sess.srv.be.Members(ctx, req.Room, stale)
		return err
	})
	if perr != nil {
		return nil, perr
	}
	w := newReply(req.ID, true)
	w.key("members")
	w.b = append(w.b, '[')
	for i, m := range ms.Members {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"member":`...)
		w.b = appendString(w.b, m.Name)
		w.b = append(w.b, `,"meta":`...)
		w.b = appendRawJSON(w.b, m.Meta)
		w.b = append(w.b, `,"joined_seq":`...)
		w.b = strconv.AppendUint(w.b, m.JoinedSeq, 10)
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ']')
	w.uint("seq", ms.Seq).epoch(ms.Epoch)
	if stale {
		w.bool("stale", true)
	}
	return w.done(), nil
}

// registerSubscription makes the socket's subscription to a room (replacing
// an earlier one) and registers it with the room's feed; nil without an
// error means the socket is closing.
func (sess *session) registerSubscription(req *request) (*subscription, uint64, *protocol.Error) {
	lim := sess.srv.cfg.Limits
	var wantEpoch uint64
	if req.Epoch != nil {
		e, err := parseEpoch(*req.Epoch)
		if err != nil {
			return nil, 0, badRequest("%v", err)
		}
		wantEpoch = e
	}
	sub := newSubscription(sess, req.Room)
	sess.mu.Lock()
	if sess.ended {
		sess.mu.Unlock()
		return nil, 0, nil
	}
	old := sess.subs.get(req.Room)
	if old == nil && sess.roomsInUseLocked() >= lim.MaxRooms {
		sess.mu.Unlock()
		return nil, 0, limitExceeded(lim.MaxRooms)
	}
	sess.subs.put(sub)
	sess.mu.Unlock()
	if old != nil {
		old.close()
		sess.srv.hub.remove(old)
	}
	sess.srv.hub.add(sub)
	return sub, wantEpoch, nil
}

// subscribe positions a registered subscription. It was registered before
// this reads where the room stands, so every event committed after that
// read reaches it live and everything before comes from history: no gap.
//
// Its first page of history is read only if the budgets have room for it
// at once; otherwise the subscription learns where the room stands and
// catches up, paced, once they do: a subscribe is never refused for them.
func (sess *session) subscribe(ctx context.Context, req *request, sub *subscription, wantEpoch uint64) {
	var g *readGrant
	pageBytes := sess.srv.cfg.Limits.pageBytes()
	if req.FromSeq != nil {
		g, _ = sess.tryRead(pageBytes)
	}
	defer g.release()
	var page fsm.History
	perr := rooms.Read(ctx, func(ctx context.Context) error {
		var err error
		if g != nil {
			page, err = sess.srv.be.History(ctx, req.Room, max(*req.FromSeq, 1), maxHistoryLimit, pageBytes, false)
		} else {
			var info fsm.RoomInfo
			info, err = sess.srv.be.Room(ctx, req.Room)
			page = fsm.History{Epoch: info.Epoch, FirstSeq: info.FirstSeq, LastSeq: info.LastSeq}
		}
		if errors.Is(err, fsm.ErrRoomNotFound) {
			page, err = fsm.History{FirstSeq: 1}, nil
		}
		return err
	})
	if perr != nil {
		sess.dropSubscription(sub)
		sess.answer(req, nil, perr)
		return
	}

	sub.mu.Lock()
	w := newReply(req.ID, true).epoch(page.Epoch).uint("last_seq", page.LastSeq)
	sub.epoch = page.Epoch
	deliverPage := false
	switch {
	case wantEpoch != 0 && wantEpoch != page.Epoch:
		// The incarnation the client knew is gone: start over in the
		// current one, from its first retained event.
		sub.next = 1
		w.bool("epoch_changed", true).uint("first_seq", page.FirstSeq)
		if page.FirstSeq > 1 && page.FirstSeq <= page.LastSeq+1 {
			sub.next = page.FirstSeq
			w.bool("truncated", true)
		}
	case req.FromSeq != nil:
		sub.next = max(*req.FromSeq, 1)
		if page.Epoch != 0 && sub.next < page.FirstSeq && page.FirstSeq <= page.LastSeq+1 && sub.next <= page.LastSeq {
			sub.next = page.FirstSeq
			w.bool("truncated", true).uint("first_seq", page.FirstSeq)
		}
		deliverPage = true
	default:
		sub.next = page.LastSeq + 1
	}
	sess.answer(req, w.done(), nil)
	sub.mu.Unlock()
	if !deliverPage {
		page.Events = nil
	}
	live := sub.applyPage(&page, g)
	g.release()
	if live {
		return
	}
	// The catch-up outlives the request's timeout, so it runs on its own;
	// it holds the request's in-flight slot, as the request did.
	sess.inflight.Add(1)
	sess.goOwned(0, func(ctx context.Context) {
		defer sess.inflight.Add(-1)
		if sess.waitDrained(ctx) {
			sub.catchUp(ctx)
		}
	})
}

func (sess *session) dropSubscription(sub *subscription) {
	sess.mu.Lock()
	sess.subs.remove(sub)
	sess.mu.Unlock()
	sub.close()
	sess.srv.hub.remove(sub)
}

func (sess *session) unsubscribe(req *request) []byte {
	sess.mu.Lock()
	sub := sess.subs.get(req.Room)
	sess.mu.Unlock()
	if sub != nil {
		sess.dropSubscription(sub)
	}
	return newReply(req.ID, true).done()
}
