package multiraft

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/raft"
)

// MetaGroup is the id of the group that holds the cluster's own state.
const MetaGroup uint64 = 0

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

// expireTarget is the epoch below which the node's ephemeral state must go:
// every epoch older than the current one, and the current one too once its
// lease has expired.
func (n *NodeInfo) expireTarget() uint64 {
	if n.LeaseExpired {
		return n.Epoch + 1
	}
	return n.Epoch
}

// ClusterState is the content of the meta group. Values handed out by
// MetaFSM.State are copies the caller may keep.
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

// Meta command ops. The encoding is JSON with a version field: the meta
// group sees a few entries per second at most, and readable entries help
// operators debugging a cluster.
const (
	metaOpInit         = "init"
	metaOpRegister     = "register"
	metaOpSetState     = "set_state"
	metaOpSetReplicas  = "set_replicas"
	metaOpLeaseExpired = "lease_expired"
	metaOpExpired      = "expired"
	metaOpRemoveNode   = "remove_node"
	metaOpBeginOp      = "begin_op"
	metaOpEndOp        = "end_op"
	metaOpSetSettings  = "set_app_settings"
)

const metaCommandVersion = 1

type metaCommand struct {
	V  int    `json:"v"`
	Op string `json:"op"`

	ClusterID   string              `json:"cluster_id,omitempty"`
	Groups      uint64              `json:"groups,omitempty"`
	Replication int                 `json:"replication,omitempty"`
	Nodes       []NodeInfo          `json:"nodes,omitempty"`
	Placement   map[uint64][]string `json:"placement,omitempty"`

	Node   *NodeInfo `json:"node,omitempty"`
	NodeID string    `json:"node_id,omitempty"`
	State  NodeState `json:"state,omitempty"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Before uint64    `json:"before,omitempty"`

	Group    uint64   `json:"group,omitempty"`
	Replicas []string `json:"replicas,omitempty"`
	// Expect makes set_replicas a compare-and-set, so two executors (or a
	// resumed one) cannot undo each other's steps.
	Expect []string `json:"expect,omitempty"`

	// OpID is the group operation a set_replicas or end_op belongs to: while
	// a group has a record, only its own operation may change the group's
	// replicas. End makes set_replicas also clear the record, so the last
	// step of a move and its end are one entry.
	OpID uint64 `json:"op_id,omitempty"`
	End  bool   `json:"end,omitempty"`
	// Begin is the record a begin_op asks for (ID and Started come from
	// the entry); TakeOver names the abandoned record it replaces.
	Begin    *GroupOp `json:"begin,omitempty"`
	TakeOver uint64   `json:"take_over,omitempty"`

	// Settings are the application settings of init and set_app_settings;
	// set_app_settings replaces them only while they are still those of
	// ExpectIndex, so that two read-modify-writes cannot lose one's change.
	Settings    json.RawMessage `json:"settings,omitempty"`
	ExpectIndex uint64          `json:"expect_index,omitempty"`
}

func encodeMeta(c metaCommand) []byte {
	c.V = metaCommandVersion
	b, err := json.Marshal(c)
	if err != nil {
		// Only plain data types are marshalled; failure is a programming error.
		panic(fmt.Sprintf("multiraft: encode meta command: %v", err))
	}
	return b
}

// MetaResult is what applying a meta command returns.
type MetaResult struct {
	Epoch uint64 `json:"epoch,omitempty"` // register: the node's new epoch
	Err   string `json:"err,omitempty"`   // why the command was refused; state unchanged
	// Op is, for begin_op, the record now standing: the new one, or the
	// one that made the command fail.
	Op *GroupOp `json:"op,omitempty"`
	// Index is, for set_app_settings, the entry's index: the settings'
	// new AppSettingsIndex.
	Index uint64 `json:"index,omitempty"`
}

// ErrMetaConflict is the error of a meta command refused by the state it
// met (a compare-and-set that lost, an unknown node).
var ErrMetaConflict = errors.New("multiraft: meta command refused")

func (r *MetaResult) err() error {
	if r == nil || r.Err == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrMetaConflict, r.Err)
}

// MetaFSM is the state machine of the meta group. It keeps the whole
// cluster state in memory (it is small: nodes and replica sets) and relies
// on raft snapshots and log replay for durability.
type MetaFSM struct {
	mu      sync.Mutex    // guards state and changed
	state   *ClusterState // handed out only as clones
	changed chan struct{} // closed and replaced on every applied entry
}

func newMetaFSM() *MetaFSM {
	return &MetaFSM{state: emptyClusterState(), changed: make(chan struct{})}
}

func emptyClusterState() *ClusterState {
	return &ClusterState{Nodes: map[string]*NodeInfo{}, Replicas: map[uint64][]string{}}
}

// State returns a copy of the current state and a channel closed at the
// next change.
func (m *MetaFSM) State() (*ClusterState, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), m.changed
}

// AppliedIndex is the last meta log index applied.
func (m *MetaFSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Index
}

// Apply implements raft.FSM.
func (m *MetaFSM) Apply(l *raft.Log) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.Type != raft.LogCommand {
		return nil
	}
	var res *MetaResult
	var c metaCommand
	if err := json.Unmarshal(l.Data, &c); err != nil {
		res = &MetaResult{Err: "undecodable meta command: " + err.Error()}
	} else if c.V != metaCommandVersion {
		res = &MetaResult{Err: fmt.Sprintf("meta command version %d is not known to this node", c.V)}
	} else {
		res = m.state.apply(&c, l.Index)
	}
	m.state.Index = l.Index
	close(m.changed)
	m.changed = make(chan struct{})
	return res
}

func (s *ClusterState) apply(c *metaCommand, index uint64) *MetaResult {
	refuse := func(format string, a ...any) *MetaResult { return &MetaResult{Err: fmt.Sprintf(format, a...)} }
	switch c.Op {
	case metaOpInit:
		if s.Initialized() {
			return refuse("cluster %s is already initialized", s.ClusterID)
		}
		if c.ClusterID == "" || c.Groups == 0 || c.Replication <= 0 {
			return refuse("init needs a cluster id, groups and replication")
		}
		s.ClusterID, s.Groups, s.Replication = c.ClusterID, c.Groups, c.Replication
		for _, n := range c.Nodes {
			// Epoch 0: the node's first register gives it one, and
			// there is nothing older to expire.
			n.State, n.Epoch = NodeActive, 0
			cp := n
			s.Nodes[n.ID] = &cp
		}
		for g, r := range c.Placement {
			s.Replicas[g] = slices.Clone(r)
		}
		if len(c.Settings) > 0 {
			s.AppSettings, s.AppSettingsIndex = slices.Clone(c.Settings), index
		}
	case metaOpSetSettings:
		if !s.Initialized() {
			return refuse("the cluster is not initialized yet")
		}
		if s.AppSettingsIndex != c.ExpectIndex {
			return refuse("the settings changed at index %d since they were read at index %d; read them again", s.AppSettingsIndex, c.ExpectIndex)
		}
		s.AppSettings, s.AppSettingsIndex = slices.Clone(c.Settings), index
		return &MetaResult{Index: index}
	case metaOpRegister:
		if c.Node == nil || c.Node.ID == "" || c.Node.PeerAddr == "" {
			return refuse("register needs a node id and peer address")
		}
		if !s.Initialized() {
			// init would overwrite the registration; the node retries.
			return refuse("the cluster is not initialized yet")
		}
		n, ok := s.Nodes[c.Node.ID]
		if !ok {
			n = &NodeInfo{ID: c.Node.ID, State: NodeActive}
			s.Nodes[n.ID] = n
		}
		n.PeerAddr, n.ClientAddr = c.Node.PeerAddr, c.Node.ClientAddr
		if n.Epoch == 0 {
			// A node's first process owned nothing before now.
			n.ExpiredBefore = index
		}
		n.Epoch, n.LeaseExpired = index, false
		return &MetaResult{Epoch: index}
	case metaOpSetState:
		n, ok := s.Nodes[c.NodeID]
		if !ok {
			return refuse("node %q is not in the cluster", c.NodeID)
		}
		if c.State != NodeActive && c.State != NodeDecommissioning {
			return refuse("unknown node state %q", c.State)
		}
		n.State = c.State
	case metaOpSetReplicas:
		if c.Group == MetaGroup || c.Group > s.Groups {
			return refuse("group %d is not a data group of this cluster", c.Group)
		}
		switch o := s.Ops[c.Group]; {
		case o == nil && c.OpID != 0:
			return refuse("operation %d of group %d is no longer in progress", c.OpID, c.Group)
		case o != nil && o.ID != c.OpID:
			r := refuse("group %d has a replica change in progress: %v", c.Group, o)
			cp := *o
			r.Op = &cp
			return r
		}
		if !slices.Equal(s.Replicas[c.Group], c.Expect) {
			return refuse("group %d replicas are %v, not %v", c.Group, s.Replicas[c.Group], c.Expect)
		}
		for _, id := range c.Replicas {
			if _, ok := s.Nodes[id]; !ok {
				return refuse("node %q is not in the cluster", id)
			}
		}
		s.Replicas[c.Group] = slices.Clone(c.Replicas)
		if c.End {
			delete(s.Ops, c.Group)
		}
	case metaOpBeginOp:
		if c.Group == MetaGroup || c.Group > s.Groups {
			return refuse("group %d is not a data group of this cluster", c.Group)
		}
		b := c.Begin
		if b == nil || b.Owner == "" || (b.Kind != OpMove && b.Kind != OpRepair) {
			return refuse("begin_op needs a kind and an owner")
		}
		if _, ok := s.Nodes[b.Owner]; !ok {
			return refuse("node %q is not in the cluster", b.Owner)
		}
		cur := s.Ops[c.Group]
		if cur != nil && cur.ID != c.TakeOver {
			r := refuse("group %d has a replica change in progress: %v", c.Group, cur)
			cp := *cur
			r.Op = &cp
			return r
		}
		if cur == nil && c.TakeOver != 0 {
			return refuse("operation %d of group %d has ended", c.TakeOver, c.Group)
		}
		op := &GroupOp{ID: index, Kind: b.Kind, From: b.From, To: b.To, Owner: b.Owner, OwnerEpoch: b.OwnerEpoch, Started: index}
		if cur != nil {
			op.Started, op.TakenOver = cur.Started, cur.TakenOver+1
		}
		if s.Ops == nil {
			s.Ops = map[uint64]*GroupOp{}
		}
		s.Ops[c.Group] = op
		cp := *op
		return &MetaResult{Op: &cp}
	case metaOpEndOp:
		if o := s.Ops[c.Group]; o == nil || o.ID != c.OpID {
			return refuse("operation %d of group %d is no longer in progress", c.OpID, c.Group)
		}
		delete(s.Ops, c.Group)
	case metaOpLeaseExpired:
		n, ok := s.Nodes[c.NodeID]
		if !ok || n.Epoch != c.Epoch {
			return refuse("node %q is not at epoch %d", c.NodeID, c.Epoch)
		}
		n.LeaseExpired = true
	case metaOpExpired:
		n, ok := s.Nodes[c.NodeID]
		if !ok {
			return refuse("node %q is not in the cluster", c.NodeID)
		}
		n.ExpiredBefore = max(n.ExpiredBefore, c.Before)
	case metaOpRemoveNode:
		if _, ok := s.Nodes[c.NodeID]; !ok {
			return refuse("node %q is not in the cluster", c.NodeID)
		}
		if gs := s.GroupsOf(c.NodeID); len(gs) > 0 {
			return refuse("node %q still holds replicas of %d groups; move them first", c.NodeID, len(gs))
		}
		delete(s.Nodes, c.NodeID)
		if s.Removed == nil {
			s.Removed = map[string]uint64{}
		}
		s.Removed[c.NodeID] = index
	default:
		return refuse("unknown meta op %q", c.Op)
	}
	return &MetaResult{}
}

// Snapshot implements raft.FSM.
func (m *MetaFSM) Snapshot() (raft.FSMSnapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := json.Marshal(m.state)
	if err != nil {
		return nil, fmt.Errorf("multiraft: snapshot meta state: %w", err)
	}
	return metaSnapshot(b), nil
}

// Restore implements raft.FSM.
func (m *MetaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return fmt.Errorf("multiraft: read meta snapshot: %w", err)
	}
	s := emptyClusterState()
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("multiraft: decode meta snapshot: %w", err)
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeInfo{}
	}
	if s.Replicas == nil {
		s.Replicas = map[uint64][]string{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = s
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

type metaSnapshot []byte

func (s metaSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s metaSnapshot) Release() {}
