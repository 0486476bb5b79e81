package multiraft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Replica changes of one group are serialized through the meta group: a
// move first records a meta.GroupOp for the group (begin_op, a compare-and-set
// on the group's record), makes every meta change under that record, and
// clears it with its last step. Two executors therefore never interleave
// their steps on one group, which is how raft's configuration and the meta
// group's replica list came apart when two moves of one group ran at once.
// A record outlives a crash of its owner; the meta leader's reconciler
// takes such a record over and finishes or rolls back what it describes.

// ErrMoveInProgress: another change to the group's replicas is in progress
// (or was left halfway by a node that is gone); nothing was changed.
var ErrMoveInProgress = errors.New("multiraft: a replica change of the group is in progress")

// ErrNotVoter: the node named is not a voting member of the group's raft
// configuration, so it cannot take the leadership.
var ErrNotVoter = errors.New("multiraft: not a voter of the group")

// MoveInProgressError is the error of a change refused because Op holds
// the group.
type MoveInProgressError struct {
	Group uint64
	Op    meta.GroupOp
	// Abandoned says nobody runs Op any more: its owner stopped or lost
	// its lease. The meta leader takes such an operation over within a
	// reconcile interval.
	Abandoned bool
}

func (e *MoveInProgressError) Error() string {
	if e.Abandoned {
		return fmt.Sprintf("multiraft: group %d has a replica change left halfway (%v) whose owner is gone; the meta leader finishes or rolls it back shortly, then try again",
			e.Group, &e.Op)
	}
	return fmt.Sprintf("multiraft: group %d has a replica change in progress (%v, since meta index %d); wait for it to end, then try again",
		e.Group, &e.Op, e.Op.Started)
}

// Is makes the error match ErrMoveInProgress and, as a refused meta
// change, meta.ErrConflict.
func (e *MoveInProgressError) Is(target error) bool {
	return target == ErrMoveInProgress || target == meta.ErrConflict
}

// errOpLost: the record this executor worked under was taken over or
// ended by someone else; it must stop at once.
var errOpLost = errors.New("the operation's record was taken over or ended by another node; stopped")

// opRegistry is the set of group operations this host is running now; a
// record whose owner is this node but that is not here was abandoned (its
// run ended with an error or a timeout).
type opRegistry struct {
	mu  sync.Mutex
	ids map[uint64]uint64 // group -> op id; guarded by mu
}

func (r *opRegistry) add(group, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[uint64]uint64{}
	}
	r.ids[group] = id
}

func (r *opRegistry) remove(group, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids[group] == id {
		delete(r.ids, group)
	}
}

func (r *opRegistry) has(group, id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[group] == id
}

// handleOpRunning answers whether this node runs the operation whose id is
// the request (8 bytes): a reply byte of 1 means it does.
func (h *Host) handleOpRunning(_ context.Context, _ string, group uint64, req []byte) ([]byte, error) {
	id, err := getIndex(req)
	if err != nil {
		return errReply(err), nil
	}
	if h.ops.has(group, id) {
		return okReply([]byte{1}), nil
	}
	return okReply([]byte{0}), nil
}

// knownDown asks the meta group whether node is down. It reads the meta
// leader's state: a node's own view may predate its registration.
func (h *Host) knownDown(ctx context.Context, node string) bool {
	st, err := h.MetaState(ctx)
	return err == nil && st.NodeDown(node)
}

// opLive reports whether someone still runs op. Its owner's process must be
// the one that began it (same epoch, lease not run out) and must say it
// runs it; an owner that cannot be asked is given the benefit of the
// doubt until its lease runs out.
func (h *Host) opLive(ctx context.Context, st *meta.ClusterState, group uint64, op *meta.GroupOp) bool {
	n := st.Nodes[op.Owner]
	if n == nil || n.Epoch != op.OwnerEpoch || n.LeaseExpired {
		return false
	}
	if op.Owner == h.cfg.NodeID {
		return h.ops.has(group, op.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := h.send(ctx, raft.ServerAddress(n.PeerAddr), svcOpRunning, group, putIndex(op.ID))
	if err == nil {
		b, err = decodeReply(b)
	}
	if err != nil {
		return true
	}
	return len(b) == 1 && b[0] == 1
}

// beginOp records op for group, replacing the abandoned record takeOver
// when it is not zero. It returns the record as the meta group holds it.
func (h *Host) beginOp(ctx context.Context, group uint64, op meta.GroupOp, takeOver uint64) (*meta.GroupOp, error) {
	epoch, err := h.WaitRegistered(ctx)
	if err != nil {
		return nil, err
	}
	op.Owner, op.OwnerEpoch = h.cfg.NodeID, epoch
	var res *meta.Result
	for attempt := 0; ; attempt++ {
		res, err = h.proposeMeta(ctx, meta.BeginOp(group, op, takeOver))
		if err == nil {
			break
		}
		if res != nil && res.Op != nil {
			return nil, &MoveInProgressError{Group: group, Op: *res.Op}
		}
		// A meta election under the proposal leaves its outcome unknown:
		// the record is ours if it names this process and this change,
		// and the proposal may be made again if there is none.
		if !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrUnavailable) || attempt >= 5 {
			return nil, err
		}
		st, rerr := h.MetaState(ctx)
		if rerr != nil {
			return nil, err
		}
		if o := st.Ops[group]; o != nil {
			if o.Owner == op.Owner && o.OwnerEpoch == op.OwnerEpoch && o.Kind == op.Kind && o.From == op.From && o.To == op.To && o.ID != takeOver {
				h.ops.add(group, o.ID)
				return o, nil
			}
			if o.ID != takeOver {
				return nil, &MoveInProgressError{Group: group, Op: *o}
			}
		}
		if !wait.Sleep(ctx, 100*time.Millisecond) {
			return nil, err
		}
	}
	if res.Op == nil {
		return nil, errors.New("multiraft: the meta group returned no operation record")
	}
	h.ops.add(group, res.Op.ID)
	return res.Op, nil
}

// endOp clears op's record without changing the replicas.
func (h *Host) endOp(ctx context.Context, group uint64, op *meta.GroupOp) error {
	return h.proposeMetaChecked(ctx, meta.EndOp(group, op.ID), func(st *meta.ClusterState) bool {
		o := st.Ops[group]
		return o == nil || o.ID != op.ID
	})
}

// setReplicas records group's replica list under op, ending op with it
// when end is set.
func (h *Host) setReplicas(ctx context.Context, group uint64, op *meta.GroupOp, expect, next []string, end bool) error {
	return h.proposeMetaChecked(ctx, meta.SetReplicas(group, op.ID, expect, next, end), func(st *meta.ClusterState) bool {
		o := st.Ops[group]
		held := o != nil && o.ID == op.ID
		return slices.Equal(st.Replicas[group], next) && held != end
	})
}

// metaRetries bounds how often proposeMetaChecked proposes a command again
// after its outcome was lost.
const metaRetries = 5

// proposeMetaChecked proposes cmd to the meta group and, when its outcome
// is lost (an election under the proposal, no leader to answer), reads the
// meta state to learn whether it took effect, which took decides. One not
// in effect is proposed again. A refusal after a lost outcome is checked
// the same way, because the lost proposal may have committed after all and
// made its repeat fail. An operator's job (a decommission, a rebalance)
// must not fail halfway on a meta election it could have ridden out.
func (h *Host) proposeMetaChecked(ctx context.Context, cmd []byte, took func(*meta.ClusterState) bool) error {
	lostOnce := false
	for attempt := 0; ; attempt++ {
		_, err := h.proposeMeta(ctx, cmd)
		if err == nil {
			return nil
		}
		lost := errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrUnavailable)
		if !lost && !lostOnce {
			return err // a refusal of a command that never ran before
		}
		lostOnce = lostOnce || lost
		if st, rerr := h.MetaState(ctx); rerr == nil && took(st) {
			return nil
		}
		if !lost || attempt >= metaRetries || !wait.Sleep(ctx, 100*time.Millisecond) {
			return err
		}
	}
}

// fence reads the meta state and checks that op still holds group, so an
// executor whose record was taken over makes no further raft change.
func (h *Host) fence(ctx context.Context, group uint64, op *meta.GroupOp) (*meta.ClusterState, error) {
	st, err := h.MetaState(ctx)
	if err != nil {
		return nil, err
	}
	if o := st.Ops[group]; o == nil || o.ID != op.ID {
		return nil, errOpLost
	}
	return st, nil
}

// voter reports whether id is a voting member in a group's status.
func voter(ls GroupStatus, id string) bool {
	return slices.ContainsFunc(ls.Servers, func(s ServerInfo) bool { return s.ID == id && s.Voter })
}

func voterIDs(ls GroupStatus) []string {
	var out []string
	for _, s := range ls.Servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	return out
}

func member(ls GroupStatus, id string) bool {
	return slices.ContainsFunc(ls.Servers, func(s ServerInfo) bool { return s.ID == id })
}

// Agrees reports whether a group's raft configuration (as its leader
// reports it) has exactly the meta group's replicas as voters and nothing
// else.
func Agrees(replicas []string, ls GroupStatus) bool {
	var voters []string
	for _, s := range ls.Servers {
		if !s.Voter {
			return false
		}
		voters = append(voters, s.ID)
	}
	slices.Sort(voters)
	return slices.Equal(voters, slices.Sorted(slices.Values(replicas)))
}
