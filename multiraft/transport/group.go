package transport

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// groupQueueLen bounds a group's queued inbound raft RPCs. raft has only
	// a handful of RPCs outstanding per peer, so a full queue means the
	// group is stuck; further RPCs get an error reply and raft retries.
	groupQueueLen = 64

	// heartbeatQueueLen bounds queued heartbeats for the fast path.
	heartbeatQueueLen = 16
)

var (
	_ raft.Transport   = (*GroupTransport)(nil)
	_ raft.WithPreVote = (*GroupTransport)(nil)
	_ raft.WithClose   = (*GroupTransport)(nil)
)

// GroupTransport is the raft.Transport of one group on a Manager. Server
// addresses are node peer addresses (the same for all groups of a node);
// the group id travels implicitly with every message. It also implements
// raft.WithPreVote and raft.WithClose.
type GroupTransport struct {
	// m, id, the channels and ctx are set at construction, read-only
	// after; heartbeat and hbTerm are atomic.
	m  *Manager
	id uint64

	consumeCh chan raft.RPC
	heartbeat atomic.Pointer[func(raft.RPC)]
	// hbTerm is the term of the last heartbeat raft accepted. Another
	// heartbeat of that term changes no persistent raft state, so it is
	// answered on the connection's reader without a hand-off.
	hbTerm  atomic.Uint64
	queue   chan *inboundRPC
	hbQueue chan *inboundRPC

	// Leader side of node-level heartbeats (heartbeat.go): raft's
	// heartbeats waiting for the next batch, per target; the number of
	// leader checks running, during which heartbeats do not wait; and a
	// channel closed when a check begins, to release waiting heartbeats.
	// hbMu guards waiters, riders, checking and checkStarted.
	hbMu         sync.Mutex
	waiters      map[raft.ServerAddress]*hbWaiter
	riders       map[raft.ServerAddress]*rider
	checking     int
	checkStarted chan struct{}

	// Follower side: the last append raft accepted through this
	// transport, so a batched copy of an empty append that would tell raft
	// nothing new can be answered without it (heartbeat.go). appendMu
	// guards lastAppend and hasAppend.
	appendMu   sync.Mutex
	lastAppend appendMark
	hasAppend  bool

	// ctx is cancelled by Close; outbound waits and group goroutines
	// observe it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.RWMutex // guards closed and pipelines
	closed    bool
	pipelines map[*pipeline]struct{} // nil once closed
}

// inboundRPC is a decoded raft request waiting for the group's raft.
type inboundRPC struct {
	c         *conn
	typ       byte
	id        uint64
	cmd       any
	heartbeat bool // its reply may wait to share a write
}

func newGroup(m *Manager, id uint64) *GroupTransport {
	ctx, cancel := context.WithCancel(context.Background())
	g := &GroupTransport{
		m:         m,
		id:        id,
		consumeCh: make(chan raft.RPC),
		queue:     make(chan *inboundRPC, groupQueueLen),
		hbQueue:   make(chan *inboundRPC, heartbeatQueueLen),
		ctx:       ctx,
		cancel:    cancel,
		pipelines: make(map[*pipeline]struct{}),
	}
	g.wg.Add(2)
	go g.deliverLoop(g.queue, false)
	go g.deliverLoop(g.hbQueue, true)
	return g
}

// ID returns the group id.
func (g *GroupTransport) ID() uint64 { return g.id }

// Consumer implements raft.Transport.
func (g *GroupTransport) Consumer() <-chan raft.RPC { return g.consumeCh }

// LocalAddr implements raft.Transport; it is the node's advertised address.
func (g *GroupTransport) LocalAddr() raft.ServerAddress { return g.m.addr }

// EncodePeer implements raft.Transport.
func (g *GroupTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (g *GroupTransport) DecodePeer(buf []byte) raft.ServerAddress {
	return raft.ServerAddress(buf)
}

// SetHeartbeatHandler implements raft.Transport. Heartbeats then bypass the
// group's RPC queue and Consumer channel, so a group busy with disk I/O
// still answers them.
func (g *GroupTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.heartbeat.Store(nil)
		return
	}
	g.heartbeat.Store(&cb)
}

// Close detaches the group: its pending outbound calls and pipelines fail,
// queued inbound RPCs get an error reply, and later frames for it are
// answered with an error. The Manager and other groups keep running. It is
// idempotent.
func (g *GroupTransport) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	pls := g.pipelines
	g.pipelines = nil
	g.mu.Unlock()

	g.cancel()
	g.m.removeGroup(g)
	for p := range pls {
		_ = p.Close()
	}
	g.wg.Wait()
	// No enqueue can happen any more (closed is set), so this drains all.
	for {
		select {
		case in := <-g.queue:
			g.reply(in, nil, g.errClosed())
		case in := <-g.hbQueue:
			g.reply(in, nil, g.errClosed())
		default:
			return nil
		}
	}
}

func (g *GroupTransport) errClosed() error {
	return fmt.Errorf("%w: group %d transport on node %s is closed", ErrClosed, g.id, g.m.cfg.NodeID)
}

// enqueue hands an inbound RPC to the group without waiting.
func (g *GroupTransport) enqueue(in *inboundRPC, heartbeat bool) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return g.m.errNoGroup(g.id)
	}
	q := g.queue
	if heartbeat && g.heartbeat.Load() != nil {
		q = g.hbQueue
	}
	select {
	case q <- in:
		return nil
	default:
		return fmt.Errorf("transport: group %d inbound queue is full on node %s (raft is not keeping up)", g.id, g.m.cfg.NodeID)
	}
}

// answerInline answers a heartbeat of the term raft last accepted on the
// calling (reader) goroutine. raft's heartbeat handler answers such a
// heartbeat within the call without touching the disk; a heartbeat of
// another term may persist a new term, so it goes through the queue.
func (g *GroupTransport) answerInline(in *inboundRPC, req *raft.AppendEntriesRequest) bool {
	fn := g.heartbeat.Load()
	if fn == nil || req.Term == 0 || req.Term != g.hbTerm.Load() {
		return false
	}
	respCh := make(chan raft.RPCResponse, 1)
	(*fn)(raft.RPC{Command: in.cmd, RespChan: respCh})
	select {
	case r := <-respCh:
		g.noteHeartbeat(req, r.Response)
		g.reply(in, r.Response, r.Error)
	default:
		// raft ignores RPCs once it is shut down.
		g.reply(in, nil, fmt.Errorf("transport: raft of group %d on node %s did not answer a heartbeat", g.id, g.m.cfg.NodeID))
	}
	return true
}

// noteHeartbeat remembers the term of a heartbeat raft accepted.
func (g *GroupTransport) noteHeartbeat(req *raft.AppendEntriesRequest, resp any) {
	if r, ok := resp.(*raft.AppendEntriesResponse); ok && r.Success && r.Term == req.Term {
		g.hbTerm.Store(req.Term)
	}
}

// deliverLoop feeds one queue to raft, one RPC at a time: raft's main loop
// handles RPCs sequentially anyway, and waiting for each reply keeps the
// reply bookkeeping free of extra goroutines.
func (g *GroupTransport) deliverLoop(q chan *inboundRPC, fast bool) {
	defer g.wg.Done()
	for {
		select {
		case in := <-q:
			g.deliver(in, fast)
		case <-g.ctx.Done():
			return
		}
	}
}

func (g *GroupTransport) deliver(in *inboundRPC, fast bool) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: in.cmd, RespChan: respCh}
	if fn := g.heartbeat.Load(); fast && fn != nil {
		(*fn)(rpc)
	} else {
		select {
		case g.consumeCh <- rpc:
		case <-g.ctx.Done():
			g.reply(in, nil, g.errClosed())
			return
		}
	}
	// raft answers heartbeats within the call: skip the timer then.
	select {
	case r := <-respCh:
		if req, ok := in.cmd.(*raft.AppendEntriesRequest); ok && in.heartbeat {
			g.noteHeartbeat(req, r.Response)
		}
		g.noteAppend(in, r.Response, r.Error)
		g.reply(in, r.Response, r.Error)
		return
	default:
	}
	t := time.NewTimer(g.m.cfg.RPCTimeout)
	defer t.Stop()
	select {
	case r := <-respCh:
		g.noteAppend(in, r.Response, r.Error)
		g.reply(in, r.Response, r.Error)
	case <-t.C:
		g.forgetAppend()
		g.reply(in, nil, fmt.Errorf("transport: raft of group %d on node %s did not answer a %s within %v",
			g.id, g.m.cfg.NodeID, frameTypeName(in.typ), g.m.cfg.RPCTimeout))
	case <-g.ctx.Done():
		g.reply(in, nil, g.errClosed())
	}
}

func (g *GroupTransport) reply(in *inboundRPC, resp any, err error) {
	if in.heartbeat {
		_ = in.c.sendLazy(raftReplyFrame(g.id, in.id, in.typ, resp, err))
		return
	}
	_ = in.c.send(raftReplyFrame(g.id, in.id, in.typ, resp, err))
}

// raftReplyFrame encodes raft's answer to a request of type typ.
func raftReplyFrame(group, id uint64, typ byte, resp any, err error) []byte {
	if err == nil {
		b := append(newFrame(ftRaftResp, group, id, 64), statusOK)
		if b, err = appendResponse(b, typ, resp); err == nil {
			if b, err = finishFrame(b); err == nil {
				return b
			}
		}
	}
	return statusFrame(ftRaftResp, group, id, nil, err)
}

// rpc sends one raft request and decodes its response into resp.
func (g *GroupTransport) rpc(target raft.ServerAddress, typ byte, sizeHint int, enc func([]byte) []byte, resp any) error {
	return g.rpcWith(target, typ, false, sizeHint, enc, resp)
}

// rpcWith is rpc; lazy lets the request wait briefly to share a write.
func (g *GroupTransport) rpcWith(target raft.ServerAddress, typ byte, lazy bool, sizeHint int, enc func([]byte) []byte, resp any) error {
	if g.ctx.Err() != nil {
		return g.errClosed()
	}
	c, err := g.m.getConn(g.ctx, target)
	if err != nil {
		if g.ctx.Err() != nil {
			return g.errClosed()
		}
		return err
	}
	id := c.nextID.Add(1)
	b, err := finishFrame(enc(newFrame(typ, g.id, id, sizeHint)))
	if err != nil {
		return fmt.Errorf("transport: group %d %s to %s: %w", g.id, frameTypeName(typ), target, err)
	}
	send := c.send
	if lazy {
		send = c.sendLazy
	}
	f, err := c.requestWith(send, b, id, g.m.cfg.RPCTimeout, g.ctx.Done())
	switch {
	case err == errWaitCancelled:
		return g.errClosed()
	case err == errWaitTimeout:
		return fmt.Errorf("%w: group %d %s to %s got no reply within %v", ErrTimeout, g.id, frameTypeName(typ), target, g.m.cfg.RPCTimeout)
	case err != nil:
		return err
	}
	return decodeRaftReply(typ, f, resp)
}

func decodeRaftReply(typ byte, f frame, resp any) error {
	if f.typ != ftRaftResp {
		return fmt.Errorf("transport: %s answered with a %s frame", frameTypeName(typ), frameTypeName(f.typ))
	}
	body, err := parseStatus(f.payload)
	if err != nil {
		return err
	}
	return decodeResponse(typ, body, resp)
}

func appendEntriesSize(args *raft.AppendEntriesRequest) int {
	n := 64 + 2*len(args.Addr) + len(args.ID)
	for _, e := range args.Entries {
		if e != nil {
			n += 40 + len(e.Data) + len(e.Extensions)
		}
	}
	return n
}

// AppendEntries implements raft.Transport. With node-level heartbeats on,
// a heartbeat waits for the next batch to its target (heartbeat.go);
// otherwise it is sent on its own, and may wait a moment to share a write
// with other groups' heartbeats.
func (g *GroupTransport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	hb := isHeartbeat(args)
	if hb && g.m.batching() {
		if ok, err := g.heartbeatViaBatch(target, args, resp); ok || err != nil {
			return err
		}
	}
	if hb {
		g.m.hb.sent.Add(1)
	}
	return g.rpcWith(target, ftAppendEntries, hb, appendEntriesSize(args), func(b []byte) []byte {
		return appendAppendEntriesRequest(b, args)
	}, resp)
}

// RequestVote implements raft.Transport.
func (g *GroupTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return g.rpc(target, ftRequestVote, 64+len(args.ID)+2*len(args.Addr), func(b []byte) []byte {
		return appendRequestVoteRequest(b, args)
	}, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (g *GroupTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.rpc(target, ftRequestPreVote, 64+len(args.ID)+len(args.Addr), func(b []byte) []byte {
		return appendRequestPreVoteRequest(b, args)
	}, resp)
}

// TimeoutNow implements raft.Transport.
func (g *GroupTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return g.rpc(target, ftTimeoutNow, 32+len(args.ID)+len(args.Addr), func(b []byte) []byte {
		return appendTimeoutNowRequest(b, args)
	}, resp)
}

// InstallSnapshot implements raft.Transport. Each transfer uses its own
// connection so a large snapshot never delays heartbeats and appends on the
// shared one.
func (g *GroupTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return g.installSnapshot(target, args, resp, data)
}
