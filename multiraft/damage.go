package multiraft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Damaged replicas.
//
// A replica whose stored data fails a checksum (a state machine record, a
// raft log entry, its snapshot file) is damaged: its other replicas hold
// the right data, so it must not serve what it holds nor lead. The host
// then marks it, serves no read from it (a read goes to another replica,
// as for a node without one), hands its leadership away whenever it gets
// it, and reports it (GroupStatus.Damaged, DamagedReplicas, the corruption
// counts) until an operator rebuilds it with RepairReplica. The replica
// keeps taking part in raft: its log is what raft made durable, and only
// the rebuild, which first takes it out of the configuration, may drop it.
//
// A raft log entry that fails its checksum is found before raft starts
// (verifyReplica), because raft panics when it cannot read an entry it
// must apply: such a replica is not started at all ("broken") and only
// reported.

// DamageReporter is implemented by a state machine that verifies its
// stored data as it reads it. Damaged returns the first corruption found,
// or nil; the host polls it.
type DamageReporter interface {
	Damaged() error
}

// damagePoll is how often the host looks for newly damaged replicas and
// for damaged ones that lead; a read that finds corruption reports it at
// once.
const damagePoll = 250 * time.Millisecond

// damageTable is the host's record of damaged replicas.
type damageTable struct {
	mu      sync.Mutex
	reasons map[uint64]string // guarded by mu: why each damaged replica is
	broken  map[uint64]bool   // guarded by mu: damaged before raft could start
	counts  map[uint64]uint64 // guarded by mu: corruptions found per group
}

// mark records group as damaged; it reports whether it was not already.
func (d *damageTable) mark(group uint64, reason string, broken bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reasons == nil {
		d.reasons, d.broken, d.counts = map[uint64]string{}, map[uint64]bool{}, map[uint64]uint64{}
	}
	if broken {
		d.broken[group] = true
	}
	if _, ok := d.reasons[group]; ok {
		return false
	}
	d.reasons[group] = reason
	d.counts[group]++
	return true
}

func (d *damageTable) reason(group uint64) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reasons[group]
}

func (d *damageTable) isBroken(group uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.broken[group]
}

func (d *damageTable) clear(group uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.reasons, group)
	delete(d.broken, group)
}

// DamagedReplicas returns, by group, why each local replica is damaged,
// started or not. The map is the caller's.
func (h *Host) DamagedReplicas() map[uint64]string {
	h.damage.mu.Lock()
	defer h.damage.mu.Unlock()
	return maps.Clone(h.damage.reasons)
}

// CorruptionCounts returns, by group, how many times this host found a
// local replica's stored data corrupt since it started (once per damage:
// a replica is counted again only after a repair). The map is the caller's.
func (h *Host) CorruptionCounts() map[uint64]uint64 {
	h.damage.mu.Lock()
	defer h.damage.mu.Unlock()
	return maps.Clone(h.damage.counts)
}

// reportDamage marks the replica of group damaged and, if it leads, has
// the damage loop hand its leadership away.
func (h *Host) reportDamage(group uint64, reason string, broken bool) {
	if !h.damage.mark(group, reason, broken) {
		return
	}
	h.log.Error("replica damaged: its stored data is corrupt; it serves no reads and leads no more until it is repaired",
		"group", group, "reason", reason,
		"repair", fmt.Sprintf("herald admin groups repair %d --node %s", group, h.cfg.NodeID))
	select {
	case h.damageKick <- struct{}{}:
	default:
	}
}

// checkDamage reports the replica's state machine damage, if any.
func (h *Host) checkDamage(rep *replica) {
	if dr, ok := rep.fsm.(DamageReporter); ok {
		if err := dr.Damaged(); err != nil {
			h.reportDamage(rep.group, err.Error(), false)
		}
	}
}

// damageLoop polls the replicas' state machines for damage and moves the
// leadership of damaged replicas away, again whenever one is elected.
func (h *Host) damageLoop() {
	t := time.NewTicker(damagePoll)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		case <-h.damageKick:
		}
		h.mu.RLock()
		reps := slices.Collect(maps.Values(h.replicas))
		h.mu.RUnlock()
		for _, rep := range reps {
			if rep.group == MetaGroup {
				continue
			}
			h.checkDamage(rep)
			if h.damage.reason(rep.group) != "" && rep.raft.State() == raft.Leader {
				h.stepDown(rep)
			}
		}
	}
}

// stepDown hands a damaged replica's leadership to another voter, within
// an election timeout or two.
func (h *Host) stepDown(rep *replica) {
	h.log.Warn("handing the leadership of a damaged replica away", "group", rep.group)
	ctx, cancel := context.WithTimeout(h.ctx, 2*h.cfg.Timing.ElectionTimeout+time.Second)
	defer cancel()
	if err := waitFuture(ctx, rep.raft.LeadershipTransfer()); err != nil {
		h.log.Warn("leadership transfer of a damaged replica failed; retrying", "group", rep.group, "err", err)
	}
}

// damagedRead is the error of a read of a damaged replica: it matches
// ErrNoReplica, so the read goes to another replica as on a node without
// one, and ErrDamaged.
func (h *Host) damagedRead(group uint64, reason string) error {
	return fmt.Errorf("%w: %w: group %d on node %s: %s", ErrNoReplica, ErrDamaged, group, h.cfg.NodeID, reason)
}

// brokenStart is startReplica's error for a replica whose stored data
// fails its checksums before raft starts.
type brokenStart struct{ reason string }

func (e *brokenStart) Error() string { return e.reason }

// verifyReplica checks what raft reads at start: the newest snapshot
// (raft's file store verifies its CRC on open) and the log entries after
// it, which raft applies again and cannot survive failing to read. It
// reads every such entry once; they are at most the entries since the
// last snapshot (SnapshotThreshold plus what arrived since).
func verifyReplica(snaps raft.SnapshotStore, logs raft.LogStore, applied uint64) (snapIndex uint64, damage string, broken bool) {
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		snapIndex = list[0].Index
		_, rc, err := snaps.Open(list[0].ID)
		if err != nil {
			damage = fmt.Sprintf("snapshot %s cannot be read: %v", list[0].ID, err)
			// raft restores the snapshot at start unless the state
			// machine is past it; it fails to start when it cannot.
			broken = applied < snapIndex
		} else {
			rc.Close()
		}
	}
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err1 != nil || err2 != nil {
		return snapIndex, damage, broken
	}
	var l raft.Log
	for i := max(first, snapIndex+1); i <= last && first != 0; i++ {
		if err := logs.GetLog(i, &l); err != nil && errors.Is(err, logstore.ErrCorrupt) {
			if damage != "" {
				damage += "; "
			}
			return snapIndex, damage + fmt.Sprintf("raft log entry %d: %v", i, err), true
		}
	}
	return snapIndex, damage, broken
}

// resetReplica drops everything this node holds of group (raft log,
// snapshots, state) and starts an empty replica, which the group's leader
// fills with a snapshot once it is added back. Only RepairReplica calls
// it, after taking the replica out of the raft configuration: an empty
// voter could vote a leader in that lacks committed entries.
func (h *Host) resetReplica(group uint64) error {
	rep, ok := h.takeForDrop(group)
	if !ok {
		return fmt.Errorf("%w: group %d: its replica on this node is being dropped already", ErrUnavailable, group)
	}
	var err error
	if rep != nil {
		err = h.dropReplica(rep)
	} else {
		err = h.logs.DropGroup(group)
		if derr := os.RemoveAll(h.snapDir(group)); err == nil {
			err = derr
		}
		if sm, serr := h.cfg.App.NewStateMachine(group); serr == nil {
			if d, ok := sm.(interface{ Drop() error }); ok {
				if derr := d.Drop(); err == nil {
					err = derr
				}
			}
		}
	}
	if err == nil {
		// Before the mark ends: from then on the reconcile loop may start
		// the new replica, and damage it reports must stay.
		h.damage.clear(group)
	}
	h.endDrop(group)
	if err != nil {
		return fmt.Errorf("multiraft: drop the damaged replica of group %d: %w", group, err)
	}
	return h.ensureReplica(group, nil)
}

func (h *Host) handleReplicaReset(_ context.Context, _ string, group uint64, _ []byte) ([]byte, error) {
	if group == MetaGroup {
		return errReply(fmt.Errorf("%w: the meta group is not rebuilt this way", ErrNoGroup)), nil
	}
	if err := h.resetReplica(group); err != nil {
		return errReply(err), nil
	}
	return okReply(nil), nil
}

// RepairReplica rebuilds group's replica on node from the others: record
// the repair as the group's operation (so nothing else changes its
// replicas meanwhile), hand the leadership away from node, take node out
// of the raft configuration, have node drop its data and start an empty
// replica, add it back as a non-voter, wait until it has applied the
// leader's commit index (it receives a snapshot), promote it, and end the
// record. Any replica may be rebuilt this way, damaged or not; the group
// needs a quorum without node throughout. Calling it again after a
// failure runs the whole rebuild again.
func (h *Host) RepairReplica(ctx context.Context, group uint64, node string) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("multiraft: repair group %d on %s: %s: %w", group, node, step, err)
	}
	st, err := h.MetaState(ctx)
	if err != nil {
		return fail("read cluster state", err)
	}
	if group == MetaGroup || group > st.Groups {
		return fail("check", fmt.Errorf("%w: %d", ErrNoGroup, group))
	}
	target := st.Nodes[node]
	if target == nil || !slices.Contains(st.Replicas[group], node) {
		return fail("check", fmt.Errorf("node %q holds no replica of the group (replicas %v)", node, st.Replicas[group]))
	}
	var takeOver uint64
	if op := st.Ops[group]; op != nil {
		if op.Kind != meta.OpRepair || op.To != node || h.opLive(ctx, st, group, op) {
			return &MoveInProgressError{Group: group, Op: *op}
		}
		takeOver = op.ID
	}
	op, err := h.beginOp(ctx, group, meta.GroupOp{Kind: meta.OpRepair, From: node, To: node}, takeOver)
	if err != nil {
		var mip *MoveInProgressError
		if errors.As(err, &mip) {
			return mip
		}
		return fail("record the repair", err)
	}
	defer h.ops.remove(group, op.ID)
	// 1. Hand the leadership to another voter.
	otherVoter := func(ls *GroupStatus) (string, string) {
		for _, s := range ls.Servers {
			if s.Voter && s.ID != node {
				return s.ID, s.Addr
			}
		}
		return "", ""
	}
	if err := h.leadershipOff(ctx, group, node, otherVoter); err != nil {
		return fail("move the leadership away", err)
	}
	// 2. Take it out of the configuration, then drop its data.
	if _, err := h.fence(ctx, group, op); err != nil {
		return fail("remove the replica", err)
	}
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "remove", ID: node}); err != nil {
		return fail("remove the replica", err)
	}
	b, err := h.send(ctx, raft.ServerAddress(target.PeerAddr), svcReplicaReset, group, nil)
	if err == nil {
		_, err = decodeReply(b)
	}
	if err != nil {
		return fail("drop the replica's data", err)
	}
	// 3. Add it back empty; the leader sends it a snapshot and the log
	// after it. Promote it once it has caught up.
	if _, err := h.fence(ctx, group, op); err != nil {
		return fail("add the replica back", err)
	}
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_nonvoter", ID: node, Addr: target.PeerAddr}); err != nil {
		return fail("add the replica back", err)
	}
	ls, err := h.LeaderStatus(ctx, group)
	if err != nil {
		return fail("find leader", err)
	}
	goal := ls.CommitIndex
	if err := h.waitFor(ctx, func(ctx context.Context) (bool, error) {
		ts, err := h.NodeGroupStatus(ctx, target.PeerAddr, group)
		if err != nil && h.knownDown(ctx, node) {
			return false, fmt.Errorf("node %s is down (its lease ran out)", node)
		}
		return err == nil && ts.AppliedIndex >= goal && ts.Damaged == "", nil
	}); err != nil {
		return fail(fmt.Sprintf("wait for the rebuilt replica to apply index %d", goal), err)
	}
	if _, err := h.fence(ctx, group, op); err != nil {
		return fail("promote to voter", err)
	}
	if err := h.groupAdmin(ctx, group, groupAdminRequest{Op: "add_voter", ID: node, Addr: target.PeerAddr}); err != nil {
		return fail("promote to voter", err)
	}
	if err := h.endOp(ctx, group, op); err != nil {
		return fail("end the repair", err)
	}
	h.log.Info("replica rebuilt from its peers", "group", group, "node", node)
	return nil
}
