package serverapi

import (
	"encoding/json"
	"fmt"
	"time"
)

// Prefix is the path under which a node serves the server API.
const Prefix = "/api/v1/"

// Ops of the server API; each is POST Prefix+op with a JSON body.
const (
	OpPublish       = "publish"
	OpBroadcast     = "broadcast"
	OpHistory       = "history"
	OpMembers       = "members"
	OpPresenceStats = "presence_stats"
	OpRooms         = "rooms"
	OpInfo          = "info"
	OpDisconnect    = "disconnect"
	OpUnsubscribe   = "unsubscribe"
	OpLeave         = "leave"
	OpRefresh       = "refresh"
)

// Ops lists every op, in the order docs/server-api.md describes them.
var Ops = []string{OpPublish, OpBroadcast, OpHistory, OpMembers, OpPresenceStats, OpRooms, OpInfo,
	OpDisconnect, OpUnsubscribe, OpLeave, OpRefresh}

// Consistency of a read: "" or "linearizable" (every write acknowledged
// before the read), or "stale" (whichever replica answers, maybe behind).
const (
	Linearizable = "linearizable"
	Stale        = "stale"
)

// PublishRequest appends a message to a room.
type PublishRequest struct {
	Room string `json:"room"`
	// Data is the message: any JSON value, at most the node's max_data.
	Data json.RawMessage `json:"data"`
	// Key makes the publish exactly-once within the room's key window: a
	// retry with the same key returns the first one's seq with Duplicate.
	Key string `json:"key,omitempty"`
	// ExpectSeq appends only if the room's last seq is this.
	ExpectSeq *uint64 `json:"expect_seq,omitempty"`
	// As is the member the message is from (default "@server"); in a
	// members-only room it must have joined.
	As string `json:"as,omitempty"`
}

// PublishResult is a committed publish.
type PublishResult struct {
	Seq       uint64 `json:"seq"`
	Epoch     string `json:"epoch"`
	Duplicate bool   `json:"duplicate"`
}

// BroadcastRequest publishes one message to many rooms. Each room's
// publish is its own commit: some may succeed while others fail.
type BroadcastRequest struct {
	Rooms []string        `json:"rooms"`
	Data  json.RawMessage `json:"data"`
	// Key is every room's publish key (key windows are per room), so a
	// retried broadcast appends nowhere twice.
	Key string `json:"key,omitempty"`
	As  string `json:"as,omitempty"`
}

// BroadcastResult has one result per requested room, in request order.
type BroadcastResult struct {
	Results []RoomResult `json:"results"`
}

// RoomResult is one room's publish of a broadcast: Error, or the rest.
type RoomResult struct {
	Room      string `json:"room"`
	Seq       uint64 `json:"seq,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     *Error `json:"error,omitempty"`
}

// HistoryRequest reads a page of a room's events.
type HistoryRequest struct {
	Room string `json:"room"`
	// FromSeq is the first seq wanted (default: the first retained).
	FromSeq *uint64 `json:"from_seq,omitempty"`
	// Limit is the most events (default 100, at most 1000); a page also
	// stops at the node's max_page_bytes.
	Limit       int    `json:"limit,omitempty"`
	Consistency string `json:"consistency,omitempty"`
}

// HistoryResult is a page of events in seq order, without gaps.
type HistoryResult struct {
	Events   []Event `json:"events"`
	FirstSeq uint64  `json:"first_seq"`
	LastSeq  uint64  `json:"last_seq"`
	Epoch    string  `json:"epoch"`
	// More says the room had events after the page.
	More bool `json:"more,omitempty"`
	// Truncated says FromSeq was below the retained history.
	Truncated bool `json:"truncated,omitempty"`
	Stale     bool `json:"stale,omitempty"`
}

// Event is a room event as protocol herald.v1 pushes it.
type Event struct {
	Room   string          `json:"room"`
	Epoch  string          `json:"epoch"`
	Seq    uint64          `json:"seq"`
	Type   string          `json:"type"` // message, join or leave
	Member string          `json:"member"`
	Data   json.RawMessage `json:"data"`
	TS     time.Time       `json:"ts"`
}

// RoomRead names a room to read: members and presence_stats.
type RoomRead struct {
	Room        string `json:"room"`
	Consistency string `json:"consistency,omitempty"`
}

// MembersResult is a room's members at one seq.
type MembersResult struct {
	Members []Member `json:"members"`
	Seq     uint64   `json:"seq"`
	Epoch   string   `json:"epoch"`
	Stale   bool     `json:"stale,omitempty"`
}

// Member is one member of a room, with the meta of its latest join.
type Member struct {
	Member    string          `json:"member"`
	Meta      json.RawMessage `json:"meta"`
	JoinedSeq uint64          `json:"joined_seq"`
}

// PresenceStats counts a room's members.
type PresenceStats struct {
	// Members is the room's members: users, however many sockets each.
	Members int `json:"members"`
	// SocketMembers is the members held by an open socket (they leave
	// when it closes); the rest were joined otherwise.
	SocketMembers int    `json:"socket_members"`
	Seq           uint64 `json:"seq"`
	Epoch         string `json:"epoch"`
	Stale         bool   `json:"stale,omitempty"`
}

// RoomsRequest lists rooms by name.
type RoomsRequest struct {
	// Prefix keeps the rooms whose names start with it.
	Prefix string `json:"prefix,omitempty"`
	// After is the cursor: the Next of the previous page.
	After string `json:"after,omitempty"`
	// Limit is the most rooms (default 100, at most 1000).
	Limit       int    `json:"limit,omitempty"`
	Consistency string `json:"consistency,omitempty"`
}

// RoomsResult is a page of rooms in name order (bytewise).
type RoomsResult struct {
	Rooms []RoomSummary `json:"rooms"`
	// Next, when set, is the After of the next page.
	Next  string `json:"next,omitempty"`
	Stale bool   `json:"stale,omitempty"`
}

// RoomSummary is one room of a listing.
type RoomSummary struct {
	Room        string `json:"room"`
	Epoch       string `json:"epoch"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	MemberCount int    `json:"member_count"`
}

// InfoResult describes the cluster as the answering node knows it.
type InfoResult struct {
	Node      string `json:"node"`
	ClusterID string `json:"cluster_id"`
	Nodes     []Node `json:"nodes"`
}

// Node is one node of the cluster.
type Node struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	ClientURL    string `json:"client_url,omitempty"`
	WebsocketURL string `json:"websocket_url,omitempty"`
	LeaseExpired bool   `json:"lease_expired,omitempty"`
}

// Error is a failure as the server API reports it: the codes and
// retryable of protocol herald.v1 (docs/protocol.md#errors).
type Error struct {
	// Status is the HTTP status it came with (0 inside a broadcast's
	// results).
	Status    int    `json:"-"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	// LastSeq goes with conflict: the room's last seq.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// RetryAfterMS goes with rate_limited.
	RetryAfterMS uint64 `json:"retry_after_ms,omitempty"`
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
	}
	return e.Code + ": " + e.Message
}

// ErrorReply is the body of every failed request.
type ErrorReply struct {
	Error *Error `json:"error"`
}
