package meta

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
)

// Group is the id of the meta group; data groups are 1..ClusterState.Groups.
const Group uint64 = 0

// NodeState is where a node is in its life in the cluster.
type NodeState string

// Node states. A decommissioning node keeps serving until its replicas have
// moved away; a removed node is forgotten by the meta group.
const (
	NodeActive          NodeState = "active"
	NodeDecommissioning NodeState = "decommissioning"
)

// NodeInfo is the meta group's record of one node.
type NodeInfo struct {
	ID         string    `json:"id"`
	PeerAddr   string    `json:"peer_addr"`
	ClientAddr string    `json:"client_addr,omitempty"`
	State      NodeState `json:"state"`
	// Epoch is the log index of the entry that registered the node's
	// current process; a restarted node gets a new, larger epoch, so state
	// owned by an older process (ephemeral members) can be told apart.
	Epoch uint64 `json:"epoch"`
	// LeaseExpired says the current epoch's lease ran out.
	LeaseExpired bool `json:"lease_expired,omitempty"`
	// ExpiredBefore: every data group has dropped the ephemeral state of
	// this node's epochs below this value.
	ExpiredBefore uint64 `json:"expired_before,omitempty"`
}

// ExpireTarget is the epoch below which the node's ephemeral state must go:
// every epoch older than the current one, and the current one too once its
// lease has expired.
func (n *NodeInfo) ExpireTarget() uint64 {
	if n.LeaseExpired {
		return n.Epoch + 1
	}
	return n.Epoch
}

// ClusterState is the content of the meta group. Values handed out by
// FSM.State are copies the caller may keep.
type ClusterState struct {
	ClusterID   string               `json:"cluster_id"`
	Groups      uint64               `json:"groups"`      // data groups are 1..Groups
	Replication int                  `json:"replication"` // replicas per data group wanted
	Nodes       map[string]*NodeInfo `json:"nodes"`
	// Replicas lists, per data group, the nodes that hold (or are being
	// given) a replica. The first is the preferred leader.
	Replicas map[uint64][]string `json:"replicas"`
	// Removed maps the id of every node removed from the cluster to the
	// meta index that removed it: the identity is refused on the peer port
	// and cannot register again, so a stale process cannot come back.
	Removed map[string]uint64 `json:"removed,omitempty"`
	// Ops holds, per data group, the replica change in progress. Changes
	// to one group's replicas are serialized through it: a second move of
	// the group is refused while a record stands, and a record whose owner
	// is gone is taken over by the meta leader, which finishes or rolls it
	// back. Absent in states written before records existed.
	Ops map[uint64]*GroupOp `json:"ops,omitempty"`
	// AppSettings is the application's cluster-wide settings, opaque to
	// the host; AppSettingsIndex is the meta index that last set them (0:
	// never), which orders versions of them. The application carries them
	// into its data groups' logs itself (a data group cannot read the meta
	// group while it applies). Absent in states written before they existed.
	AppSettings      json.RawMessage `json:"app_settings,omitempty"`
	AppSettingsIndex uint64          `json:"app_settings_index,omitempty"`
	Index            uint64          `json:"index"` // last applied meta log index
}

// Replica change kinds.
const (
	// OpMove moves a replica from From to To (Host.MoveReplica).
	OpMove = "move"
	// OpRepair makes a group's raft configuration and replica list agree
	// again; the meta leader's reconciler runs it.
	OpRepair = "repair"
)

// GroupOp is the meta group's record of a change to one group's replicas.
type GroupOp struct {
	// ID is the meta index of the entry that began (or took over) the
	// operation: unique, and assigned by the log, not by the proposer.
	ID   uint64 `json:"id"`
	Kind string `json:"kind"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Owner runs the operation, as the process registered under
	// OwnerEpoch: once that node has a newer epoch, an expired lease or is
	// gone, nobody runs it any more.
	Owner      string `json:"owner"`
	OwnerEpoch uint64 `json:"owner_epoch"`
	// Started is the meta index of the first begin; a takeover keeps it.
	Started uint64 `json:"started"`
	// TakenOver counts the owners that took over an abandoned record.
	TakenOver int `json:"taken_over,omitempty"`
}

func (o *GroupOp) String() string {
	if o.Kind == OpMove {
		return fmt.Sprintf("operation %d: move from %s to %s, run by %s", o.ID, o.From, o.To, o.Owner)
	}
	return fmt.Sprintf("operation %d: %s, run by %s", o.ID, o.Kind, o.Owner)
}

// NewState returns the state of a meta group that has applied nothing.
func NewState() *ClusterState {
	return &ClusterState{Nodes: map[string]*NodeInfo{}, Replicas: map[uint64][]string{}}
}

// MaxGroups bounds the data groups of a cluster: its state and the
// requests that fan out over its groups are sized by the count.
const MaxGroups = 1 << 16

// DecodeState decodes a state as snapshots and the meta state service
// write it (JSON); maps absent from it come back empty, not nil. A state
// that no meta group can hold (a null node or operation, more groups than
// MaxGroups) is an error: it comes from a peer or a snapshot file, and
// every reader of the state takes its entries as present.
func DecodeState(b []byte) (*ClusterState, error) {
	s := NewState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, err
	}
	if s.Groups > MaxGroups {
		return nil, fmt.Errorf("meta: state of %d data groups, more than a cluster may have (%d)", s.Groups, MaxGroups)
	}
	for id, n := range s.Nodes {
		if n == nil {
			return nil, fmt.Errorf("meta: state holds node %q without its record", id)
		}
	}
	for g, o := range s.Ops {
		if o == nil {
			return nil, fmt.Errorf("meta: state holds an operation on group %d without its record", g)
		}
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeInfo{}
	}
	if s.Replicas == nil {
		s.Replicas = map[uint64][]string{}
	}
	return s, nil
}

// Initialized reports whether the cluster was bootstrapped into this state.
func (s *ClusterState) Initialized() bool { return s != nil && s.ClusterID != "" }

// Clone returns a deep copy.
func (s *ClusterState) Clone() *ClusterState {
	c := &ClusterState{ClusterID: s.ClusterID, Groups: s.Groups, Replication: s.Replication, Index: s.Index,
		Nodes: make(map[string]*NodeInfo, len(s.Nodes)), Replicas: make(map[uint64][]string, len(s.Replicas)),
		AppSettings: slices.Clone(s.AppSettings), AppSettingsIndex: s.AppSettingsIndex}
	for id, n := range s.Nodes {
		cp := *n
		c.Nodes[id] = &cp
	}
	for g, r := range s.Replicas {
		c.Replicas[g] = slices.Clone(r)
	}
	if len(s.Removed) > 0 {
		c.Removed = maps.Clone(s.Removed)
	}
	if len(s.Ops) > 0 {
		c.Ops = make(map[uint64]*GroupOp, len(s.Ops))
		for g, o := range s.Ops {
			cp := *o
			c.Ops[g] = &cp
		}
	}
	return c
}

// NodeIDs returns the ids of known nodes, sorted.
func (s *ClusterState) NodeIDs() []string {
	ids := make([]string, 0, len(s.Nodes))
	for id := range s.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// GroupsOf returns the data groups that list node as a replica, sorted.
func (s *ClusterState) GroupsOf(node string) []uint64 {
	var out []uint64
	for g, r := range s.Replicas {
		if slices.Contains(r, node) {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out
}
