package serverapi

import (
	"context"
	"time"
)

// DisconnectRequest closes every socket of a user, on every node.
type DisconnectRequest struct {
	User string `json:"user"`
	// Code is the close code the sockets get: 4100..4499, an
	// application's own; default 4010 (disconnected by the server).
	Code int `json:"code,omitempty"`
	// Reason is the close frame's reason, at most 123 bytes of UTF-8;
	// default "disconnected by the server".
	Reason string `json:"reason,omitempty"`
	// BlockUntil, or BlockFor seconds from now, makes every node refuse
	// the user's auth until then (at most 24 hours ahead); at most one of
	// the two.
	BlockUntil *time.Time `json:"block_until,omitempty"`
	BlockFor   int64      `json:"block_for,omitempty"`
	// Local acts on the answering node only; the node that fans a request
	// out sets it on the copies it sends.
	Local bool `json:"local,omitempty"`
}

// UnsubscribeRequest ends a user's subscriptions to a room, on every node.
type UnsubscribeRequest struct {
	User  string `json:"user"`
	Room  string `json:"room"`
	Local bool   `json:"local,omitempty"`
}

// LeaveRequest removes a user from a room's members.
type LeaveRequest struct {
	User string `json:"user"`
	Room string `json:"room"`
}

// LeaveResult is the committed leave.
type LeaveResult struct {
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
}

// RefreshRequest sets the expiry of a user's sockets, on every node, in
// place of their tokens' exp: earlier cuts them, later extends them.
type RefreshRequest struct {
	User string `json:"user"`
	// ExpireAt, or ExpireIn seconds from now (0: now), is the new expiry,
	// at most 24 hours ahead; exactly one of the two.
	ExpireAt *time.Time `json:"expire_at,omitempty"`
	ExpireIn *int64     `json:"expire_in,omitempty"`
	Local    bool       `json:"local,omitempty"`
}

// UserResult is the outcome of disconnect, unsubscribe or refresh: one
// result per node, in node order. A node that failed has Error; the
// request may be repeated for it (every user op may be repeated).
type UserResult struct {
	Nodes []NodeResult `json:"nodes"`
	// Sockets is the sum over the nodes that answered: sockets closed,
	// subscriptions ended or sockets given the new expiry.
	Sockets int `json:"sockets"`
	// BlockUntil is when a disconnect's block ends.
	BlockUntil *time.Time `json:"block_until,omitempty"`
	// ExpireAt is a refresh's expiry.
	ExpireAt *time.Time `json:"expire_at,omitempty"`
}

// NodeResult is one node's part of a user op.
type NodeResult struct {
	Node    string `json:"node"`
	Sockets int    `json:"sockets"`
	Error   *Error `json:"error,omitempty"`
}

// Failed lists the nodes that did not act.
func (r *UserResult) Failed() []NodeResult {
	var out []NodeResult
	for _, n := range r.Nodes {
		if n.Error != nil {
			out = append(out, n)
		}
	}
	return out
}

// Disconnect closes a user's sockets on every node and, with a block,
// refuses its auth until then. Check the result's Failed nodes.
func (c *Client) Disconnect(ctx context.Context, req DisconnectRequest) (*UserResult, error) {
	return call[UserResult](ctx, c, OpDisconnect, req, true)
}

// Unsubscribe ends a user's subscriptions to a room on every node. Check
// the result's Failed nodes.
func (c *Client) Unsubscribe(ctx context.Context, req UnsubscribeRequest) (*UserResult, error) {
	return call[UserResult](ctx, c, OpUnsubscribe, req, true)
}

// Leave removes a user from a room's members, as its own leave would. A
// user that is not a member is not_found; a repeat after a lost reply is
// therefore left to the caller.
func (c *Client) Leave(ctx context.Context, req LeaveRequest) (*LeaveResult, error) {
	return call[LeaveResult](ctx, c, OpLeave, req, false)
}

// Refresh sets the expiry of a user's sockets on every node. Check the
// result's Failed nodes.
func (c *Client) Refresh(ctx context.Context, req RefreshRequest) (*UserResult, error) {
	return call[UserResult](ctx, c, OpRefresh, req, true)
}
