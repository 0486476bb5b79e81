package transport

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// pipelineMaxInFlight bounds AppendEntries sent on a pipeline but not yet
// answered. raft's own measurements show deep pipelines hurt commit latency
// when batching, so it stays small; AppendEntries blocks once it is reached.
const pipelineMaxInFlight = 8

// AppendEntriesPipeline implements raft.Transport. The pipeline shares the
// peer's connection; closing it does not close the connection.
func (g *GroupTransport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if g.ctx.Err() != nil {
		return nil, g.errClosed()
	}
	c, err := g.m.getConn(g.ctx, target)
	if err != nil {
		if g.ctx.Err() != nil {
			return nil, g.errClosed()
		}
		return nil, err
	}
	p := &pipeline{
		g:        g,
		c:        c,
		target:   target,
		slots:    make(chan struct{}, pipelineMaxInFlight),
		inflight: make(chan *appendFuture, pipelineMaxInFlight),
		doneCh:   make(chan raft.AppendFuture, pipelineMaxInFlight),
		shutdown: make(chan struct{}),
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, g.errClosed()
	}
	g.pipelines[p] = struct{}{}
	// Added under g.mu: Close may take p from g.pipelines and Wait at once.
	p.wg.Add(1)
	g.mu.Unlock()
	go p.decodeLoop()
	return p, nil
}

type pipeline struct {
	g      *GroupTransport
	c      *conn
	target raft.ServerAddress

	// slots is taken before a request is sent and given back once its
	// response arrived, which bounds the requests in flight exactly.
	slots    chan struct{}
	inflight chan *appendFuture
	doneCh   chan raft.AppendFuture
	shutdown chan struct{}
	wg       sync.WaitGroup

	// mu guards closed, acked, hasAcked and rider, and orders sends: a
	// request goes on the connection and into inflight under it.
	mu     sync.Mutex
	closed bool
	// acked is the mark of the last append the follower accepted, when
	// nothing failed since; rider is the empty append waiting for a
	// batched heartbeat (heartbeat.go).
	acked    appendMark
	hasAcked bool
	rider    *rider
}

// AppendEntries sends a request without waiting for its response; it
// blocks while pipelineMaxInFlight requests are unanswered.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	select {
	case p.slots <- struct{}{}:
	case <-p.shutdown:
		return nil, raft.ErrPipelineShutdown
	}
	f := &appendFuture{
		start: time.Now(),
		args:  args,
		resp:  resp,
		u:     newUnary(),
		done:  make(chan struct{}),
		id:    p.c.nextID.Add(1),
	}
	b, err := finishFrame(appendAppendEntriesRequest(newFrame(ftAppendEntries, p.g.id, f.id, appendEntriesSize(args)), args))
	if err != nil {
		<-p.slots
		return nil, fmt.Errorf("transport: group %d pipelined AppendEntries to %s: %w", p.g.id, p.target, err)
	}
	if err := p.c.addPending(f.id, f.u); err != nil {
		<-p.slots
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.c.removePending(f.id)
		<-p.slots
		return nil, raft.ErrPipelineShutdown
	}
	// A waiting rider leaves first, so the follower sees pipeline order.
	if r := p.rider; r != nil {
		p.rider = nil
		if r.state.CompareAndSwap(0, 1) {
			_ = p.c.send(r.frame)
		}
	}
	if p.mayRide(args) {
		r := &rider{p: p, f: f, args: args, mark: p.acked, frame: b}
		p.rider = r
		p.inflight <- f
		p.mu.Unlock()
		p.g.addRider(p.target, r)
		return f, nil
	}
	if err := p.c.send(b); err != nil {
		p.mu.Unlock()
		p.c.removePending(f.id)
		<-p.slots
		return nil, err
	}
	p.inflight <- f // never blocks: it has as much room as there are slots
	p.mu.Unlock()
	return f, nil
}

// mayRide says whether args is an empty append that repeats what the
// follower last acknowledged, with nothing else in flight, so it can wait
// for a batched heartbeat. Called with p.mu held.
func (p *pipeline) mayRide(args *raft.AppendEntriesRequest) bool {
	return p.g.m.batching() && len(args.Entries) == 0 && p.hasAcked &&
		markOf(args) == p.acked && len(p.slots) == 1
}

// noteAnswer records the mark of an append the follower accepted, or
// forgets it after anything else.
func (p *pipeline) noteAnswer(f *appendFuture) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.err == nil && f.resp.Success && f.resp.Term == f.args.Term {
		p.acked, p.hasAcked = markOf(f.args), true
		return
	}
	p.hasAcked = false
}

// Consumer implements raft.AppendPipeline: futures arrive in send order.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close stops the pipeline; unanswered requests are abandoned.
func (p *pipeline) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.shutdown)
	p.wg.Wait()
	for {
		select {
		case f := <-p.inflight:
			p.c.removePending(f.id)
			f.respond(raft.ErrPipelineShutdown)
		default:
			p.g.mu.Lock()
			delete(p.g.pipelines, p)
			p.g.mu.Unlock()
			return nil
		}
	}
}

// decodeLoop completes futures in send order. A broken connection fails
// every pending request, so all in-flight futures fail with it.
func (p *pipeline) decodeLoop() {
	defer p.wg.Done()
	timeout := p.g.m.cfg.RPCTimeout
	for {
		select {
		case f := <-p.inflight:
			wait := max(timeout-time.Since(f.start), time.Millisecond)
			fr, err := p.c.await(f.u, f.id, f.start, wait, p.shutdown)
			switch {
			case err == errWaitCancelled:
				f.respond(raft.ErrPipelineShutdown)
				return
			case err == errWaitTimeout:
				err = fmt.Errorf("%w: group %d pipelined AppendEntries to %s got no reply within %v", ErrTimeout, p.g.id, p.target, timeout)
			case err == nil:
				err = decodeRaftReply(ftAppendEntries, fr, f.resp)
			}
			f.respond(err)
			p.noteAnswer(f)
			<-p.slots
			select {
			case p.doneCh <- f:
			case <-p.shutdown:
				return
			}
		case <-p.shutdown:
			return
		}
	}
}

// appendFuture implements raft.AppendFuture.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	id    uint64
	u     *unary
	err   error
	done  chan struct{}
}

func (f *appendFuture) respond(err error) {
	f.err = err
	close(f.done)
}

// Error blocks until the response arrived or the request failed.
func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

// Start returns when the request was sent.
func (f *appendFuture) Start() time.Time { return f.start }

// Request returns the request.
func (f *appendFuture) Request() *raft.AppendEntriesRequest { return f.args }

// Response returns the response; valid once Error returned nil.
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }
