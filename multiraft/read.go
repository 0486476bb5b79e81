package multiraft

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/meta"
)

// Consistency says what a read may return.
type Consistency int

const (
	// Linearizable reads see every write acknowledged before the read
	// began, wherever it was made. They need a leader and a quorum.
	Linearizable Consistency = iota
	// Stale reads see whatever the local replica has applied: no quorum,
	// no leader needed, but possibly behind. Callers must say so to their
	// users.
	Stale
)

// Read runs fn on the local replica's state machine of a data group.
// Linearizable reads first obtain a read index from the group's leader
// (this node's replica, or the leader's node over the peer port) and wait
// until the local replica has applied it, so followers serve them too.
// ErrNoReplica means the node has no replica: send the read to one that
// does.
func (h *Host) Read(ctx context.Context, group uint64, c Consistency, fn func(sm StateMachine) error) error {
	rep := h.replica(group)
	if rep == nil || group == MetaGroup {
		return h.noReplica(group)
	}
	sm, ok := rep.fsm.(StateMachine)
	if !ok {
		return h.noReplica(group)
	}
	if reason := h.damage.reason(group); reason != "" {
		return h.damagedRead(group, reason)
	}
	if c == Linearizable && (plantedStaleRead == nil || !plantedStaleRead()) {
		ctx, cancel := h.withTimeout(ctx)
		defer cancel()
		if err := h.syncRead(ctx, rep); err != nil {
			return err
		}
	}
	return fn(sm)
}

var plantedStaleRead func() bool // see jepsenbug_staleread.go

// syncRead waits until rep has applied everything committed before now.
func (h *Host) syncRead(ctx context.Context, rep *replica) error {
	var index uint64
	if rep.raft.State() == raft.Leader {
		i, err := rep.readIndex(ctx)
		if err == nil {
			index = i
		}
	}
	if index != 0 {
		return rep.waitApplied(ctx, index)
	}
	b, err := h.route(ctx, rep.group, svcReadIndex, nil, false)
	if err != nil {
		return err
	}
	if index, err = getIndex(b); err != nil {
		return err
	}
	// A follower learns commits only with the leader's next append, which
	// in an idle group comes a CommitTimeout later. If the index does not
	// arrive soon, have the leader commit a barrier: its append carries
	// the commit index along.
	soon, cancel := context.WithTimeout(ctx, followerReadPatience)
	err = rep.waitApplied(soon, index)
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	if _, err := h.route(ctx, rep.group, svcBarrier, nil, false); err != nil {
		return err
	}
	return rep.waitApplied(ctx, index)
}

// followerReadPatience is how long a follower waits for a read index by
// itself before it asks the leader for a barrier. Under load appends come
// far more often; when idle, one barrier is cheaper than waiting.
const followerReadPatience = 20 * time.Millisecond

func (h *Host) handleBarrier(ctx context.Context, _ string, group uint64, _ []byte) ([]byte, error) {
	rep := h.replica(group)
	if rep == nil {
		return errReply(h.noReplica(group)), nil
	}
	if rep.raft.State() != raft.Leader {
		return errReply(rep.notLeader()), nil
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	release, err := rep.enterLog(ctx)
	if err != nil {
		return errReply(err), nil
	}
	defer release()
	if err := waitFuture(ctx, rep.raft.Barrier(timeout)); err != nil {
		return errReply(rep.raftError(err, false)), nil
	}
	return okReply(nil), nil
}

func (h *Host) handleReadIndex(ctx context.Context, _ string, group uint64, _ []byte) ([]byte, error) {
	rep := h.replica(group)
	if rep == nil {
		return errReply(h.noReplica(group)), nil
	}
	i, err := rep.readIndex(ctx)
	if err != nil {
		return errReply(err), nil
	}
	return okReply(putIndex(i)), nil
}

// MetaState reads the cluster state linearizably from the meta group.
func (h *Host) MetaState(ctx context.Context) (*meta.ClusterState, error) {
	ctx, cancel := h.withTimeout(ctx)
	defer cancel()
	// A local replica cut off from its leader would only wait for entries
	// that do not come, spending the time the leader's answer needs.
	if rep := h.replica(MetaGroup); rep != nil && !rep.health.cutOff(rep.raft) {
		if err := h.syncRead(ctx, rep); err == nil {
			st, _ := h.meta.State()
			return st, nil
		}
	}
	b, err := h.route(ctx, MetaGroup, svcMetaState, []byte{1}, false)
	if err != nil {
		return nil, err
	}
	return decodeClusterState(b)
}

// GroupStatus is what a replica knows about its group.
type GroupStatus struct {
	Group        uint64       `json:"group"`
	Node         string       `json:"node"`
	State        string       `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term         uint64       `json:"term"`
	LastIndex    uint64       `json:"last_index"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LeaderID     string       `json:"leader_id,omitempty"`
	LeaderAddr   string       `json:"leader_addr,omitempty"`
	LastContact  time.Time    `json:"last_contact,omitzero"`
	Servers      []ServerInfo `json:"servers"`

	// HeartbeatTimeout is the replica's raft heartbeat timeout, the unit
	// of the judgments below.
	HeartbeatTimeout Duration `json:"heartbeat_timeout,omitzero"`
	// ContactAge is how long ago the replica last heard from a leader,
	// measured on its own node (so clocks of different nodes never meet);
	// zero while it leads. A replica that never heard from one counts from
	// its start.
	ContactAge Duration `json:"contact_age,omitzero"`
	// Elections is how many times the replica became a candidate, and did
	// not win, in the last 20 heartbeat timeouts.
	Elections int `json:"elections,omitempty"`
	// Unreachable lists, on a leader, the followers whose heartbeats fail.
	Unreachable []PeerContact `json:"unreachable,omitempty"`
	// Stuck, when not empty, says why the replica is cut off from its
	// group: no contact with a leader for more than StuckAfter, or
	// elections started again and again.
	Stuck string `json:"stuck,omitempty"`
	// Damaged, when not empty, says why the replica's stored data is
	// corrupt: it serves no reads and leads no more until it is rebuilt
	// (Host.RepairReplica). A replica too damaged to start has State
	// "Damaged" and nothing else but its group and node.
	Damaged string `json:"damaged,omitempty"`
}

// ServerInfo is one member of a group's raft configuration.
type ServerInfo struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

// Status reports the local replica of group.
func (h *Host) Status(group uint64) (GroupStatus, error) {
	rep := h.replica(group)
	if rep == nil {
		if h.damage.isBroken(group) {
			return h.brokenStatus(group), nil
		}
		return GroupStatus{}, h.noReplica(group)
	}
	st := rep.status(h.cfg.NodeID)
	st.Damaged = h.damage.reason(group)
	return st, nil
}

// brokenStatus is the status of a replica that could not start because
// its stored data is corrupt.
func (h *Host) brokenStatus(group uint64) GroupStatus {
	return GroupStatus{Group: group, Node: h.cfg.NodeID, State: "Damaged", Damaged: h.damage.reason(group)}
}

func (rep *replica) status(node string) GroupStatus {
	// Contact first: the configuration read below goes through raft's main
	// loop, which may take a while on a busy node.
	last := rep.raft.LastContact()
	addr, id := rep.raft.LeaderWithID()
	st := GroupStatus{
		Group: rep.group, Node: node, State: rep.raft.State().String(), Term: rep.raft.CurrentTerm(),
		LastIndex: rep.raft.LastIndex(), CommitIndex: rep.raft.CommitIndex(), AppliedIndex: rep.raft.AppliedIndex(),
		LeaderID: string(id), LeaderAddr: string(addr), LastContact: last,
	}
	rep.health.fill(&st, last, time.Now())
	if f := rep.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, ServerInfo{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	return st
}

// Leader returns the leader of group as known on this node (empty if none).
func (h *Host) Leader(group uint64) (id, addr string) {
	if rep := h.replica(group); rep != nil {
		a, i := rep.raft.LeaderWithID()
		return string(i), string(a)
	}
	return "", string(h.leaderHint(group))
}
