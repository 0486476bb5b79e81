package meta

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is the state machine of the meta group. It keeps the whole
// cluster state in memory (it is small: nodes and replica sets) and relies
// on raft snapshots and log replay for durability.
type FSM struct {
	mu      sync.Mutex    // guards state and changed
	state   *ClusterState // handed out only as clones
	changed chan struct{} // closed and replaced on every applied entry
}

// NewFSM returns the state machine of a meta replica that has applied
// nothing; raft restores or replays its state.
func NewFSM() *FSM {
	return &FSM{state: NewState(), changed: make(chan struct{})}
}

// State returns a copy of the current state and a channel closed at the
// next change.
func (m *FSM) State() (*ClusterState, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), m.changed
}

// AppliedIndex is the last meta log index applied.
func (m *FSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Index
}

// Apply implements raft.FSM.
func (m *FSM) Apply(l *raft.Log) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.Type != raft.LogCommand {
		return nil
	}
	var res *Result
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		res = &Result{Err: "undecodable meta command: " + err.Error()}
	} else if c.V != commandVersion {
		res = &Result{Err: fmt.Sprintf("meta command version %d is not known to this node", c.V)}
	} else {
		res = m.state.apply(&c, l.Index)
	}
	m.state.Index = l.Index
	close(m.changed)
	m.changed = make(chan struct{})
	return res
}

func (s *ClusterState) apply(c *command, index uint64) *Result {
	refuse := func(format string, a ...any) *Result { return &Result{Err: fmt.Sprintf(format, a...)} }
	switch c.Op {
	case opInit:
		if s.Initialized() {
			return refuse("cluster %s is already initialized", s.ClusterID)
		}
		if c.ClusterID == "" || c.Groups == 0 || c.Replication <= 0 {
			return refuse("init needs a cluster id, groups and replication")
		}
		if c.Groups > MaxGroups {
			return refuse("init of %d data groups: a cluster has at most %d", c.Groups, MaxGroups)
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
	case opSetSettings:
		if !s.Initialized() {
			return refuse("the cluster is not initialized yet")
		}
		if s.AppSettingsIndex != c.ExpectIndex {
			return refuse("the settings changed at index %d since they were read at index %d; read them again", s.AppSettingsIndex, c.ExpectIndex)
		}
		s.AppSettings, s.AppSettingsIndex = slices.Clone(c.Settings), index
		return &Result{Index: index}
	case opRegister:
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
		return &Result{Epoch: index}
	case opSetState:
		n, ok := s.Nodes[c.NodeID]
		if !ok {
			return refuse("node %q is not in the cluster", c.NodeID)
		}
		if c.State != NodeActive && c.State != NodeDecommissioning {
			return refuse("unknown node state %q", c.State)
		}
		n.State = c.State
	case opSetReplicas:
		if c.Group == Group || c.Group > s.Groups {
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
	case opBeginOp:
		if c.Group == Group || c.Group > s.Groups {
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
		return &Result{Op: &cp}
	case opEndOp:
		if o := s.Ops[c.Group]; o == nil || o.ID != c.OpID {
			return refuse("operation %d of group %d is no longer in progress", c.OpID, c.Group)
		}
		delete(s.Ops, c.Group)
	case opLeaseExpired:
		n, ok := s.Nodes[c.NodeID]
		if !ok || n.Epoch != c.Epoch {
			return refuse("node %q is not at epoch %d", c.NodeID, c.Epoch)
		}
		n.LeaseExpired = true
	case opExpired:
		n, ok := s.Nodes[c.NodeID]
		if !ok {
			return refuse("node %q is not in the cluster", c.NodeID)
		}
		n.ExpiredBefore = max(n.ExpiredBefore, c.Before)
	case opRemoveNode:
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
	return &Result{}
}

// Snapshot implements raft.FSM.
func (m *FSM) Snapshot() (raft.FSMSnapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := json.Marshal(m.state)
	if err != nil {
		return nil, fmt.Errorf("multiraft: snapshot meta state: %w", err)
	}
	return metaSnapshot(b), nil
}

// Restore implements raft.FSM.
func (m *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return fmt.Errorf("multiraft: read meta snapshot: %w", err)
	}
	s, err := DecodeState(b)
	if err != nil {
		return fmt.Errorf("multiraft: decode meta snapshot: %w", err)
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
