package multiraft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Group membership changes run on the group's leader; the host routes them
// there like proposals.

type groupAdminRequest struct {
	Op   string `json:"op"` // add_nonvoter, add_voter, remove, transfer
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (h *Host) handleGroupAdmin(ctx context.Context, _ string, group uint64, req []byte) ([]byte, error) {
	var r groupAdminRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return errReply(fmt.Errorf("multiraft: malformed group admin request: %v", err)), nil
	}
	rep := h.replica(group)
	if rep == nil {
		return errReply(h.noReplica(group)), nil
	}
	if rep.raft.State() != raft.Leader {
		return errReply(rep.notLeader()), nil
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	id, addr := raft.ServerID(r.ID), raft.ServerAddress(r.Addr)
	var f raft.Future
	switch r.Op {
	case "add_nonvoter":
		f = rep.raft.AddNonvoter(id, addr, 0, timeout)
	case "add_voter":
		f = rep.raft.AddVoter(id, addr, 0, timeout)
	case "remove":
		f = rep.raft.RemoveServer(id, 0, timeout)
	case "transfer":
		// raft refuses a transfer to a server it does not replicate to
		// with an error that reads as retryable; it never will succeed.
		cf := rep.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return errReply(rep.raftError(err, false)), nil
		}
		ok := slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return s.ID == id && s.Suffrage == raft.Voter })
		if !ok {
			return errReply(fmt.Errorf("%w: node %s is not a voter of group %d", ErrNotVoter, r.ID, group)), nil
		}
		f = rep.raft.LeadershipTransferToServer(id, addr)
	default:
		return errReply(fmt.Errorf("multiraft: unknown group admin op %q", r.Op)), nil
	}
	if err := waitFuture(ctx, f); err != nil {
		return errReply(rep.raftError(err, false)), nil
	}
	return okReply(nil), nil
}

// handleGroupInfo reports the local replica; a request byte of 1 asks for
// the leader's view, so a follower answers with a not-leader hint.
func (h *Host) handleGroupInfo(_ context.Context, _ string, group uint64, req []byte) ([]byte, error) {
	rep := h.replica(group)
	if rep == nil {
		if h.damage.isBroken(group) && len(req) == 0 {
			return jsonReply(h.brokenStatus(group)), nil
		}
		return errReply(h.noReplica(group)), nil
	}
	if len(req) == 1 && req[0] == 1 && rep.raft.State() != raft.Leader {
		return errReply(rep.notLeader()), nil
	}
	st := rep.status(h.cfg.NodeID)
	st.Damaged = h.damage.reason(group)
	return jsonReply(st), nil
}

// NodeGroupStatus asks a node (by peer address) for the status of its
// replica of group.
func (h *Host) NodeGroupStatus(ctx context.Context, peerAddr string, group uint64) (GroupStatus, error) {
	b, err := h.send(ctx, raft.ServerAddress(peerAddr), svcGroupInfo, group, nil)
	if err == nil {
		b, err = decodeReply(b)
	}
	var st GroupStatus
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

// LeaderStatus returns the status of group as its leader sees it.
func (h *Host) LeaderStatus(ctx context.Context, group uint64) (GroupStatus, error) {
	b, err := h.route(ctx, group, svcGroupInfo, []byte{1}, false)
	var st GroupStatus
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

func (h *Host) groupAdmin(ctx context.Context, group uint64, r groupAdminRequest) error {
	_, err := h.route(ctx, group, svcGroupAdmin, mustJSON(r), true)
	return err
}

// TransferLeader hands the leadership of group to node to.
func (h *Host) TransferLeader(ctx context.Context, group uint64, to string) error {
	st, err := h.MetaState(ctx)
	if err != nil {
		return err
	}
	n := st.Nodes[to]
	if n == nil {
		return fmt.Errorf("multiraft: node %q is not in the cluster", to)
	}
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return err
	}
	if ls.LeaderID == to {
		return nil
	}
	if !voter(ls, to) {
		return fmt.Errorf("multiraft: transfer group %d to %s: %w (voters %v)", group, to, ErrNotVoter, voterIDs(ls))
	}
	ctx, cancel := context.WithTimeout(ctx, transferBound)
	defer cancel()
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "transfer", ID: to, Addr: n.PeerAddr}); err != nil {
		return fmt.Errorf("multiraft: transfer group %d to %s: %w", group, to, err)
	}
	h.setHint(group, raft.ServerAddress(n.PeerAddr))
	return nil
}

// MoveReplica moves group's replica on node from to node to while the group
// keeps serving: record the move in the meta group (which refuses it while
// another change of the group's replicas is in progress), record the new
// replica (its node starts it), add it as a non-voter, wait until it has
// caught up, promote it, hand over the leadership if from leads, remove
// from, and record that, which also ends the move's record. Every step
// first checks whether it is already done, so a move interrupted on this
// or another node (whose record is then abandoned) is finished by calling
// MoveReplica again with the same arguments. A refusal is a
// *MoveInProgressError.
func (h *Host) MoveReplica(ctx context.Context, group uint64, from, to string) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("multiraft: move group %d from %s to %s: %s: %w", group, from, to, step, err)
	}
	st, err := h.MetaState(ctx)
	if err != nil {
		return fail("read cluster state", err)
	}
	if group == MetaGroup || group > st.Groups {
		return fail("check", fmt.Errorf("%w: %d", ErrNoGroup, group))
	}
	if st.Nodes[to] == nil {
		return fail("check", fmt.Errorf("node %q is not in the cluster", to))
	}
	cur := st.Replicas[group]
	op := st.Ops[group]
	switch {
	case op == nil:
		if !slices.Contains(cur, from) && slices.Contains(cur, to) {
			return nil // done before
		}
		if !slices.Contains(cur, from) {
			return fail("check", fmt.Errorf("node %q holds no replica of the group (replicas %v)", from, cur))
		}
		op, err = h.beginOp(ctx, group, meta.GroupOp{Kind: meta.OpMove, From: from, To: to}, 0)
	case op.Kind == meta.OpMove && op.From == from && op.To == to:
		// The same move: finish it if nobody runs it any more.
		if h.opLive(ctx, st, group, op) {
			return &MoveInProgressError{Group: group, Op: *op}
		}
		h.log.Info("taking over an abandoned move", "group", group, "op", op.String())
		op, err = h.beginOp(ctx, group, meta.GroupOp{Kind: meta.OpMove, From: from, To: to}, op.ID)
	default:
		return &MoveInProgressError{Group: group, Op: *op, Abandoned: !h.opLive(ctx, st, group, op)}
	}
	if err != nil {
		var mip *MoveInProgressError
		if errors.As(err, &mip) {
			return mip
		}
		return fail("record the move", err)
	}
	defer h.ops.remove(group, op.ID)
	return h.runMove(ctx, group, op)
}

// runMove carries out the move op holds, from wherever it stands.
func (h *Host) runMove(ctx context.Context, group uint64, op *meta.GroupOp) error {
	from, to := op.From, op.To
	fail := func(step string, err error) error {
		return fmt.Errorf("multiraft: move group %d from %s to %s: %s: %w", group, from, to, step, err)
	}
	st, err := h.fence(ctx, group, op)
	if err != nil {
		return fail("check the move's record", err)
	}
	target := st.Nodes[to]
	if target == nil {
		return fail("check", fmt.Errorf("node %q is not in the cluster", to))
	}
	cur := st.Replicas[group]
	if !slices.Contains(cur, from) {
		if slices.Contains(cur, to) {
			return h.endOp(ctx, group, op)
		}
		// Nothing of the move happened, and it cannot: give the group back.
		if err := h.endOp(ctx, group, op); err != nil {
			return fail("end the move", err)
		}
		return fail("check", fmt.Errorf("node %q holds no replica of the group (replicas %v)", from, cur))
	}
	// 1. Give the target a replica in the meta group; its host starts it.
	if !slices.Contains(cur, to) {
		next := append(slices.Clone(cur), to)
		if err := h.setReplicas(ctx, group, op, cur, next, false); err != nil {
			return fail("record new replica", err)
		}
		cur = next
	}
	if err := h.waitFor(ctx, func(ctx context.Context) (bool, error) {
		_, err := h.NodeGroupStatus(ctx, target.PeerAddr, group)
		if err != nil && h.knownDown(ctx, to) {
			return false, fmt.Errorf("node %s is down (its lease ran out)", to)
		}
		return err == nil, nil
	}); err != nil {
		return fail("wait for the new replica to start", err)
	}
	// 2. Add it to the raft group as a non-voter and let it catch up, so
	// the group's quorum never depends on a replica without the log.
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return fail("find leader", err)
	}
	if !member(ls, to) {
		if _, err := h.fence(ctx, group, op); err != nil {
			return fail("add non-voter", err)
		}
		if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_nonvoter", ID: to, Addr: target.PeerAddr}); err != nil {
			return fail("add non-voter", err)
		}
		if ls, err = h.LeaderStatus(ctx, group); err != nil {
			return fail("find leader", err)
		}
	}
	goal := ls.CommitIndex
	if err := h.waitFor(ctx, func(ctx context.Context) (bool, error) {
		ts, err := h.NodeGroupStatus(ctx, target.PeerAddr, group)
		if err != nil && h.knownDown(ctx, to) {
			return false, fmt.Errorf("node %s is down (its lease ran out)", to)
		}
		return err == nil && ts.AppliedIndex >= goal, nil
	}); err != nil {
		return fail(fmt.Sprintf("wait for the new replica to apply index %d", goal), err)
	}
	// 3. Promote it.
	if !voter(ls, to) {
		if _, err := h.fence(ctx, group, op); err != nil {
			return fail("promote to voter", err)
		}
		if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_voter", ID: to, Addr: target.PeerAddr}); err != nil {
			return fail("promote to voter", err)
		}
	}
	// 4. The leader cannot remove itself cleanly: hand leadership over.
	if err := h.leadershipOff(ctx, group, from, func(*GroupStatus) (string, string) { return to, target.PeerAddr }); err != nil {
		return fail("move the leadership away", err)
	}
	// 5. Remove the old replica from the raft group, then from the meta
	// group, which ends the move.
	if _, err := h.fence(ctx, group, op); err != nil {
		return fail("remove old replica", err)
	}
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "remove", ID: from}); err != nil {
		return fail("remove old replica", err)
	}
	next := slices.DeleteFunc(slices.Clone(cur), func(s string) bool { return s == from })
	if err := h.setReplicas(ctx, group, op, cur, next, true); err != nil {
		return fail("record removal", err)
	}
	return nil
}

// transferBound limits how long a move or a plan step keeps trying to
// hand a group's leadership over: raft completes or refuses a transfer
// within an election timeout, so what takes longer will not happen.
const transferBound = 30 * time.Second

// waitFor polls cond until it is true or ctx ends.
func (h *Host) waitFor(ctx context.Context, cond func(context.Context) (bool, error)) error {
	delay := 10 * time.Millisecond
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if !wait.Sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Leaders asks each data group's leader who it is. Groups whose leader
// cannot be found within ctx are left out.
func (h *Host) Leaders(ctx context.Context, st *meta.ClusterState) map[uint64]string {
	out := map[uint64]string{}
	for g := uint64(1); g <= st.Groups; g++ {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		ls, err := h.LeaderStatus(cctx, g)
		cancel()
		if err == nil && ls.LeaderID != "" {
			out[g] = ls.LeaderID
		}
	}
	return out
}

// PlanRebalance computes the moves that even out replicas and leaders now
// (a dry run: nothing changes).
func (h *Host) PlanRebalance(ctx context.Context) ([]meta.Move, error) {
	st, err := h.MetaState(ctx)
	if err != nil {
		return nil, err
	}
	return meta.Plan(st, h.Leaders(ctx, st)), nil
}

// ApplyPlan executes moves in order. It stops at the first failure and
// returns how many moves completed; because each move checks what is
// already done, applying the remaining plan (or a new one) resumes.
func (h *Host) ApplyPlan(ctx context.Context, plan []meta.Move, progress func(done int, m meta.Move)) (int, error) {
	for i, m := range plan {
		var err error
		switch m.Kind {
		case meta.MoveReplica:
			err = h.MoveReplica(ctx, m.Group, m.From, m.To)
		case meta.TransferLeader:
			err = h.TransferLeader(ctx, m.Group, m.To)
		default:
			err = fmt.Errorf("multiraft: unknown move kind %q", m.Kind)
		}
		if err != nil {
			return i, err
		}
		if progress != nil {
			progress(i+1, m)
		}
	}
	return len(plan), nil
}

// Decommission moves every replica off node, takes it out of the meta
// group's raft configuration if it is a member, and removes it from the
// cluster. The node may be stopped afterwards.
func (h *Host) Decommission(ctx context.Context, node string) error {
	st, err := h.MetaState(ctx)
	if err != nil {
		return err
	}
	n := st.Nodes[node]
	if n == nil {
		return fmt.Errorf("multiraft: node %q is not in the cluster", node)
	}
	if n.State != meta.NodeDecommissioning {
		if err := h.proposeMetaChecked(ctx, meta.SetState(node, meta.NodeDecommissioning), func(st *meta.ClusterState) bool {
			n := st.Nodes[node]
			return n != nil && n.State == meta.NodeDecommissioning
		}); err != nil {
			return fmt.Errorf("multiraft: mark %s decommissioning: %w", node, err)
		}
		if st, err = h.MetaState(ctx); err != nil {
			return err
		}
	}
	var plan []meta.Move
	for _, m := range meta.Plan(st, nil) {
		if m.Kind == meta.MoveReplica && m.From == node {
			plan = append(plan, m)
		}
	}
	if len(plan) == 0 && len(st.GroupsOf(node)) > 0 {
		return fmt.Errorf("multiraft: no node can take %s's replicas without holding two of one group; add a node first", node)
	}
	if _, err := h.ApplyPlan(ctx, plan, nil); err != nil {
		return fmt.Errorf("multiraft: decommission %s: %w", node, err)
	}
	// Leave the meta group's raft configuration.
	ms, err := h.LeaderStatus(ctx, MetaGroup)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(ms.Servers, func(s ServerInfo) bool { return s.ID == node }) {
		if len(ms.Servers) == 1 {
			return errors.New("multiraft: cannot decommission the only meta group member")
		}
		if ms.LeaderID == node {
			other := ms.Servers[0].ID
			if other == node {
				other = ms.Servers[1].ID
			}
			addr := ""
			for _, s := range ms.Servers {
				if s.ID == other {
					addr = s.Addr
				}
			}
			if err := h.groupAdmin(ctx, MetaGroup, groupAdminRequest{Op: "transfer", ID: other, Addr: addr}); err != nil {
				return fmt.Errorf("multiraft: move meta leadership off %s: %w", node, err)
			}
		}
		if err := h.groupAdmin(ctx, MetaGroup, groupAdminRequest{Op: "remove", ID: node}); err != nil {
			return fmt.Errorf("multiraft: remove %s from the meta group: %w", node, err)
		}
	}
	if err := h.proposeMetaChecked(ctx, meta.RemoveNode(node), func(st *meta.ClusterState) bool {
		return st.Nodes[node] == nil && st.Removed[node] != 0
	}); err != nil {
		return fmt.Errorf("multiraft: remove %s: %w", node, err)
	}
	return nil
}

// leadershipOff waits, within transferBound, until node no longer leads
// group, asking the leader to transfer to the voter next names on every
// poll it still leads (a failed transfer is retried on the next poll). The
// bound makes a hand-over that cannot happen fail with its reason instead
// of holding the group's operation record until ctx ends.
func (h *Host) leadershipOff(ctx context.Context, group uint64, node string, next func(*GroupStatus) (id, addr string)) error {
	tctx, cancel := context.WithTimeout(ctx, transferBound)
	defer cancel()
	var lastErr error
	err := h.waitFor(tctx, func(ctx context.Context) (bool, error) {
		ls, err := h.LeaderStatus(ctx, group)
		if err != nil {
			lastErr = err
			return false, nil
		}
		if ls.LeaderID != node {
			return true, nil
		}
		if id, addr := next(&ls); id != "" {
			lastErr = h.groupAdmin(ctx, group, groupAdminRequest{Op: "transfer", ID: id, Addr: addr})
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil && lastErr != nil {
		err = fmt.Errorf("not done within %v: %w", transferBound, lastErr)
	}
	return err
}
