package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// PublishResult is where a publish landed.
type PublishResult struct {
	Seq   uint64
	Epoch string
	// Duplicate means the key had already been published (by an earlier
	// attempt of this call, or by a call with WithKey): Seq is that
	// publish's, and nothing was appended now.
	Duplicate bool
	// Key is the idempotency key used.
	Key string
}

// PublishOption adjusts one Publish.
type PublishOption func(*publishOptions)

type publishOptions struct {
	key       string
	expectSeq *uint64
}

// WithKey sets the idempotency key instead of a random one, so that an
// application retrying across restarts of its own (with a key it stored)
// still publishes once. Keys are remembered per room for 10,000 keys and
// 10 minutes by default.
func WithKey(key string) PublishOption { return func(o *publishOptions) { o.key = key } }

// WithExpectSeq appends the message only if the room's last seq is seq;
// otherwise Publish fails with ErrConflict and Error.LastSeq set.
func WithExpectSeq(seq uint64) PublishOption {
	return func(o *publishOptions) { o.expectSeq = &seq }
}

// Publish appends data (JSON-encoded; a json.RawMessage is sent as is) to
// room and returns its seq once a quorum committed it.
//
// Every attempt carries the same idempotency key, so Publish retries
// whatever left the outcome open (the socket dying after the request was
// sent, unavailable, unknown_outcome, rate_limited) on any node until ctx
// ends, and the message is appended exactly once. If ctx ends after an
// attempt that may have been applied, the error is ErrUnknownOutcome
// (wrapping ctx's error): calling Publish again WithKey(the same key)
// tells. A message whose request is over the node's max_frame fails at
// once with ErrTooLarge, unsent.
func (c *Client) Publish(ctx context.Context, room string, data any, opts ...PublishOption) (PublishResult, error) {
	raw, err := marshal("data", data)
	if err != nil {
		return PublishResult{}, err
	}
	var po publishOptions
	for _, o := range opts {
		o(&po)
	}
	if po.key == "" {
		po.key = newKey()
	}
	req := protocol.Request{Op: protocol.OpPublish, Room: room, Data: raw, Key: po.key, ExpectSeq: po.expectSeq}
	uncertain := false
	var last error
	for attempt := 0; ; attempt++ {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return PublishResult{}, publishError(err, last, uncertain, po.key)
		}
		f, sent, err := c.roundTrip(ctx, cn, &req, nil)
		if err == nil {
			return PublishResult{Seq: f.Seq, Epoch: f.Epoch, Duplicate: f.Duplicate, Key: po.key}, nil
		}
		retry, pause, maybe := c.retryable(err, sent, attempt)
		uncertain = uncertain || maybe
		if !retry {
			return PublishResult{}, publishError(err, last, uncertain, po.key)
		}
		last = err
		c.log.Debug("herald: retrying publish", "room", room, "key", po.key, "attempt", attempt+1, "err", err)
		if !wait.Sleep(ctx, pause) {
			return PublishResult{}, publishError(ctx.Err(), last, uncertain, po.key)
		}
	}
}

// publishError is the error of a publish that stopped at err after last.
// Once an attempt may have been applied, only a conflict proves it was
// not (the key is checked before expect_seq); anything else leaves the
// outcome unknown.
func publishError(err, last error, uncertain bool, key string) error {
	if !uncertain || errors.Is(err, ErrConflict) {
		return stopError(err, last)
	}
	return &Error{Code: CodeUnknownOutcome, Retryable: true, cause: err,
		Message: fmt.Sprintf("the publish may or may not have been applied (%v); publish again with key %q to find out", err, key)}
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func marshal(what string, v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("herald: encode %s: %w", what, err)
	}
	return b, nil
}

// do runs a request that may be repeated freely (reads), retrying on any
// node until it succeeds, fails for good or ctx ends.
func (c *Client) do(ctx context.Context, req *protocol.Request) (*protocol.Frame, error) {
	var last error
	for attempt := 0; ; attempt++ {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return nil, stopError(err, last)
		}
		f, sent, err := c.roundTrip(ctx, cn, req, nil)
		if err == nil {
			return f, nil
		}
		retry, pause, _ := c.retryable(err, sent, attempt)
		if !retry {
			return nil, stopError(err, last)
		}
		last = err
		c.log.Debug("herald: retrying "+req.Op, "room", req.Room, "attempt", attempt+1, "err", err)
		if !wait.Sleep(ctx, pause) {
			return nil, stopError(ctx.Err(), last)
		}
	}
}

// ReadOption adjusts a History or Members read.
type ReadOption func(*readRequest)

// readRequest keeps ReadOption's argument this package's own.
type readRequest protocol.Request

// Stale lets any replica answer from what it has applied, possibly behind
// the latest writes, without a round to the leader.
func Stale() ReadOption { return func(r *readRequest) { r.Consistency = protocol.ConsistencyStale } }

// HistoryPage is a page of a room's events, in seq order without gaps.
type HistoryPage struct {
	Events   []Event
	FirstSeq uint64 // the first event of the page
	LastSeq  uint64 // the room's last seq
	Epoch    string
	// Truncated means fromSeq was below the oldest retained event: the
	// page starts at FirstSeq.
	Truncated bool
	Stale     bool
}

// More reports whether the room has events after this page.
func (p *HistoryPage) More() bool {
	return len(p.Events) > 0 && p.Events[len(p.Events)-1].Seq < p.LastSeq
}

// NextSeq is the fromSeq of the page after this one.
func (p *HistoryPage) NextSeq() uint64 {
	if len(p.Events) == 0 {
		return p.LastSeq + 1
	}
	return p.Events[len(p.Events)-1].Seq + 1
}

// History reads up to limit events of room from fromSeq on (0: from the
// first retained event; limit 0: the node's default, 100; at most 1000).
// The node also bounds a page in bytes (its max_page_bytes, 1 MiB by
// default), so a page of big events holds fewer than limit. Page with
// NextSeq while More.
func (c *Client) History(ctx context.Context, room string, fromSeq uint64, limit int, opts ...ReadOption) (*HistoryPage, error) {
	req := protocol.Request{Op: protocol.OpHistory, Room: room}
	if limit != 0 {
		req.Limit = &limit
	}
	if fromSeq > 0 {
		req.FromSeq = &fromSeq
	}
	for _, o := range opts {
		o((*readRequest)(&req))
	}
	f, err := c.do(ctx, &req)
	if err != nil {
		return nil, err
	}
	p := &HistoryPage{FirstSeq: f.FirstSeq, LastSeq: f.LastSeq, Epoch: f.Epoch, Truncated: f.Truncated, Stale: f.Stale,
		Events: make([]Event, len(f.Events))}
	for i := range f.Events {
		p.Events[i] = eventOf(&f.Events[i])
	}
	return p, nil
}

// Member is one member of a room.
type Member struct {
	Member    string
	Meta      json.RawMessage // the meta of its latest join, or null
	JoinedSeq uint64
}

// MemberList is a room's membership at Seq.
type MemberList struct {
	Members []Member
	Seq     uint64
	Epoch   string
	Stale   bool
}

// Members reads who is in room.
func (c *Client) Members(ctx context.Context, room string, opts ...ReadOption) (*MemberList, error) {
	req := protocol.Request{Op: protocol.OpMembers, Room: room}
	for _, o := range opts {
		o((*readRequest)(&req))
	}
	f, err := c.do(ctx, &req)
	if err != nil {
		return nil, err
	}
	ml := &MemberList{Seq: f.Seq, Epoch: f.Epoch, Stale: f.Stale, Members: make([]Member, len(f.Members))}
	for i, m := range f.Members {
		ml.Members[i] = Member(m)
	}
	return ml, nil
}

// joinState is what the client wants for one room's membership and what
// the current socket has. Its fields belong to whoever holds sem, so that
// Join, Leave and the re-join after a reconnect of one room never
// interleave (each would otherwise add a join event of its own).
type joinState struct {
	room string
	sem  chan struct{}

	want     bool
	meta     json.RawMessage
	wire     *conn           // the socket the member is joined through
	wireMeta json.RawMessage // the meta it joined with
	seq      uint64          // the seq of that join
}

// waitConnLocking waits for a connection and then for j's lock, within ctx;
// on success the caller holds the lock.
func (c *Client) waitConnLocking(ctx context.Context, j *joinState) (*conn, error) {
	cn, err := c.waitConn(ctx)
	if err == nil && !j.lock(ctx) {
		err = ctx.Err()
	}
	return cn, err
}

func (j *joinState) lock(ctx context.Context) bool {
	select {
	case j.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (j *joinState) unlock() { <-j.sem }

// joinedOn reports whether the member is joined through cn as wanted.
func (j *joinState) joinedOn(cn *conn) bool {
	return j.want && j.wire == cn && bytes.Equal(j.wireMeta, j.meta)
}

func (c *Client) joinFor(room string) *joinState {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.joins[room]
	if j == nil {
		j = &joinState{room: room, sem: make(chan struct{}, 1)}
		c.joins[room] = j
	}
	return j
}

// tidyJoin drops j from the client if the client does not want the room,
// unless another call holds j (which then keeps it, unwanted: that costs
// only its memory).
func (c *Client) tidyJoin(j *joinState) {
	select {
	case j.sem <- struct{}{}:
		c.forgetJoin(j)
		j.unlock()
	default:
	}
}

// forgetJoin drops j if the client does not want the room; the caller
// holds j.
func (c *Client) forgetJoin(j *joinState) {
	if j.want {
		return
	}
	c.mu.Lock()
	if c.joins[j.room] == j {
		delete(c.joins, j.room)
	}
	c.mu.Unlock()
}

// Join makes the client's user a member of room, with meta (JSON-encoded;
// nil for none) as its presence data, and returns the seq of the join
// event.
//
// Membership is bound to the socket: the node removes the member when the
// socket closes. So once joined, the client re-joins the room, with the
// same meta, on every new socket, before it serves other requests there,
// until Leave. Joining again updates the meta. A Join interrupted by the
// loss of its socket is retried on the next one; if ctx ends after an
// attempt that may have been applied, the error is ErrUnknownOutcome and
// the client treats the room as joined (re-joining it) until Leave.
func (c *Client) Join(ctx context.Context, room string, meta any) (uint64, error) {
	var raw json.RawMessage
	if meta != nil {
		var err error
		if raw, err = marshal("meta", meta); err != nil {
			return 0, err
		}
	}
	j := c.joinFor(room)
	defer c.tidyJoin(j)
	uncertain := false
	var last error
	for attempt := 0; ; attempt++ {
		cn, err := c.waitConnLocking(ctx, j)
		if err != nil {
			return 0, joinError(err, last, uncertain)
		}
		if uncertain {
			switch {
			case !j.want || !bytes.Equal(j.meta, raw):
				j.unlock()
				return 0, ErrOvertaken
			case j.joinedOn(cn):
				seq := j.seq // the re-join after a reconnect finished it
				j.unlock()
				return seq, nil
			}
		}
		f, sent, err := c.roundTrip(ctx, cn, &protocol.Request{Op: protocol.OpJoin, Room: room, Meta: raw}, nil)
		if err == nil {
			j.want, j.meta = true, raw
			j.wire, j.wireMeta, j.seq = cn, raw, f.Seq
			j.unlock()
			return f.Seq, nil
		}
		retry, pause, maybe := c.retryable(err, sent, attempt)
		if maybe && !uncertain {
			// The member may be joined: keep it so on later sockets, as
			// for a join that succeeded.
			uncertain = true
			j.want, j.meta = true, raw
		}
		j.unlock()
		if !retry {
			return 0, joinError(err, last, uncertain)
		}
		last = err
		if !wait.Sleep(ctx, pause) {
			return 0, joinError(ctx.Err(), last, uncertain)
		}
	}
}

func joinError(err, last error, uncertain bool) error {
	if !uncertain {
		return stopError(err, last)
	}
	return &Error{Code: CodeUnknownOutcome, Retryable: true, cause: err,
		Message: fmt.Sprintf("the join may or may not have been applied (%v); the client keeps the member joined until Leave", err)}
}

// Leave removes the client's user from room and returns the seq of the
// leave event. The client stops re-joining the room at once, whatever
// Leave returns. If the member is already gone (the socket it joined
// through closed, and the node removed it), Leave returns seq 0 and no
// error; it returns ErrNotFound only for a room the client had not joined.
func (c *Client) Leave(ctx context.Context, room string) (uint64, error) {
	j := c.joinFor(room)
	defer c.tidyJoin(j)
	if !j.lock(ctx) {
		return 0, ctx.Err()
	}
	wasJoined := j.want || j.wire != nil
	j.want, j.meta = false, nil
	j.unlock()

	var last error
	for attempt := 0; ; attempt++ {
		cn, err := c.waitConnLocking(ctx, j)
		if err != nil {
			return 0, stopError(err, last)
		}
		if j.want {
			j.unlock()
			return 0, ErrOvertaken
		}
		f, sent, err := c.roundTrip(ctx, cn, &protocol.Request{Op: protocol.OpLeave, Room: room}, nil)
		if err == nil || (errors.Is(err, ErrNotFound) && wasJoined) {
			j.wire, j.wireMeta = nil, nil
			j.unlock()
			if err != nil {
				return 0, nil
			}
			return f.Seq, nil
		}
		j.unlock()
		retry, pause, _ := c.retryable(err, sent, attempt)
		if !retry {
			return 0, stopError(err, last)
		}
		last = err
		if !wait.Sleep(ctx, pause) {
			return 0, stopError(ctx.Err(), last)
		}
	}
}

// restoreJoins re-joins, through a new socket, the rooms the client is
// joined to, before the socket serves other requests: a publish to a
// members-only room must not race its own re-join. A re-join that takes
// longer than the dial timeout goes on in the background.
func (c *Client) restoreJoins(cn *conn) {
	c.mu.Lock()
	joins := make([]*joinState, 0, len(c.joins))
	for _, j := range c.joins {
		joins = append(joins, j)
	}
	c.mu.Unlock()
	if len(joins) == 0 {
		return
	}
	done := make(chan struct{}, len(joins))
	started := 0
	for _, j := range joins {
		if c.goRun(func() {
			defer func() { done <- struct{}{} }()
			c.rejoin(cn, j)
		}) {
			started++
		}
	}
	t := time.NewTimer(c.opts.DialTimeout)
	defer t.Stop()
	for range started {
		select {
		case <-done:
		case <-t.C:
			return
		case <-cn.ctx.Done():
			return
		}
	}
}

// rejoin joins j's room through cn if the client wants it, retrying while
// cn lives.
func (c *Client) rejoin(cn *conn, j *joinState) {
	for attempt := 0; ; attempt++ {
		if !j.lock(cn.ctx) {
			return
		}
		if !j.want || j.joinedOn(cn) {
			j.unlock()
			return
		}
		meta := j.meta
		rctx, cancel := context.WithTimeout(cn.ctx, c.opts.RequestTimeout)
		f, _, err := c.roundTrip(rctx, cn, &protocol.Request{Op: protocol.OpJoin, Room: j.room, Meta: meta}, nil)
		cancel()
		if err == nil {
			j.wire, j.wireMeta, j.seq = cn, meta, f.Seq
			j.unlock()
			return
		}
		if rctx.Err() != nil && cn.ctx.Err() == nil {
			// No answer in time: ask again (a join of a member the room
			// has is answered as one), without holding the room from the
			// application's own calls meanwhile.
			j.unlock()
			if !wait.Sleep(cn.ctx, c.opts.Backoff.Delay(attempt)) {
				return
			}
			continue
		}
		retry, pause, _ := c.retryable(err, true, attempt)
		if !retry {
			if !errors.Is(err, errConnLost) && cn.ctx.Err() == nil {
				// The node will not have this member any more (the
				// token lost the right, say): stop wanting it.
				c.log.Warn("herald: re-join refused; the client no longer joins the room", "room", j.room, "err", err)
				j.want, j.meta = false, nil
				c.forgetJoin(j)
			}
			j.unlock()
			return
		}
		j.unlock()
		if errors.Is(err, errConnLost) || !wait.Sleep(cn.ctx, pause) {
			return
		}
	}
}
