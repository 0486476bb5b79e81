package multiraft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/logstore"
)

// replica is this node's member of one group: the raft instance and what it
// is built from. The host owns it; it is stopped by stop or drop.
type replica struct {
	group   uint64
	raft    *raft.Raft
	fsm     raft.FSM // the state machine given to startReplica
	tracked *trackedFSM
	logs    raft.LogStore
	store   logstore.Store
	trans   GroupTransport
	snapDir string

	// barrierTerm is the term in which this replica, as leader, has
	// committed a barrier: only then is its commit index known to cover
	// every entry committed by earlier leaders.
	barrierTerm atomic.Uint64
	verify      leaderVerifier
	stopOnce    sync.Once
	health      *replicaHealth

	// appendSlots bounds the entries this node has handed to raft and not
	// seen applied. hashicorp/raft's pipelined replication sends at most
	// MaxAppendEntries entries per new batch the leader writes, and the
	// rest only every CommitTimeout; keeping the backlog below one append
	// means a burst never waits for that timeout (which is long, for idle
	// cost). Proposals beyond the bound wait here, in order of arrival.
	appendSlots chan struct{}
	// closing refuses new appends while the replica stops (drainLog).
	closing atomic.Bool
}

// enterLog takes one of the replica's append slots, waiting at most until
// ctx ends; release gives it back.
func (rep *replica) enterLog(ctx context.Context) (release func(), err error) {
	select {
	case rep.appendSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: group %d: %d proposals already in flight: %v", ErrUnavailable, rep.group, cap(rep.appendSlots), ctx.Err())
	}
	if rep.closing.Load() {
		<-rep.appendSlots
		return nil, fmt.Errorf("%w: group %d: the replica on this node is stopping", ErrUnavailable, rep.group)
	}
	return func() { <-rep.appendSlots }, nil
}

// awaitLogged waits for f, an Apply or Barrier future that holds the
// append slot release gives back, until ctx ends. raft resolves such a
// future only once the state machine applied it, however long that takes
// (a stalled disk under the state store), while the leader keeps its
// lease: the caller must not wait past its deadline, holding its own
// caller and, for a forwarded proposal, one of its peer's call slots. The
// slot goes back when raft resolves the future, not when the caller stops
// waiting, so the backlog bound stays true and drainLog still waits for
// every future in flight; that wait is what bounds the goroutine.
// resolved says whether f was resolved (err is then raft's).
func (rep *replica) awaitLogged(ctx context.Context, f raft.Future, release func()) (resolved bool, err error) {
	done := make(chan error, 1)
	go func() {
		err := f.Error()
		release()
		done <- err
	}()
	select {
	case err := <-done:
		return true, err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// drainLog refuses new appends and waits, at most d, until raft resolved
// every one in flight. raft never resolves an Apply or Barrier future that
// is still queued for its leader loop when it shuts down, so stopping with
// appends in flight would leave their callers (and the node calls serving
// them) waiting forever. Before the leader loop ends raft resolves them: by
// committing, or with a leadership-lost error at the latest one leader
// lease after losing its quorum.
func (rep *replica) drainLog(d time.Duration) bool {
	rep.closing.Store(true)
	t := time.NewTimer(d)
	defer t.Stop()
	for range cap(rep.appendSlots) {
		select {
		case rep.appendSlots <- struct{}{}:
		case <-t.C:
			return false
		}
	}
	return true
}

// drainTimeout bounds how long stopping a replica waits for its appends in
// flight (drainLog): a few leader leases.
const drainTimeout = 5 * time.Second

// startReplica opens the group's storage and transport and starts raft. A
// non-nil bootstrap is applied only when the group has no state yet.
func (h *Host) startReplica(group uint64, sm raft.FSM, applied uint64, timing Timing, bootstrap *raft.Configuration) (*replica, error) {
	rep := &replica{group: group, fsm: sm, health: newReplicaHealth(timing.HeartbeatTimeout), tracked: &trackedFSM{inner: sm, group: group, obs: h.cfg.Observer}, snapDir: h.snapDir(group)}
	fail := func(err error) (*replica, error) {
		if rep.trans != nil {
			rep.trans.Close()
		}
		if rep.store != nil {
			h.logs.CloseGroup(group)
		}
		return nil, fmt.Errorf("multiraft: start group %d on node %s: %w", group, h.cfg.NodeID, err)
	}
	if dr, ok := h.logs.(logstore.DamageReporter); ok {
		if why := dr.Damaged(group); why != "" {
			if group == MetaGroup {
				// A meta replica that lost log entries or its vote must
				// not take part; it is not rebuilt by a repair.
				return fail(fmt.Errorf("%w: the meta group's raft log lost data: %s; remove this node from the cluster and replace its disk", logstore.ErrCorrupt, why))
			}
			return fail(&brokenStart{reason: "raft log: " + why})
		}
	}
	var err error
	if rep.store, err = h.logs.Group(group); err != nil {
		return fail(err)
	}
	if rep.trans, err = h.peers.Group(group); err != nil {
		return fail(err)
	}
	hlog := newRaftLogger(h.log, group)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(rep.snapDir, 1, hlog)
	if err != nil {
		return fail(err)
	}
	conf := timing.raftConfig(h.cfg.NodeID)
	conf.Logger = hlog
	// Two entries of headroom for raft's own: a leader's no-op and one
	// configuration change.
	rep.appendSlots = make(chan struct{}, max(1, conf.MaxAppendEntries-2))
	if list, err := snaps.List(); err == nil && len(list) > 0 && applied >= list[0].Index {
		// The state machine's own storage is already past the newest
		// snapshot: restoring it would only move the state backwards.
		conf.NoSnapshotRestoreOnStart = true
	}
	var damage string
	if group != MetaGroup {
		var broken bool
		if _, damage, broken = verifyReplica(snaps, rep.store, applied); broken {
			return fail(&brokenStart{reason: damage})
		}
	}
	logs, err := raft.NewLogCache(conf.MaxAppendEntries, rep.store)
	if err != nil {
		return fail(err)
	}
	if bootstrap != nil {
		has, err := raft.HasExistingState(logs, rep.store, snaps)
		if err != nil {
			return fail(err)
		}
		if !has {
			if err := raft.BootstrapCluster(conf, logs, rep.store, snaps, rep.trans, *bootstrap); err != nil {
				return fail(err)
			}
		}
	}
	rep.logs = logs
	if rep.raft, err = raft.NewRaft(conf, rep.tracked, logs, rep.store, snaps, rep.trans); err != nil {
		return fail(err)
	}
	rep.raft.RegisterObserver(raft.NewObserver(h.observations, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	// An observer without a channel: its filter records what the replica's
	// health needs, on raft's goroutine, with no goroutine of ours.
	rep.raft.RegisterObserver(raft.NewObserver(nil, false, rep.health.observe))
	if damage != "" {
		h.reportDamage(group, damage, false)
	}
	return rep, nil
}

// snapDir is where the raft snapshots of group's replica are kept.
func (h *Host) snapDir(group uint64) string {
	return filepath.Join(h.cfg.DataDir, "snapshots", fmt.Sprintf("g%d", group))
}

// raftShutdownGrace is how long stopping a replica lets raft shut down
// before it closes the group's transport under it. raft closes the
// transport only after all its goroutines have ended, so one of them
// blocked in a transport call (waiting for a peer, a heartbeat batch)
// would otherwise hold the shutdown until that call gives up.
const raftShutdownGrace = 2 * time.Second

// stopReplica shuts raft down and releases the transport and log store;
// the data stays for a restart. It waits at most drain for appends in
// flight (drainLog) and tells step what it is doing, so a stop that hangs
// can say where.
func (h *Host) stopReplica(rep *replica, drain time.Duration, step func(string)) error {
	var err error
	rep.stopOnce.Do(func() {
		step("waiting for appends in flight")
		if !rep.drainLog(drain) {
			h.log.Warn("stopping a replica with appends in flight", "group", rep.group, "after", drain)
		}
		step("waiting for leader checks in flight")
		if !rep.verify.stop(drain) {
			h.log.Warn("stopping a replica with a leader check in flight", "group", rep.group, "after", drain)
		}
		step("raft shutdown")
		done := make(chan struct{})
		go func() { // ends with raft's shutdown, which the wait below waits for
			defer close(done)
			err = rep.raft.Shutdown().Error()
		}()
		t := time.NewTimer(raftShutdownGrace)
		select {
		case <-done:
		case <-t.C:
			h.log.Warn("raft shutdown is slow; closing the group's transport under it", "group", rep.group, "after", raftShutdownGrace)
			step("raft shutdown, transport closed")
			rep.trans.Close()
			<-done
		}
		t.Stop()
		step("closing transport")
		rep.trans.Close()
		step("closing raft log")
		if cerr := h.logs.CloseGroup(rep.group); err == nil {
			err = cerr
		}
		if sm, ok := rep.fsm.(StateMachine); ok {
			step("closing state machine")
			if cerr := sm.Close(); err == nil {
				err = cerr
			}
		}
	})
	return err
}

// dropReplica stops the replica and deletes its raft log, snapshots and,
// when the state machine can, its state.
func (h *Host) dropReplica(rep *replica) error {
	err := h.stopReplica(rep, drainTimeout, func(string) {})
	if testHookDropStopped != nil {
		testHookDropStopped(h, rep.group)
	}
	if derr := h.logs.DropGroup(rep.group); err == nil {
		err = derr
	}
	if derr := os.RemoveAll(rep.snapDir); err == nil {
		err = derr
	}
	if d, ok := rep.fsm.(interface{ Drop() error }); ok {
		if derr := d.Drop(); err == nil {
			err = derr
		}
	}
	return err
}

// testHookDropStopped, when set, runs in dropReplica between stopping the
// replica and deleting its data.
var testHookDropStopped func(h *Host, group uint64)

// readIndex returns an index such that a read of state at or after it is
// linearizable: the leader's commit index, confirmed by a quorum after the
// index was noted. Only a leader can answer.
func (rep *replica) readIndex(ctx context.Context) (uint64, error) {
	if rep.raft.State() != raft.Leader {
		return 0, rep.notLeader()
	}
	term := rep.raft.CurrentTerm()
	if rep.barrierTerm.Load() != term {
		timeout := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		release, err := rep.enterLog(ctx)
		if err != nil {
			return 0, err
		}
		if resolved, err := rep.awaitLogged(ctx, rep.raft.Barrier(timeout), release); !resolved {
			return 0, fmt.Errorf("%w: group %d: the leader's barrier was not applied in time: %v", ErrUnavailable, rep.group, err)
		} else if err != nil {
			return 0, rep.raftError(err, false)
		}
		rep.barrierTerm.Store(term)
	}
	index := rep.raft.CommitIndex()
	if err := rep.verify.verify(ctx, rep.raft, rep.trans); err != nil {
		return 0, rep.raftError(err, false)
	}
	return index, nil
}

// waitApplied waits until the replica's state machine has applied every
// entry up to index. raft's own AppliedIndex counts entries handed to the
// state machine's queue, not applied ones, so it is only the first step.
func (rep *replica) waitApplied(ctx context.Context, index uint64) error {
	delay := 200 * time.Microsecond
	for rep.raft.AppliedIndex() < index || !rep.stateMachineAt(index) {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: group %d applied %d of %d: %v", ErrUnavailable, rep.group, rep.raft.AppliedIndex(), index, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Millisecond)
	}
	return nil
}

// stateMachineAt reports whether the state machine has applied every entry
// it will ever see up to index: those after the last index it applied are
// only entries raft keeps from it (no-ops, barriers) or entries a snapshot
// it restored covers.
func (rep *replica) stateMachineAt(index uint64) bool {
	var l raft.Log
	for i := rep.tracked.applied.Load() + 1; i <= index; i++ {
		if err := rep.logs.GetLog(i, &l); err != nil {
			continue // compacted into a snapshot the state machine holds
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

func (rep *replica) notLeader() error {
	addr, id := rep.raft.LeaderWithID()
	return &NotLeaderError{Group: rep.group, LeaderID: string(id), LeaderAddr: string(addr)}
}

// raftError turns a raft error into the host's typed errors. applied says
// whether the command had been handed to raft: after that, only an error
// raft gives before appending it (not leader, enqueue timeout) proves it
// will not commit; anything else leaves the outcome unknown.
func (rep *replica) raftError(err error, applied bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return rep.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout) || !applied:
		return fmt.Errorf("%w: group %d: %v", ErrUnavailable, rep.group, err)
	}
	return fmt.Errorf("%w: group %d: %v", ErrUnknownOutcome, rep.group, err)
}

// leaderVerifier shares one VerifyLeader among the reads that arrive while
// another is in flight. A read joins only a round that has not started, so
// the round it waits for began after the read noted its commit index.
//
// raft never answers a VerifyLeader that is still queued for its main loop
// when it shuts down, so the replica stops the verifier first (stop), while
// raft still answers every round: within a leader lease, or at once when it
// does not lead.
type leaderVerifier struct {
	mu      sync.Mutex    // guards next, running and stopped
	next    *verifyRound  // the round new reads join; nil once it started
	running chan struct{} // closed when the run goroutine returns; nil when none runs
	stopped bool          // the replica is stopping: no new round starts
}

type verifyRound struct {
	done chan struct{}
	err  error // written once, before done is closed
}

func (v *leaderVerifier) verify(ctx context.Context, r *raft.Raft, trans GroupTransport) error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &verifyRound{done: make(chan struct{})}
	}
	if v.stopped {
		v.mu.Unlock()
		return raft.ErrRaftShutdown
	}
	round := v.next
	if v.running == nil {
		ended := make(chan struct{})
		v.running = ended
		go func() { // owned by the replica: its stop waits for it
			defer close(ended)
			v.run(r, trans)
		}()
	}
	v.mu.Unlock()
	select {
	case <-round.done:
		return round.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run verifies rounds until none is waiting. It ends on its own while raft
// runs (see leaderVerifier for why the replica stops it first). While it
// runs, the group's heartbeats all reach the followers: leadership is
// confirmed by answers given now, never by batched acknowledgements.
func (v *leaderVerifier) run(r *raft.Raft, trans GroupTransport) {
	end := trans.BeginLeaderCheck()
	defer end()
	for {
		v.mu.Lock()
		round := v.next
		v.next = nil
		if round == nil {
			v.running = nil
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		round.err = r.VerifyLeader().Error()
		close(round.done)
	}
}

// stop refuses new rounds and waits, at most d, for the rounds under way.
func (v *leaderVerifier) stop(d time.Duration) bool {
	v.mu.Lock()
	v.stopped = true
	ended := v.running
	v.mu.Unlock()
	if ended == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ended:
		return true
	case <-t.C:
		return false
	}
}

// trackedFSM wraps a replica's state machine to know the last index it has
// applied, which raft itself does not say, and how long applying took.
type trackedFSM struct {
	inner   raft.FSM
	group   uint64
	obs     Observer
	applied atomic.Uint64
}

var _ raft.BatchingFSM = (*trackedFSM)(nil)

func (t *trackedFSM) Apply(l *raft.Log) any {
	res := t.inner.Apply(l)
	t.applied.Store(l.Index)
	return res
}

func (t *trackedFSM) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	var out []any
	if b, ok := t.inner.(raft.BatchingFSM); ok {
		out = b.ApplyBatch(logs)
	} else {
		out = make([]any, len(logs))
		for i, l := range logs {
			out[i] = t.inner.Apply(l)
		}
	}
	if n := len(logs); n > 0 {
		t.applied.Store(logs[n-1].Index)
		t.obs.Applied(t.group, n, time.Since(start))
	}
	return out
}

func (t *trackedFSM) Snapshot() (raft.FSMSnapshot, error) { return t.inner.Snapshot() }
func (t *trackedFSM) Restore(rc io.ReadCloser) error      { return t.inner.Restore(rc) }
