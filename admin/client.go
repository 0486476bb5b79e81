package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/httpjson"
)

// Client talks to one node's admin API. Its methods return *APIError when
// the node answered with an error, and a transport error when it could not
// be reached. Each call is bounded by its context only.
type Client struct {
	BaseURL    string // e.g. http://127.0.0.1:7071
	Token      string
	HTTPClient *http.Client
}

// NewClient returns a client for the node at baseURL (its client port).
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTPClient: &http.Client{}}
}

// maxReplyBytes bounds what the client reads of a reply: a status of a
// cluster with thousands of groups is a few MiB.
const maxReplyBytes = 64 << 20

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := c.BaseURL + Prefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return fmt.Errorf("admin: %s %s: read reply: %w", method, u, err)
	}
	if resp.StatusCode >= 300 {
		var env errorEnvelope
		if json.Unmarshal(b, &env) == nil && env.Error != nil && env.Error.Code != "" {
			env.Error.Status = resp.StatusCode
			return env.Error
		}
		// Not the admin API answering (a proxy, an old node, a wrong
		// address): keep what it said.
		text := httpjson.Excerpt(b)
		if text == "" {
			text = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: fmt.Sprintf("%s %s answered: %s", method, u, text)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin: %s %s: decode reply: %w", method, u, err)
	}
	return nil
}

// call makes one request and decodes its reply into a new T.
func call[T any](ctx context.Context, c *Client, method, path string, query url.Values, in any) (*T, error) {
	var out T
	if err := c.do(ctx, method, path, query, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StatusOptions shape a status request.
type StatusOptions struct {
	// Timeout bounds the report on the node (default 5s); what did not
	// answer by then is left out and the report marked partial.
	Timeout time.Duration
}

// Status reports the cluster's nodes, groups, rooms and health.
func (c *Client) Status(ctx context.Context, opts ...StatusOptions) (*Status, error) {
	var q url.Values
	if len(opts) > 0 && opts[0].Timeout > 0 {
		q = url.Values{"timeout": {opts[0].Timeout.String()}}
	}
	return call[Status](ctx, c, http.MethodGet, "status", q, nil)
}

// Nodes lists the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out struct {
		Nodes []Node `json:"nodes"`
	}
	err := c.do(ctx, http.MethodGet, "nodes", nil, nil, &out)
	return out.Nodes, err
}

// AddNode makes the node this client talks to, started without bootstrap
// or join, join the cluster of the seed peer addresses. It returns the
// node's record in the cluster.
func (c *Client) AddNode(ctx context.Context, seeds []string) (*Node, error) {
	return call[Node](ctx, c, http.MethodPost, "nodes/add", nil, AddNodeRequest{Seeds: seeds, Timeout: remaining(ctx)})
}

// JobOptions shape a job.
type JobOptions struct {
	// Timeout bounds the whole job on the node (default 1h); it does not
	// depend on the caller staying connected.
	Timeout time.Duration
}

func jobRequest(opts []JobOptions) JobRequest {
	if len(opts) == 0 {
		return JobRequest{}
	}
	return JobRequest{Timeout: Duration(opts[0].Timeout)}
}

// Decommission starts a job that moves every replica off node id and
// removes it from the cluster.
func (c *Client) Decommission(ctx context.Context, id string, opts ...JobOptions) (*Job, error) {
	return call[Job](ctx, c, http.MethodPost, "nodes/"+url.PathEscape(id)+"/decommission", nil, jobRequest(opts))
}

// RemoveNode starts a job that forgets a node that is gone, moving its
// replicas to the others first.
func (c *Client) RemoveNode(ctx context.Context, id string, opts ...JobOptions) (*Job, error) {
	return call[Job](ctx, c, http.MethodPost, "nodes/"+url.PathEscape(id)+"/remove", nil, jobRequest(opts))
}

// Groups lists every group with its leader and replicas.
func (c *Client) Groups(ctx context.Context) (*GroupList, error) {
	return call[GroupList](ctx, c, http.MethodGet, "groups", nil, nil)
}

// Group describes one group, with each replica's report.
func (c *Client) Group(ctx context.Context, id uint64) (*Group, error) {
	return call[Group](ctx, c, http.MethodGet, "groups/"+strconv.FormatUint(id, 10), nil, nil)
}

// MoveReplica moves group id's replica from one node to another and
// returns the group afterwards. The node bounds the move (default 2m);
// ctx must allow for that.
func (c *Client) MoveReplica(ctx context.Context, id uint64, from, to string) (*Group, error) {
	return call[Group](ctx, c, http.MethodPost, "groups/"+strconv.FormatUint(id, 10)+"/move", nil, moveRequest(ctx, from, to))
}

// RepairReplica rebuilds group id's replica on node from the other
// replicas and returns the group afterwards.
func (c *Client) RepairReplica(ctx context.Context, id uint64, node string) (*Group, error) {
	return call[Group](ctx, c, http.MethodPost, "groups/"+strconv.FormatUint(id, 10)+"/repair", nil, RepairRequest{Node: node, Timeout: remaining(ctx)})
}

// moveRequest passes ctx's deadline on, so the node gives up when the
// caller does.
func moveRequest(ctx context.Context, from, to string) MoveRequest {
	return MoveRequest{From: from, To: to, Timeout: remaining(ctx)}
}

// remaining is a little less than what is left of ctx (0: no deadline), so
// the node answers before the caller stops listening.
func remaining(ctx context.Context) Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	left := time.Until(d)
	left -= min(left/10, 2*time.Second)
	return Duration(min(max(left, time.Millisecond), maxSyncTimeout))
}

// TransferLeader hands group id's leadership to node to and returns the
// group afterwards.
func (c *Client) TransferLeader(ctx context.Context, id uint64, to string) (*Group, error) {
	return call[Group](ctx, c, http.MethodPost, "groups/"+strconv.FormatUint(id, 10)+"/transfer-leader", nil,
		TransferRequest{To: to, Timeout: remaining(ctx)})
}

// PlanRebalance returns what a rebalance would do now, changing nothing.
func (c *Client) PlanRebalance(ctx context.Context) (*Plan, error) {
	return call[Plan](ctx, c, http.MethodGet, "rebalance/plan", nil, nil)
}

// Rebalance starts a job that plans and applies a rebalance. Running it
// again after an interruption resumes.
func (c *Client) Rebalance(ctx context.Context, opts ...JobOptions) (*Job, error) {
	return call[Job](ctx, c, http.MethodPost, "rebalance", nil, jobRequest(opts))
}

// Jobs lists the jobs the node remembers, oldest first.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	err := c.do(ctx, http.MethodGet, "jobs", nil, nil, &out)
	return out.Jobs, err
}

// Job returns one job.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	return call[Job](ctx, c, http.MethodGet, "jobs/"+url.PathEscape(id), nil, nil)
}

// CancelJob stops a running job; it returns the job as it stands (usually
// ended).
func (c *Client) CancelJob(ctx context.Context, id string) (*Job, error) {
	return call[Job](ctx, c, http.MethodDelete, "jobs/"+url.PathEscape(id), nil, nil)
}

// WaitJob polls a job every interval until it ends or ctx does, calling
// update (if set) with every state seen. A job that ends failed or
// canceled is returned with its Error, not as an error.
func (c *Client) WaitJob(ctx context.Context, id string, interval time.Duration, update func(*Job)) (*Job, error) {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return nil, err
		}
		if update != nil {
			update(j)
		}
		if j.Ended() {
			return j, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return j, ctx.Err()
		case <-t.C:
		}
	}
}

// Room reads a room and its members.
func (c *Client) Room(ctx context.Context, room string) (*Room, error) {
	return call[Room](ctx, c, http.MethodGet, "rooms/"+url.PathEscape(room), nil, nil)
}

// DeleteRoom deletes a room: its history and members go, and its next use
// starts a new epoch.
func (c *Client) DeleteRoom(ctx context.Context, room string) (*RoomDeleted, error) {
	return call[RoomDeleted](ctx, c, http.MethodDelete, "rooms/"+url.PathEscape(room), nil, nil)
}

// ConfigureRoom changes the fields of a room's config that change sets and
// returns the room afterwards. A room that does not exist is created.
func (c *Client) ConfigureRoom(ctx context.Context, room string, change RoomConfigChange) (*Room, error) {
	return call[Room](ctx, c, http.MethodPost, "rooms/"+url.PathEscape(room)+"/config", nil, change)
}

// Namespaces lists the cluster's namespace rules.
func (c *Client) Namespaces(ctx context.Context) (*Namespaces, error) {
	return call[Namespaces](ctx, c, http.MethodGet, "namespaces", nil, nil)
}

// SetNamespace adds the rule for ns.Prefix, or replaces it, and returns
// the rules afterwards.
func (c *Client) SetNamespace(ctx context.Context, ns Namespace) (*Namespaces, error) {
	return call[Namespaces](ctx, c, http.MethodPost, "namespaces", nil, ns)
}

// DeleteNamespace removes the rule for prefix and returns the rules
// afterwards.
func (c *Client) DeleteNamespace(ctx context.Context, prefix string) (*Namespaces, error) {
	return call[Namespaces](ctx, c, http.MethodDelete, "namespaces", url.Values{"prefix": {prefix}}, nil)
}

// Snapshot makes the node snapshot one group (req.Group) or every group it
// holds a replica of.
func (c *Client) Snapshot(ctx context.Context, req SnapshotRequest) (*SnapshotReport, error) {
	if req.Timeout == 0 {
		req.Timeout = remaining(ctx)
	}
	return call[SnapshotReport](ctx, c, http.MethodPost, "snapshot", nil, req)
}
