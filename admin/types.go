package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/multiraft/meta"
)

// The API's wire types, shared by the handler and the client so that both
// sides always agree on them.

// APIError is an error the admin API answered with: the HTTP status and the
// body {"error":{"status":...,"code":...,"message":...}}. A failed job
// carries one too.
type APIError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

type errorEnvelope struct {
	Error *APIError `json:"error"`
}

// Duration is a time.Duration that travels as a Go duration string
// ("1m30s"), which operators can read and type.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is a string such as "90s" or "1h30m"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

// Health verdicts.
const (
	HealthOK          = "ok"
	HealthDegraded    = "degraded"
	HealthUnavailable = "unavailable"
)

// Health is the status endpoint's verdict on the cluster: ok, degraded
// (serving, but something needs attention) or unavailable (some rooms
// cannot be written or read), with the reasons.
type Health struct {
	Verdict string   `json:"verdict"`
	Reasons []string `json:"reasons,omitempty"`
}

// Status is the cluster as one node sees it.
type Status struct {
	// Node is the node that answered.
	Node        string `json:"node"`
	ClusterID   string `json:"cluster_id"`
	Groups      uint64 `json:"groups"`
	Replication int    `json:"replication"`
	// StateSource is "meta" when nodes and replica sets were read
	// linearizably from the meta group, "local" when the meta group could
	// not be reached and this node's possibly stale copy was used.
	StateSource string       `json:"state_source"`
	Health      Health       `json:"health"`
	Nodes       []NodeStatus `json:"nodes"`
	GroupList   []Group      `json:"group_list"`
	Rooms       RoomCount    `json:"rooms"`
	Partial     bool         `json:"partial"`
	Elapsed     Duration     `json:"elapsed"`
	Timeout     Duration     `json:"timeout"`
	Jobs        []Job        `json:"jobs,omitempty"` // running on the answering node
	Time        time.Time    `json:"time"`
}

// NodeState is a node's state in the cluster: multiraft's active or
// decommissioning.
type NodeState = meta.NodeState

// Node is the meta group's record of one node.
type Node struct {
	ID           string    `json:"id"`
	PeerAddr     string    `json:"peer_addr"`
	ClientAddr   string    `json:"client_addr,omitempty"`
	State        NodeState `json:"state"`
	Epoch        uint64    `json:"epoch"`
	LeaseExpired bool      `json:"lease_expired"`
	// Replicas is how many data groups list the node as a replica.
	Replicas int `json:"replicas"`
	// Self marks the node that answered.
	Self bool `json:"self,omitempty"`
}

// NodeStatus is a node in the status report, with how many data groups it
// leads among those whose leader answered.
type NodeStatus struct {
	Node
	Leads int `json:"leads"`
}

// Group is one raft group: the meta group (0) or a data group (1..G).
type Group struct {
	ID   uint64 `json:"id"`
	Meta bool   `json:"meta,omitempty"`
	// The leader's view; empty when the leader could not be asked (Error
	// says why).
	Leader       string    `json:"leader,omitempty"`
	Term         uint64    `json:"term,omitempty"`
	LastIndex    uint64    `json:"last_index,omitempty"`
	CommitIndex  uint64    `json:"commit_index,omitempty"`
	AppliedIndex uint64    `json:"applied_index,omitempty"`
	Replicas     []Replica `json:"replicas"`
	// Unreachable lists the followers whose heartbeats fail on the leader,
	// with how long ago each last answered it.
	Unreachable []Unreachable `json:"unreachable,omitempty"`
	// StuckAfter is the leader's bound on a follower's silence (a few
	// heartbeat timeouts): a replica silent longer is stuck.
	StuckAfter Duration `json:"stuck_after,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// Unreachable is a follower that does not answer its group's leader.
type Unreachable struct {
	Node  string   `json:"node"`
	Since Duration `json:"since"`
}

// Replica is one node's member of a group.
type Replica struct {
	Node string `json:"node"`
	// Assigned: the meta group lists the node as a replica of the group
	// (always true for the meta group's own members). Member: the leader's
	// raft configuration has it. They differ only while a move is under
	// way or was interrupted.
	Assigned bool `json:"assigned"`
	Member   bool `json:"member"`
	Voter    bool `json:"voter"`
	// Status is the replica's own report; only in status and group
	// details, not in the group list.
	Status *ReplicaStatus `json:"status,omitempty"`
}

// ReplicaStatus is what a replica reports about itself.
type ReplicaStatus struct {
	State        string `json:"state,omitempty"` // Leader, Follower, Candidate, Shutdown
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// Lag is how far the replica's applied index is behind the leader's
	// commit index.
	Lag uint64 `json:"lag"`
	// LastContact is how long ago a follower last heard from a leader,
	// measured on its own node; absent for the leader.
	LastContact Duration `json:"last_contact,omitempty"`
	// Elections is how often the replica became a candidate, and did not
	// win, in the last 20 heartbeat timeouts.
	Elections int `json:"elections,omitempty"`
	// Stuck says why the replica is cut off from its group (see the
	// health verdict); empty when it is not.
	Stuck string `json:"stuck,omitempty"`
	// Damaged says why the replica's stored data is corrupt: it serves no
	// reads and leads no more until it is rebuilt (groups repair); empty
	// when it is not.
	Damaged string `json:"damaged,omitempty"`
	Error   string `json:"error,omitempty"`
}

// RoomCount counts rooms from the local replicas of the answering node,
// read without a quorum: an approximation, and groups with no replica on
// that node are not counted.
type RoomCount struct {
	Count         int      `json:"count"`
	Approximate   bool     `json:"approximate"`
	GroupsCounted int      `json:"groups_counted"`
	GroupsTotal   uint64   `json:"groups_total"`
	Uncounted     []uint64 `json:"uncounted,omitempty"`
}

// AddNodeRequest makes the node it is sent to join a cluster.
type AddNodeRequest struct {
	// Seeds are peer addresses of nodes of the cluster.
	Seeds   []string `json:"seeds"`
	Timeout Duration `json:"timeout,omitempty"`
}

// JobRequest starts a background job.
type JobRequest struct {
	// Timeout bounds the whole job (default 1h).
	Timeout Duration `json:"timeout,omitempty"`
}

// MoveRequest moves a group's replica between nodes.
type MoveRequest struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Timeout Duration `json:"timeout,omitempty"`
}

// RepairRequest rebuilds a group's replica on a node from the others.
type RepairRequest struct {
	Node    string   `json:"node"`
	Timeout Duration `json:"timeout,omitempty"`
}

// TransferRequest hands a group's leadership to a node.
type TransferRequest struct {
	To      string   `json:"to"`
	Timeout Duration `json:"timeout,omitempty"`
}

// Move is one step of a rebalancing plan.
type Move = meta.Move

// Plan is a dry run of a rebalance: the moves an apply would start with,
// and how many replicas and leaderships each active node holds before and
// after.
type Plan struct {
	Moves    []Move            `json:"moves"`
	Replicas map[string]Counts `json:"replicas"`
	Leaders  map[string]Counts `json:"leaders"`
	// LeadersKnown is how many data groups' leaders answered; the others
	// are left out of leader balancing.
	LeadersKnown int    `json:"leaders_known"`
	Groups       uint64 `json:"groups"`
}

// Counts is a before/after pair of a plan.
type Counts struct {
	Before int `json:"before"`
	After  int `json:"after"`
}

// Job states.
const (
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCanceled  = "canceled"
)

// Job kinds.
const (
	JobRebalance    = "rebalance"
	JobDecommission = "decommission"
	JobRemove       = "remove"
)

// Job is a long operation running in the background on the node that
// accepted it.
type Job struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	State string `json:"state"`
	// Node is the node a decommission or remove is about.
	Node     string    `json:"node,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Deadline time.Time `json:"deadline"`
	// Total and Done count the job's steps: moves for a rebalance,
	// replicas to move away for a decommission or remove.
	Total int `json:"total"`
	Done  int `json:"done"`
	// Moves is a rebalance's plan; the first Done of them are done.
	Moves []Move `json:"moves,omitempty"`
	// Resumed is a move an earlier, interrupted rebalance left half done,
	// which this one finished first.
	Resumed *Move `json:"resumed,omitempty"`
	// Current is the move in progress.
	Current *Move     `json:"current,omitempty"`
	Message string    `json:"message,omitempty"`
	Error   *APIError `json:"error,omitempty"`
}

// Ended reports whether the job has stopped, whatever its outcome.
func (j *Job) Ended() bool { return j.State != JobRunning }

// RoomConfig is a room's retention and rules (fsm.RoomConfig).
type RoomConfig struct {
	HistoryMaxCount uint64   `json:"history_max_count"`
	HistoryMaxAge   Duration `json:"history_max_age"`
	KeyWindowCount  uint64   `json:"key_window_count"`
	KeyWindowAge    Duration `json:"key_window_age"`
	MembersOnly     bool     `json:"members_only"`
	// ClientPublish: sockets may publish (else only the backend may).
	ClientPublish bool `json:"client_publish"`
	// PresenceHistory: joins and leaves are events in the history (else
	// they reach live subscribers only and take no seq).
	PresenceHistory bool `json:"presence_history"`
	// MaxMembers caps the room's members; 0 means no limit.
	MaxMembers uint64 `json:"max_members"`
}

// RoomConfigChange names the fields of a room's config to change; the
// others keep their value. 0 means no limit for the count and age limits.
type RoomConfigChange struct {
	HistoryMaxCount *uint64   `json:"history_max_count,omitempty"`
	HistoryMaxAge   *Duration `json:"history_max_age,omitempty"`
	KeyWindowCount  *uint64   `json:"key_window_count,omitempty"`
	KeyWindowAge    *Duration `json:"key_window_age,omitempty"`
	MembersOnly     *bool     `json:"members_only,omitempty"`
	ClientPublish   *bool     `json:"client_publish,omitempty"`
	PresenceHistory *bool     `json:"presence_history,omitempty"`
	MaxMembers      *uint64   `json:"max_members,omitempty"`
}

// Namespace is a rule giving every room whose name starts with Prefix the
// config fields it sets. The longest matching prefix is a room's rule; the
// fields that rule does not set have their built-in defaults, and a room's
// own config (rooms/{room}/config) overrides it field by field. "" matches
// every room: the rule for rooms no other prefix matches.
type Namespace struct {
	Prefix string `json:"prefix"`
	RoomConfigChange
}

// Namespaces is the cluster's namespace rules, sorted by prefix. Revision
// is the meta group index that last changed them; every data group
// applies them once its leader has carried that revision into its log.
type Namespaces struct {
	Revision   uint64      `json:"revision"`
	Namespaces []Namespace `json:"namespaces"`
}

// Room is a room's state, read linearizably.
type Room struct {
	Room    string `json:"room"`
	Group   uint64 `json:"group"`
	Epoch   uint64 `json:"epoch"`
	LastSeq uint64 `json:"last_seq"`
	// FirstSeq is the first seq still in history; above LastSeq the
	// history is empty.
	FirstSeq    uint64 `json:"first_seq"`
	MemberCount int    `json:"member_count"`
	// Config is what the room follows: its namespace's rule with the
	// room's own settings, named by OwnSettings, on top.
	Config      RoomConfig `json:"config"`
	OwnSettings []string   `json:"own_settings,omitempty"`
	Members     []Member   `json:"members"`
	// MembersTruncated: only the first MaxMembersShown members are listed.
	MembersTruncated bool `json:"members_truncated,omitempty"`
}

// MaxMembersShown caps the members a room reply lists.
const MaxMembersShown = 1000

// Member is one member of a room. Meta is the app's presence data: as text
// when it is valid UTF-8, else in MetaBase64.
type Member struct {
	Name       string `json:"name"`
	Meta       string `json:"meta,omitempty"`
	MetaBase64 []byte `json:"meta_base64,omitempty"`
	Ephemeral  bool   `json:"ephemeral"`
	NodeID     string `json:"node_id,omitempty"`
	NodeEpoch  uint64 `json:"node_epoch,omitempty"`
	JoinedSeq  uint64 `json:"joined_seq"`
}

// RoomDeleted is the reply to a room delete: the incarnation that ended.
type RoomDeleted struct {
	Room    string `json:"room"`
	Group   uint64 `json:"group"`
	Epoch   uint64 `json:"epoch"`
	LastSeq uint64 `json:"last_seq"`
}

// SnapshotRequest asks for raft snapshots of one group (Group set) or of
// every group with a replica on the node.
type SnapshotRequest struct {
	Group   *uint64  `json:"group,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// SnapshotReport says what each snapshot did.
type SnapshotReport struct {
	Node   string           `json:"node"`
	Groups []SnapshotResult `json:"groups"`
	Failed int              `json:"failed"`
}

// SnapshotResult is one group's snapshot: taken up to at least
// AppliedIndex, or Error.
type SnapshotResult struct {
	Group        uint64   `json:"group"`
	AppliedIndex uint64   `json:"applied_index"`
	Elapsed      Duration `json:"elapsed"`
	Error        string   `json:"error,omitempty"`
}
