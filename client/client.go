package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// State is the state of a Client's connection.
type State uint8

const (
	Connecting State = iota + 1
	Connected
	Disconnected
	Closed
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// StateChange is one change of a Client's connection state.
type StateChange struct {
	State State
	URL   string
	// Node is the id of the node that accepted the connection, once
	// Connected.
	Node string
	// Err says why an attempt failed or a connection ended.
	Err error
	// CloseCode is the websocket close code the node ended the connection
	// with (1001 going away, 4008 slow consumer, 4010 disconnected by the
	// server, ...), or 0, and CloseReason the reason it gave.
	CloseCode   uint16
	CloseReason string
}

// Client is a connection to a Herald cluster that survives the loss of any
// node. It is safe for concurrent use.
//
// The client keeps one socket at a time. When it ends, the client
// reconnects (to the next URL, after a backoff), authenticates again,
// re-joins the rooms joined through it, with the same meta, and resumes
// every subscription where it stopped. Requests wait for a connection
// within their context; those in flight when a socket died are retried on
// the next one (see each method for what that means for it).
type Client struct {
	opts Config
	log  *slog.Logger
	ids  atomic.Uint64

	// ctx ends when the client is closed or fails for good; every
	// goroutine of the client stops with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// subSend orders a subscription's unsubscribe frame before the
	// subscribe frame of a later subscription to the same room, so the
	// node does not end the new one.
	subSend sync.Mutex

	// mu guards everything below; firstUp, made at construction, is
	// closed under it.
	mu      sync.Mutex
	err     error         // why the client stopped: ErrClosed or a fatal auth error
	cur     *conn         // nil while disconnected
	up      chan struct{} // closed while cur is set
	firstUp chan struct{} // closed at the first connection
	lastErr error         // of the last failed attempt, for Dial's error
	subs    map[string]*Subscription
	joins   map[string]*joinState
}

// Dial connects to the cluster (zero fields of cfg take DefaultConfig's
// values) and returns once a node accepted the
// credentials. It keeps trying the URLs, with backoff, until ctx ends; a
// node refusing the credentials (an *Error with code unauthorized) ends it
// at once. ctx bounds only the dial: the Client lives until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.URLs = slices.Clone(cfg.URLs)
	c := &Client{
		opts:    cfg,
		log:     cfg.Logger,
		up:      make(chan struct{}),
		firstUp: make(chan struct{}),
		subs:    make(map[string]*Subscription),
		joins:   make(map[string]*joinState),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.goRun(c.run)
	select {
	case <-c.firstUp:
		return c, nil
	case <-c.ctx.Done():
		err := c.fatalErr()
		_ = c.Close()
		return nil, err
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		_ = c.Close()
		if last != nil {
			return nil, fmt.Errorf("herald: dial: %w (last attempt: %v)", ctx.Err(), last)
		}
		return nil, fmt.Errorf("herald: dial: %w", ctx.Err())
	}
}

// Close closes the socket, ends every subscription (their Next returns
// ErrClosed) and waits for the client's goroutines. Calls in progress
// return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	cn := c.cur
	c.mu.Unlock()
	c.cancel()
	if cn != nil {
		cn.close()
	}
	c.wg.Wait()
	c.endSubs()
	return nil
}

// Node is the id of the node the client is connected to, or "" while it
// is not.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.node
}

func (c *Client) fatalErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return ErrClosed
	}
	return c.err
}

// goRun runs fn in a goroutine Close waits for, unless the client is
// already closing.
func (c *Client) goRun(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

func (c *Client) state(ch StateChange) {
	if ch.Err != nil {
		c.log.Info("herald: connection "+ch.State.String(), "url", ch.URL, "err", ch.Err)
	} else {
		c.log.Debug("herald: connection "+ch.State.String(), "url", ch.URL, "node", ch.Node)
	}
	if c.opts.OnState != nil {
		c.opts.OnState(ch)
	}
}

// stableAfter is how long a connection must have lasted for the next
// reconnection to start the backoff over: a node that accepts and then
// drops every socket must not be hammered.
const stableAfter = 2 * time.Second

// run owns the connection: it connects, restores joins and
// subscriptions, waits for the socket to end, and starts over.
func (c *Client) run() {
	next, attempt := 0, 0
	connectedOnce := false
	for c.ctx.Err() == nil {
		url := c.opts.URLs[next%len(c.opts.URLs)]
		next++
		c.state(StateChange{State: Connecting, URL: url})
		cn, err := c.connect(url)
		if err != nil {
			if c.ctx.Err() != nil {
				break
			}
			var he *Error
			if errors.As(err, &he) && !he.Retryable && (c.opts.TokenSource == nil || !connectedOnce) {
				// The same credentials would be refused again; a token
				// source may have better ones later, but Dial should
				// not wait for that.
				c.fail(err)
				break
			}
			c.mu.Lock()
			c.lastErr = fmt.Errorf("%s: %w", url, err)
			c.mu.Unlock()
			c.state(StateChange{State: Disconnected, URL: url, Err: err})
			if !wait.Sleep(c.ctx, c.opts.Backoff.Delay(attempt)) {
				break
			}
			attempt++
			continue
		}
		connectedOnce = true
		c.restoreJoins(cn)
		c.connected(cn)
		c.state(StateChange{State: Connected, URL: url, Node: cn.node})
		<-cn.ctx.Done()
		// Ended by Close, the socket may still be open, its read loop
		// waiting on it.
		cn.close()
		c.disconnected(cn)
		if c.ctx.Err() != nil {
			break
		}
		err = cn.err()
		code, reason := closeFrame(err)
		c.state(StateChange{State: Disconnected, URL: url, Node: cn.node, Err: err, CloseCode: code, CloseReason: reason})
		if time.Since(cn.born) >= stableAfter {
			attempt = 0
		}
		if !wait.Sleep(c.ctx, c.opts.Backoff.Delay(attempt)) {
			break
		}
		attempt++
	}
	err := c.fatalErr()
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	c.state(StateChange{State: Closed, Err: err})
}

// fail stops the client for good with err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.cancel()
	c.endSubs()
}

func (c *Client) connected(cn *conn) {
	c.mu.Lock()
	c.cur = cn
	close(c.up)
	select {
	case <-c.firstUp:
	default:
		close(c.firstUp)
	}
	subs := slices.Collect(maps.Values(c.subs))
	c.mu.Unlock()
	for _, s := range subs {
		s.ensure(cn)
	}
}

// unpublish stops waitConn from returning cn.
func (c *Client) unpublish(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.up = make(chan struct{})
	}
	c.mu.Unlock()
}

func (c *Client) disconnected(cn *conn) {
	c.unpublish(cn)
	c.mu.Lock()
	subs := slices.Collect(maps.Values(c.subs))
	c.mu.Unlock()
	for _, s := range subs {
		s.lost(cn)
	}
}

// waitConn returns the current connection, waiting for one within ctx.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		if c.cur != nil {
			cn := c.cur
			c.mu.Unlock()
			return cn, nil
		}
		up := c.up
		c.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
		}
	}
}

// push hands an event or notice to the subscription of its room.
func (c *Client) push(cn *conn, f *protocol.Frame) {
	c.mu.Lock()
	s := c.subs[f.Room]
	c.mu.Unlock()
	if s != nil {
		s.offer(cn, f)
	}
}

// endSubs ends every subscription with the client's error.
func (c *Client) endSubs() {
	c.mu.Lock()
	err := c.err
	subs := slices.Collect(maps.Values(c.subs))
	c.mu.Unlock()
	for _, s := range subs {
		s.end(err)
	}
}

// retryable classifies a failed attempt: whether to try again, after how
// long, and whether the attempt may have taken effect.
func (c *Client) retryable(err error, sent bool, attempt int) (retry bool, wait time.Duration, mayHaveApplied bool) {
	var he *Error
	switch {
	case errors.Is(err, errConnLost):
		// waitConn waits for the reconnection, which has its own backoff.
		return true, 0, sent
	case errors.As(err, &he):
		if !he.Retryable {
			return false, 0, false
		}
		wait = c.opts.Backoff.Delay(attempt)
		if he.Code == CodeRateLimited && he.RetryAfter > 0 {
			wait = he.RetryAfter
		}
		return true, wait, he.Code == CodeUnknownOutcome || he.Code == CodeInternal
	}
	return false, 0, sent && isContextErr(err)
}
