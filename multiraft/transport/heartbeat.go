//lint:file-ignore SA1019 raft still sets and reads the deprecated Leader field of heartbeats, so batched ones must carry it
package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Node-level heartbeats.
//
// hashicorp/raft gives every leader a goroutine per follower that sends a
// heartbeat every HeartbeatTimeout/10 to /5; with a thousand groups per node
// that is thousands of RPCs a second per node, each costing a write, a read
// and goroutine hand-offs on both ends. With Config.HeartbeatInterval set,
// raft's heartbeat to a peer node waits for the next tick of the Manager's
// heartbeat loop, which sends each peer one call carrying the heartbeats of
// every group waiting for it; each group's raft gets its follower's answer
// from the reply.
//
// Every answer raft sees is its follower's answer to a heartbeat sent after
// raft asked for it, exactly as without batching; only its timing changes
// (a heartbeat waits up to one interval to leave). So raft's leader lease
// and VerifyLeader keep their meaning. A group that verifies its leadership
// (BeginLeaderCheck) does not wait for the tick: its heartbeats go out at
// once, so linearizable reads are not slowed by the interval.
//
// The interval must exceed raft's longest pause between heartbeats
// (HeartbeatTimeout/5), so a waiting heartbeat is in every batch, and stay
// well below the heartbeat timeout, so followers hear from the leader
// several times per timeout: HeartbeatTimeout/4 does both.
//
// The batch travels as an ordinary node call (heartbeatService), so a peer
// that does not know it answers "unknown service" and every heartbeat in the
// batch is then sent on its own. On the follower, an entry is handed to
// raft's heartbeat handler only for a term raft already accepted through a
// heartbeat of its own (the rule of answerInline: raft persists nothing for
// it); other entries are answered "not handled" and are sent on their own,
// which lets raft persist the new term.

// heartbeatService is the node call that carries batched heartbeats.
const heartbeatService = "transport.heartbeats"

// HeartbeatStats counts raft heartbeats on a Manager, for tests and
// benchmarks.
type HeartbeatStats struct {
	// Sent is heartbeats sent to a follower as their own RPC.
	Sent uint64
	// Batched is heartbeats answered through a batch.
	Batched uint64
	// Batches is batch calls sent.
	Batches uint64
	// Ridden is empty appends answered through a batch instead of sent.
	Ridden uint64
	// Received is batched heartbeats this node's groups answered as
	// followers.
	Received uint64
}

type heartbeatCounters struct {
	sent, batched, batches, ridden, received atomic.Uint64
}

// HeartbeatStats returns the Manager's heartbeat counters.
func (m *Manager) HeartbeatStats() HeartbeatStats {
	return HeartbeatStats{
		Sent:     m.hb.sent.Load(),
		Batched:  m.hb.batched.Load(),
		Batches:  m.hb.batches.Load(),
		Ridden:   m.hb.ridden.Load(),
		Received: m.hb.received.Load(),
	}
}

func (m *Manager) batching() bool { return m.cfg.HeartbeatInterval > 0 }

// hbWaiter is a raft heartbeat waiting for the next batch to its target.
type hbWaiter struct {
	req *raft.AppendEntriesRequest
	// done receives the follower's answer, or nil when the batch could not
	// deliver one. Only the first answer counts, and a waiter that gave up
	// takes no answer (settled): so done's one slot always has room and
	// whoever answers never blocks.
	done    chan *raft.AppendEntriesResponse
	settled atomic.Bool
}

func newHBWaiter(req *raft.AppendEntriesRequest) *hbWaiter {
	return &hbWaiter{req: req, done: make(chan *raft.AppendEntriesResponse, 1)}
}

// answer hands r (nil: send it on its own) to the waiting heartbeat unless
// it has been answered or has given up; it reports whether r was taken.
func (w *hbWaiter) answer(r *raft.AppendEntriesResponse) bool {
	if !w.settled.CompareAndSwap(false, true) {
		return false
	}
	w.done <- r
	return true
}

// heartbeatWaitIntervals bounds, in heartbeat intervals, how long a
// heartbeat waits for a batch to answer it: at most one interval until the
// next tick collects it, at most two for the batch call (sendHeartbeats),
// and one to spare for a loaded machine. Nothing else is needed for the
// bound to hold, so a bug elsewhere in the batcher delays one heartbeat of
// raft's instead of stopping that follower's heartbeats, and raft's
// Shutdown, for good.
const heartbeatWaitIntervals = 4

// BeginLeaderCheck makes the group's heartbeats leave at once, not at the
// next batch, until the returned function is called; heartbeats already
// waiting for a batch leave at once too. Wrap raft's VerifyLeader in it so
// that reads do not wait for the heartbeat interval.
func (g *GroupTransport) BeginLeaderCheck() (end func()) {
	g.hbMu.Lock()
	g.checking++
	if g.checkStarted != nil {
		close(g.checkStarted)
		g.checkStarted = nil
	}
	g.hbMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.hbMu.Lock()
			g.checking--
			g.hbMu.Unlock()
		})
	}
}

// heartbeatViaBatch lets raft's heartbeat to target wait for the next
// batch. It returns false when the heartbeat must be sent on its own: a
// leader check is running or began, a newer heartbeat to target took its
// place, or the batch could not deliver an answer (the heartbeat loop
// gives up on a peer whose previous batch is still unanswered at the next
// tick). It returns an error when the group or the Manager closes, or when
// no answer came within heartbeatWaitIntervals intervals; raft then backs
// off and sends the next heartbeat.
func (g *GroupTransport) heartbeatViaBatch(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (bool, error) {
	g.hbMu.Lock()
	if g.checking > 0 {
		g.hbMu.Unlock()
		return false, nil
	}
	if g.waiters == nil {
		g.waiters = make(map[raft.ServerAddress]*hbWaiter)
	}
	if g.checkStarted == nil {
		g.checkStarted = make(chan struct{})
	}
	check := g.checkStarted
	w := newHBWaiter(args)
	old := g.waiters[target]
	g.waiters[target] = w
	g.hbMu.Unlock()
	if old != nil {
		// raft stops a follower's heartbeat loop without waiting for its
		// call to return (on losing leadership, or when the follower leaves
		// the configuration), so the loop that replaces it can get here
		// while the old call still waits. The map holds one heartbeat per
		// target: the older one goes on its own rather than wait for a
		// batch that will never carry it.
		old.answer(nil)
	}

	bound := time.NewTimer(heartbeatWaitIntervals * g.m.cfg.HeartbeatInterval)
	defer bound.Stop()
	var err error
	timedOut := false
	select {
	case r := <-w.done:
		if r == nil {
			return false, nil
		}
		*resp = *r
		return true, nil
	case <-check:
	case <-bound.C:
		timedOut = true
		err = fmt.Errorf("%w: group %d heartbeat to %s: no heartbeat batch answered it within %v",
			ErrTimeout, g.id, target, heartbeatWaitIntervals*g.m.cfg.HeartbeatInterval)
	case <-g.ctx.Done():
		err = g.errClosed()
	case <-g.m.ctx.Done():
		err = fmt.Errorf("%w: node %s is shutting down", ErrClosed, g.m.cfg.NodeID)
	}
	g.hbMu.Lock()
	if g.waiters[target] == w {
		delete(g.waiters, target)
	}
	g.hbMu.Unlock()
	if !w.settled.CompareAndSwap(false, true) {
		// An answer came just now. A leader check ignores it: it needs a
		// heartbeat that leaves after the check began.
		if r := <-w.done; r != nil && timedOut {
			*resp = *r
			return true, nil
		}
	}
	return false, err
}

// takeWaiting moves the group's waiting heartbeats and riders into out,
// per target. Those to targets whose previous batch is still unanswered are
// released instead, to be sent on their own.
func (g *GroupTransport) takeWaiting(out map[raft.ServerAddress][]batchEntry, busy map[raft.ServerAddress]*atomic.Bool) {
	var release []*rider
	g.hbMu.Lock()
	for target, w := range g.waiters {
		delete(g.waiters, target)
		if busy[target] != nil {
			w.answer(nil)
			continue
		}
		out[target] = append(out[target], batchEntry{g: g, w: w})
	}
	for target, r := range g.riders {
		delete(g.riders, target)
		if busy[target] != nil {
			release = append(release, r)
			continue
		}
		entries := out[target]
		if n := len(entries); n > 0 && entries[n-1].g == g && entries[n-1].w.req.Term == r.mark.term {
			entries[n-1].rider = r
			continue
		}
		hb := &raft.AppendEntriesRequest{RPCHeader: r.args.RPCHeader, Term: r.args.Term, Leader: r.args.Leader}
		out[target] = append(entries, batchEntry{g: g, w: newHBWaiter(hb), rider: r})
	}
	g.hbMu.Unlock()
	for _, r := range release {
		r.resolve(nil)
	}
}

// addRider lets an empty append wait for the next batch to target.
func (g *GroupTransport) addRider(target raft.ServerAddress, r *rider) {
	g.hbMu.Lock()
	if g.riders == nil {
		g.riders = make(map[raft.ServerAddress]*rider)
	}
	old := g.riders[target]
	g.riders[target] = r
	g.hbMu.Unlock()
	if old != nil {
		old.resolve(nil) // from a pipeline raft replaced: send it
	}
}

// batchEntry is one group's heartbeat in a batch, and the empty append
// riding on it, if any.
type batchEntry struct {
	g     *GroupTransport
	w     *hbWaiter
	rider *rider
}

// heartbeatLoop sends the batches every HeartbeatInterval until the
// Manager closes. At most one batch per peer is in flight; heartbeats that
// wait behind a peer that does not answer give up after two intervals and
// are sent (and fail) on their own, as they would without batching.
func (m *Manager) heartbeatLoop() {
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	inFlight := make(map[raft.ServerAddress]*atomic.Bool)
	for {
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return
		}
		for target, busy := range inFlight {
			if !busy.Load() {
				delete(inFlight, target)
			}
		}
		m.mu.RLock()
		groups := make([]*GroupTransport, 0, len(m.groups))
		for _, g := range m.groups {
			groups = append(groups, g)
		}
		m.mu.RUnlock()
		due := make(map[raft.ServerAddress][]batchEntry)
		for _, g := range groups {
			g.takeWaiting(due, inFlight)
		}
		for target, entries := range due {
			delete(due, target)
			busy := new(atomic.Bool)
			busy.Store(true)
			inFlight[target] = busy
			if !m.goFunc(func() {
				defer busy.Store(false)
				m.sendHeartbeats(target, entries)
			}) {
				// Closing: nothing will send these batches. Their heartbeats
				// would give up on their own, after the bound; release them now.
				releaseEntries(entries)
				for _, rest := range due {
					releaseEntries(rest)
				}
				return
			}
		}
	}
}

// releaseEntries lets the heartbeats and riders of a batch that will not be
// sent go on their own.
func releaseEntries(entries []batchEntry) {
	for _, e := range entries {
		e.w.answer(nil)
		if e.rider != nil {
			e.rider.resolve(nil)
		}
	}
}

// sendHeartbeats sends one batch to target and hands each group its
// follower's answer.
func (m *Manager) sendHeartbeats(target raft.ServerAddress, entries []batchEntry) {
	var resps []*raft.AppendEntriesResponse
	var ridden []bool
	defer func() {
		for i, e := range entries {
			var r *raft.AppendEntriesResponse
			if i < len(resps) {
				r = resps[i]
			}
			if e.w.answer(r) && r != nil {
				m.hb.batched.Add(1)
			}
			if e.rider != nil {
				if r != nil && r.Success && i < len(ridden) && ridden[i] {
					m.hb.ridden.Add(1)
					e.rider.resolve(r)
				} else {
					e.rider.resolve(nil)
				}
			}
		}
	}()
	// Heartbeats that differ from the first in more than their term (not
	// expected: all groups of a node send the same header) go on their own.
	tmpl := entries[0].w.req
	for i := 1; i < len(entries); i++ {
		if !sameHeartbeatSender(entries[i].w.req, tmpl) {
			releaseEntries(entries[i : i+1])
			entries = append(entries[:i], entries[i+1:]...)
			i--
		}
	}
	req := encodeHeartbeatBatch(entries)
	ctx, cancel := context.WithTimeout(m.ctx, 2*m.cfg.HeartbeatInterval)
	defer cancel()
	m.hb.batches.Add(1)
	reply, err := m.Call(ctx, target, heartbeatService, 0, req)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			m.log.Debug("transport: heartbeat batch refused", "peer", target, "err", err)
		}
		return
	}
	if resps, ridden, err = decodeHeartbeatReply(reply, len(entries)); err != nil {
		m.log.Warn("transport: bad heartbeat batch reply", "peer", target, "err", err)
	}
}

// The batch request: a version byte, the encoding of a template heartbeat
// as a byte string (appendBytes), then a uvarint count of entries. Each
// entry is a uvarint group id and uvarint term (the template with that term
// is the group's heartbeat), then a byte: 0, or 1 followed by the uvarint
// index, term and commit index of an empty append riding on the heartbeat
// (its appendMark, whose term is the heartbeat's).
//
// The reply: a version byte, a uvarint count equal to the request's, then
// per entry a status byte: heartbeatSkipped, or heartbeatHandled followed by
// raft's AppendEntriesResponse as a byte string and a byte that is 1 when
// the riding append was answered.
const (
	heartbeatBatchVersion = 1
	heartbeatHandled      = 1
	heartbeatSkipped      = 2

	// maxHeartbeatBatch bounds the entries of one batch a follower accepts.
	maxHeartbeatBatch = 1 << 16
)

func encodeHeartbeatBatch(entries []batchEntry) []byte {
	tmpl := entries[0].w.req
	body := appendAppendEntriesRequest(nil, tmpl)
	b := make([]byte, 0, 16+len(body)+len(entries)*12)
	b = append(b, heartbeatBatchVersion)
	b = appendBytes(b, body)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, e.g.id)
		b = binary.AppendUvarint(b, e.w.req.Term)
		if e.rider == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, e.rider.mark.prev)
		b = binary.AppendUvarint(b, e.rider.mark.prevTerm)
		b = binary.AppendUvarint(b, e.rider.mark.commit)
	}
	return b
}

func sameHeartbeatSender(a, b *raft.AppendEntriesRequest) bool {
	return a.ProtocolVersion == b.ProtocolVersion && string(a.ID) == string(b.ID) &&
		string(a.Addr) == string(b.Addr) && string(a.Leader) == string(b.Leader)
}

// serveHeartbeats is the follower side of a batch: each entry goes to its
// group's raft heartbeat handler if raft already accepted that term.
func (m *Manager) serveHeartbeats(_ context.Context, from string, _ uint64, req []byte) ([]byte, error) {
	d := decoder{b: req}
	if v := d.byte(); d.err == nil && v != heartbeatBatchVersion {
		return nil, fmt.Errorf("transport: heartbeat batch version %d not supported (want %d)", v, heartbeatBatchVersion)
	}
	tmplBytes := d.bytes()
	n := d.uvarint()
	if d.err == nil && n > maxHeartbeatBatch {
		return nil, fmt.Errorf("transport: heartbeat batch of %d entries exceeds %d", n, maxHeartbeatBatch)
	}
	if d.err != nil {
		return nil, fmt.Errorf("transport: malformed heartbeat batch from %s: %w", from, d.err)
	}
	tmpl, err := decodeAppendEntriesRequest(tmplBytes)
	if err != nil {
		return nil, fmt.Errorf("transport: heartbeat batch from %s: %w", from, err)
	}
	if !isHeartbeat(tmpl) {
		return nil, fmt.Errorf("transport: heartbeat batch from %s carries a request that is not a heartbeat", from)
	}
	out := make([]byte, 0, 2+int(n)*24)
	out = append(out, heartbeatBatchVersion)
	out = binary.AppendUvarint(out, n)
	for range n {
		gid, term := d.uvarint(), d.uvarint()
		var mark appendMark
		riding := false
		switch d.byte() {
		case 0:
		case 1:
			riding = true
			mark = appendMark{term: term, prev: d.uvarint(), prevTerm: d.uvarint(), commit: d.uvarint()}
		default:
			d.fail()
		}
		if d.err != nil {
			return nil, fmt.Errorf("transport: malformed heartbeat batch from %s: %w", from, d.err)
		}
		hb := *tmpl
		hb.Term = term
		g, resp, ok := m.heartbeatFromPeer(gid, &hb)
		if !ok {
			out = append(out, heartbeatSkipped)
			continue
		}
		m.hb.received.Add(1)
		out = append(out, heartbeatHandled)
		out = appendBytes(out, appendAppendEntriesResponse(nil, resp))
		// raft accepted the leader's term just now; the riding append is
		// answered if raft already accepted exactly that append through
		// this transport (so it would change nothing and answer the same).
		out = appendBool(out, riding && resp.Success && g.appendMatches(mark))
	}
	if err := d.finish("heartbeat batch"); err != nil {
		return nil, err
	}
	return out, nil
}

// heartbeatFromPeer hands one batched heartbeat to group gid's raft, if
// the group is here, raft registered its heartbeat handler, and the term is
// one raft accepted before (so raft persists nothing for it).
func (m *Manager) heartbeatFromPeer(gid uint64, req *raft.AppendEntriesRequest) (*GroupTransport, *raft.AppendEntriesResponse, bool) {
	g := m.group(gid)
	if g == nil {
		return nil, nil, false
	}
	fn := g.heartbeat.Load()
	if fn == nil || req.Term == 0 || req.Term != g.hbTerm.Load() {
		return nil, nil, false
	}
	respCh := make(chan raft.RPCResponse, 1)
	(*fn)(raft.RPC{Command: req, RespChan: respCh})
	select {
	case r := <-respCh:
		resp, ok := r.Response.(*raft.AppendEntriesResponse)
		if r.Error != nil || !ok {
			return nil, nil, false
		}
		g.noteHeartbeat(req, resp)
		return g, resp, true
	default:
		return nil, nil, false // raft is shut down
	}
}

// decodeHeartbeatReply returns each entry's raft answer (nil when
// skipped) and whether its riding append was answered.
func decodeHeartbeatReply(p []byte, want int) ([]*raft.AppendEntriesResponse, []bool, error) {
	d := decoder{b: p}
	if v := d.byte(); d.err == nil && v != heartbeatBatchVersion {
		return nil, nil, fmt.Errorf("heartbeat reply version %d, want %d", v, heartbeatBatchVersion)
	}
	n := d.uvarint()
	if d.err == nil && n != uint64(want) {
		return nil, nil, fmt.Errorf("heartbeat reply has %d entries for %d heartbeats", n, want)
	}
	out := make([]*raft.AppendEntriesResponse, want)
	ridden := make([]bool, want)
	for i := 0; i < want && d.err == nil; i++ {
		switch st := d.byte(); {
		case d.err != nil:
		case st == heartbeatSkipped:
		case st == heartbeatHandled:
			var r raft.AppendEntriesResponse
			if err := decodeAppendEntriesResponse(d.bytes(), &r); err != nil {
				return nil, nil, err
			}
			out[i] = &r
			ridden[i] = d.bool()
		default:
			return nil, nil, fmt.Errorf("heartbeat reply entry %d has status %d", i, st)
		}
	}
	if err := d.finish("heartbeat reply"); err != nil {
		return nil, nil, err
	}
	return out, ridden, nil
}

// Empty appends riding on heartbeats.
//
// hashicorp/raft's leader also sends each follower an empty append every
// CommitTimeout so that followers learn the commit index when writes stop.
// Once a follower has acknowledged an append with the current commit index,
// every later empty append repeats exactly the same request (same term,
// previous entry and commit index) until something changes, and costs a
// round trip through both nodes' raft loops. Such an append, sent when
// nothing else is in flight on its pipeline, becomes a rider: it waits for
// the group's next batched heartbeat to the follower and is answered there,
// on the follower, when raft has just accepted the heartbeat's term and the
// follower's transport relayed exactly that append to raft and its success
// back (appendMatches). Raft's follower state cannot have moved since
// without a new term, which the heartbeat would have refused. Otherwise,
// and as soon as the pipeline sends another append, the rider is sent as
// the ordinary append it is; the follower sees appends in pipeline order
// either way.

// appendMark identifies what an append asks of a follower: the leader's
// term, the index and term of the last entry the follower must hold after
// it, and the leader's commit index.
type appendMark struct {
	term, prev, prevTerm, commit uint64
}

func markOf(a *raft.AppendEntriesRequest) appendMark {
	m := appendMark{term: a.Term, prev: a.PrevLogEntry, prevTerm: a.PrevLogTerm, commit: a.LeaderCommitIndex}
	if n := len(a.Entries); n > 0 && a.Entries[n-1] != nil {
		m.prev, m.prevTerm = a.Entries[n-1].Index, a.Entries[n-1].Term
	}
	return m
}

// noteAppend records, on a follower, the outcome of a raft RPC relayed
// through the group's queue: an append raft accepted becomes the mark
// riders are checked against; anything else forgets it.
func (g *GroupTransport) noteAppend(in *inboundRPC, resp any, err error) {
	req, ok := in.cmd.(*raft.AppendEntriesRequest)
	if !ok || in.heartbeat {
		if !ok {
			g.forgetAppend()
		}
		return
	}
	r, ok := resp.(*raft.AppendEntriesResponse)
	if err != nil || !ok || !r.Success || r.Term != req.Term {
		g.forgetAppend()
		return
	}
	g.appendMu.Lock()
	g.lastAppend, g.hasAppend = markOf(req), true
	g.appendMu.Unlock()
}

func (g *GroupTransport) forgetAppend() {
	g.appendMu.Lock()
	g.hasAppend = false
	g.appendMu.Unlock()
}

func (g *GroupTransport) appendMatches(m appendMark) bool {
	g.appendMu.Lock()
	defer g.appendMu.Unlock()
	return g.hasAppend && g.lastAppend == m
}

// rider is an empty append waiting for a batched heartbeat. state moves
// once from 0 to 1, by whoever answers or sends it.
type rider struct {
	p     *pipeline
	f     *appendFuture
	args  *raft.AppendEntriesRequest
	mark  appendMark
	frame []byte
	state atomic.Int32
}

// resolve answers the rider with resp (the follower's answer to the
// heartbeat it rode on), or sends it as an ordinary append when resp is
// nil.
func (r *rider) resolve(resp *raft.AppendEntriesResponse) {
	p := r.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rider == r {
		p.rider = nil
	}
	if !r.state.CompareAndSwap(0, 1) || p.closed {
		return
	}
	if resp == nil {
		_ = p.c.send(r.frame)
		return
	}
	p.c.removePending(r.f.id)
	payload := appendAppendEntriesResponse([]byte{statusOK}, resp)
	r.f.u.deliver(frame{typ: ftRaftResp, group: p.g.id, id: r.f.id, payload: payload})
}
