package multiraft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/meta"
)

// The meta leader's repair loop keeps each data group's raft configuration
// and the meta group's replica list in agreement. A crash in the middle of
// a move leaves them apart, and so did moves from before operation
// records existed. Rules (docs/multiraft.md, "Repairs"):
//
//   - A record whose owner is gone (another epoch, lease run out, removed)
//     is taken over; one whose owner lives but says it does not run it,
//     after a lease TTL (its operator may be running it again). A move is
//     finished when its source has already left the raft configuration, or
//     when its target is a voter on a live node; else it is rolled back:
//     the target leaves raft and the list.
//   - A group without a record whose voters differ from its list gets a
//     repair record, then: raft members the list lacks are removed from
//     raft unless they are voters on live nodes, which are added to the
//     list (they hold the log and count in the quorum); listed nodes that
//     are not voters are added back to raft (as non-voters, promoted once
//     caught up) when live, and dropped from the list when not.
//
// Work per round is bounded: at most repairSweep groups are compared and
// at most repairsPerRound repairs run, each within repairTimeout.
const (
	repairSweep     = 64
	repairsPerRound = 4
	repairTimeout   = 2 * time.Minute
	// repairLookup bounds asking one group's leader for its configuration.
	repairLookup = time.Second
)

func (h *Host) repairEvery() time.Duration {
	return max(h.cfg.LeaseTTL/2, 500*time.Millisecond)
}

// repairLoop runs repair rounds while this node leads the meta group.
func (h *Host) repairLoop() {
	r := repairState{idle: map[uint64]time.Time{}}
	for wait.Sleep(h.ctx, h.repairEvery()) {
		rep := h.replica(MetaGroup)
		if rep == nil || rep.raft.State() != raft.Leader {
			clear(r.idle)
			continue
		}
		h.repairRound(h.ctx, &r)
	}
}

// repairState is what the repair loop remembers between rounds (in memory:
// a new meta leader starts afresh, which only delays a takeover).
type repairState struct {
	cursor uint64 // where the next sweep starts
	// idle maps the id of a record whose owner lives but does not run it
	// to when this leader first saw that. Such an owner's run ended (an
	// operator's timeout, say) and the operator may run it again at once,
	// so it is left alone for a lease TTL before being taken over.
	idle map[uint64]time.Time
}

// repairRound takes over abandoned records, then compares up to
// repairSweep groups from the cursor on and repairs those that disagree.
func (h *Host) repairRound(ctx context.Context, r *repairState) {
	st, _ := h.meta.State()
	if !st.Initialized() || st.Groups == 0 {
		return
	}
	for id := range r.idle {
		if !slices.ContainsFunc(slices.Collect(maps.Values(st.Ops)), func(o *meta.GroupOp) bool { return o.ID == id }) {
			delete(r.idle, id)
		}
	}
	budget := repairsPerRound
	for _, g := range slices.Sorted(maps.Keys(st.Ops)) {
		if budget == 0 || ctx.Err() != nil {
			return
		}
		op := st.Ops[g]
		if h.opLive(ctx, st, g, op) {
			continue
		}
		if st.NodeLive(op.Owner) && st.Nodes[op.Owner].Epoch == op.OwnerEpoch {
			first, ok := r.idle[op.ID]
			if !ok {
				r.idle[op.ID] = time.Now()
				continue
			}
			if time.Since(first) < h.cfg.LeaseTTL {
				continue
			}
		}
		budget--
		if err := h.takeOver(ctx, g, op); err != nil && ctx.Err() == nil {
			h.log.Warn("repairing an abandoned replica change", "group", g, "op", op.String(), "err", err)
		}
	}
	for range min(uint64(repairSweep), st.Groups) {
		if budget == 0 || ctx.Err() != nil {
			break
		}
		g := r.cursor%st.Groups + 1
		r.cursor = (r.cursor + 1) % st.Groups
		if st.Ops[g] != nil {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, repairLookup)
		ls, err := h.LeaderStatus(lctx, g)
		cancel()
		if err != nil || Agrees(st.Replicas[g], ls) {
			continue
		}
		budget--
		h.log.Warn("group's raft configuration and replica list disagree; repairing", "group", g,
			"replicas", st.Replicas[g], "raft", ls.Servers)
		if err := h.repairGroup(ctx, g, nil); err != nil && ctx.Err() == nil {
			h.log.Warn("repairing a group", "group", g, "err", err)
		}
	}
}

// takeOver records this node as the owner of the abandoned op and
// finishes or rolls back what it describes.
func (h *Host) takeOver(ctx context.Context, group uint64, old *meta.GroupOp) error {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	if old.Kind != meta.OpMove {
		return h.repairGroup(ctx, group, old)
	}
	op, err := h.beginOp(ctx, group, meta.GroupOp{Kind: meta.OpMove, From: old.From, To: old.To}, old.ID)
	if err != nil {
		return err
	}
	defer h.ops.remove(group, op.ID)
	st, err := h.fence(ctx, group, op)
	if err != nil {
		return err
	}
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return err
	}
	if !member(ls, op.From) || voter(ls, op.To) && st.NodeLive(op.To) {
		h.log.Info("finishing an abandoned move", "group", group, "op", op.String())
		return h.runMove(ctx, group, op)
	}
	h.log.Info("rolling back an abandoned move", "group", group, "op", op.String())
	return h.rollBackMove(ctx, group, op, ls)
}

// rollBackMove takes a move's target out of the raft group and the
// replica list and ends the move.
func (h *Host) rollBackMove(ctx context.Context, group uint64, op *meta.GroupOp, ls GroupStatus) error {
	if member(ls, op.To) {
		if ls.LeaderID == op.To {
			if err := h.leadAwayFrom(ctx, group, ls, op.To); err != nil {
				return err
			}
		}
		if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "remove", ID: op.To}); err != nil {
			return fmt.Errorf("remove %s from the raft group: %w", op.To, err)
		}
	}
	st, err := h.fence(ctx, group, op)
	if err != nil {
		return err
	}
	cur := st.Replicas[group]
	next := slices.DeleteFunc(slices.Clone(cur), func(s string) bool { return s == op.To })
	return h.setReplicas(ctx, group, op, cur, next, true)
}

// leadAwayFrom hands group's leadership from node to another voter.
func (h *Host) leadAwayFrom(ctx context.Context, group uint64, ls GroupStatus, node string) error {
	for _, s := range ls.Servers {
		if s.Voter && s.ID != node {
			return h.TransferLeader(ctx, group, s.ID)
		}
	}
	return fmt.Errorf("group %d has no voter but %s to lead it", group, node)
}

// repairGroup makes group's raft configuration and replica list agree
// under a repair record (taking over old when it is not nil).
func (h *Host) repairGroup(ctx context.Context, group uint64, old *meta.GroupOp) error {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	var takeOver uint64
	if old != nil {
		takeOver = old.ID
	}
	op, err := h.beginOp(ctx, group, meta.GroupOp{Kind: meta.OpRepair}, takeOver)
	if err != nil {
		var mip *MoveInProgressError
		if errors.As(err, &mip) {
			return nil // a move began meanwhile: it owns the group now
		}
		return err
	}
	defer h.ops.remove(group, op.ID)
	// Read both sides again now that the record holds the group: no move
	// can change them under the repair any more.
	st, err := h.fence(ctx, group, op)
	if err != nil {
		return err
	}
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return err
	}
	list := st.Replicas[group]
	next := slices.Clone(list)
	for _, s := range ls.Servers {
		if slices.Contains(list, s.ID) {
			continue
		}
		if s.Voter && st.NodeLive(s.ID) {
			next = append(next, s.ID)
			continue
		}
		if s.ID == ls.LeaderID {
			if err := h.leadAwayFrom(ctx, group, ls, s.ID); err != nil {
				return err
			}
		}
		if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "remove", ID: s.ID}); err != nil {
			return fmt.Errorf("remove %s, which the replica list lacks, from the raft group: %w", s.ID, err)
		}
	}
	for _, id := range list {
		if voter(ls, id) {
			continue
		}
		if !st.NodeLive(id) {
			if member(ls, id) {
				if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "remove", ID: id}); err != nil {
					return fmt.Errorf("remove non-voter %s from the raft group: %w", id, err)
				}
			}
			next = slices.DeleteFunc(next, func(s string) bool { return s == id })
			continue
		}
		if err := h.addVoter(ctx, group, op, st.Nodes[id], ls); err != nil {
			return err
		}
	}
	if len(next) == 0 {
		return fmt.Errorf("group %d would be left without replicas; leaving it as it is", group)
	}
	if slices.Equal(next, list) {
		return h.endOp(ctx, group, op)
	}
	return h.setReplicas(ctx, group, op, list, next, true)
}

// addVoter (re)adds a listed node to group's raft configuration: as a
// non-voter first, promoted once it has applied the leader's commit index.
func (h *Host) addVoter(ctx context.Context, group uint64, op *meta.GroupOp, n *meta.NodeInfo, ls GroupStatus) error {
	if !member(ls, n.ID) {
		if _, err := h.fence(ctx, group, op); err != nil {
			return err
		}
		if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_nonvoter", ID: n.ID, Addr: n.PeerAddr}); err != nil {
			return fmt.Errorf("add %s as a non-voter: %w", n.ID, err)
		}
	}
	goal := ls.CommitIndex
	if err := h.waitFor(ctx, func(ctx context.Context) (bool, error) {
		ts, err := h.NodeGroupStatus(ctx, n.PeerAddr, group)
		return err == nil && ts.AppliedIndex >= goal, nil
	}); err != nil {
		return fmt.Errorf("wait for %s to apply index %d: %w", n.ID, goal, err)
	}
	if _, err := h.fence(ctx, group, op); err != nil {
		return err
	}
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_voter", ID: n.ID, Addr: n.PeerAddr}); err != nil {
		return fmt.Errorf("promote %s: %w", n.ID, err)
	}
	return nil
}
