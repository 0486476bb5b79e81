package serverapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/httpjson"
)

// Client calls the server API of a cluster through any of its nodes. It is
// safe for concurrent use.
//
// A call that fails in a way that may succeed later (a retryable error, or
// a node that could not be reached) is tried again on the next node, with
// backoff, until its context ends, when that is safe: always for reads; for
// a publish or broadcast only when it has a key (the key makes a repeat
// harmless) or when the node answered unavailable (nothing was written).
// Other errors are returned at once: *Error when a node answered with one.
type Client struct {
	urls       []string
	key        string
	httpClient *http.Client

	mu   sync.Mutex
	next int // guarded by mu: the node to try first
}

// New returns a client for the nodes at urls (their client ports, e.g.
// http://10.0.0.5:7071) with the API key key ("" for a node in herald dev).
func New(key string, urls ...string) (*Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("serverapi: no node URL")
	}
	c := &Client{key: key, httpClient: &http.Client{}}
	for _, u := range urls {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("serverapi: node URL %q: want http:// or https://", u)
		}
		c.urls = append(c.urls, u)
	}
	return c, nil
}

// SetHTTPClient replaces the HTTP client (for TLS settings, proxies).
func (c *Client) SetHTTPClient(hc *http.Client) { c.httpClient = hc }

// maxReplyBytes bounds what the client reads of a reply: a history page is
// at most a few MiB.
const maxReplyBytes = 64 << 20

// Publish appends a message to a room once committed.
func (c *Client) Publish(ctx context.Context, req PublishRequest) (*PublishResult, error) {
	return call[PublishResult](ctx, c, OpPublish, req, req.Key != "")
}

// Broadcast publishes one message to many rooms; see BroadcastResult for
// the per-room outcome.
func (c *Client) Broadcast(ctx context.Context, req BroadcastRequest) (*BroadcastResult, error) {
	return call[BroadcastResult](ctx, c, OpBroadcast, req, req.Key != "")
}

// History reads a page of a room's events.
func (c *Client) History(ctx context.Context, req HistoryRequest) (*HistoryResult, error) {
	return call[HistoryResult](ctx, c, OpHistory, req, true)
}

// Members reads a room's members.
func (c *Client) Members(ctx context.Context, req RoomRead) (*MembersResult, error) {
	return call[MembersResult](ctx, c, OpMembers, req, true)
}

// PresenceStats counts a room's members.
func (c *Client) PresenceStats(ctx context.Context, req RoomRead) (*PresenceStats, error) {
	return call[PresenceStats](ctx, c, OpPresenceStats, req, true)
}

// Rooms lists a page of rooms.
func (c *Client) Rooms(ctx context.Context, req RoomsRequest) (*RoomsResult, error) {
	return call[RoomsResult](ctx, c, OpRooms, req, true)
}

// Info describes the cluster.
func (c *Client) Info(ctx context.Context) (*InfoResult, error) {
	return call[InfoResult](ctx, c, OpInfo, struct{}{}, true)
}

// Do sends one request for op to the client's first node, once, and
// decodes its reply into out: for an op the client has no method for, or
// a caller that retries itself (a node fanning a user op out to the
// others). A node's refusal is an *Error.
func (c *Client) Do(ctx context.Context, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("serverapi: encode %s: %w", op, err)
	}
	return c.do(ctx, c.urls[0], op, body, out)
}

func call[T any](ctx context.Context, c *Client, op string, in any, repeatable bool) (*T, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("serverapi: encode %s: %w", op, err)
	}
	backoff := 50 * time.Millisecond
	for {
		var out T
		url := c.pick()
		err := c.do(ctx, url, op, body, &out)
		if err == nil {
			return &out, nil
		}
		var ae *Error
		isAPI := errors.As(err, &ae)
		retry := ctx.Err() == nil && (repeatable && (!isAPI || ae.Retryable) || isAPI && ae.Code == "unavailable")
		if !retry {
			return nil, err
		}
		c.failed(url)
		wait := backoff
		if isAPI && ae.RetryAfterMS > 0 {
			wait = time.Duration(ae.RetryAfterMS) * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (c *Client) pick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urls[c.next%len(c.urls)]
}

// failed moves the client on from url to the next node.
func (c *Client) failed(url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.urls[c.next%len(c.urls)] == url {
		c.next = (c.next + 1) % len(c.urls)
	}
}

func (c *Client) do(ctx context.Context, base, op string, body []byte, out any) error {
	u := base + Prefix + op
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("serverapi: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("X-API-Key", c.key)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("serverapi: %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return fmt.Errorf("serverapi: %s: read the reply: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var env ErrorReply
		if json.Unmarshal(b, &env) == nil && env.Error != nil && env.Error.Code != "" {
			env.Error.Status = resp.StatusCode
			return env.Error
		}
		// Not the server API answering (a proxy, an old node, a wrong
		// address): keep what it said.
		text := httpjson.Excerpt(b)
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: fmt.Sprintf("%s answered: %s", u, text), Retryable: resp.StatusCode >= 500}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("serverapi: %s: decode the reply: %w", u, err)
	}
	return nil
}
