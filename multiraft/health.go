package multiraft

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Replica health.
//
// raft keeps a replica's contact with its group private: a follower knows
// when it last heard from a leader (Raft.LastContact), a leader knows when
// each follower last answered, but only logs it ("failed to contact").
// A follower cut off from its leader, while the rest of its group goes on,
// only shows as a replica that campaigns in vain; nothing else fails. So
// every replica watches its own raft through an observer and reports what
// it saw in its GroupStatus, judged against its own heartbeat timeout.

const (
	// stuckContactTimeouts is how many heartbeat timeouts a replica may go
	// without hearing from a leader before it counts as stuck. One timeout
	// (randomized up to two) starts an election and an election takes about
	// one more, so a replica that recovered normally is back well within
	// three.
	stuckContactTimeouts = 3
	// campaignWindowTimeouts is the window, in heartbeat timeouts, over
	// which lost elections are counted, and campaignLimit the elections in
	// it that make a replica count as campaigning. A leader's failure costs
	// its followers one election, a split vote a second.
	campaignWindowTimeouts = 20
	campaignLimit          = 3
)

// replicaHealth is what a replica's observer records. It is written from
// raft's goroutines through the observer's filter and read by Status.
type replicaHealth struct {
	// started and hbTO are set at construction, read-only after.
	started time.Time // when the replica started: contact is counted from here at the latest
	hbTO    time.Duration

	mu sync.Mutex
	// elections are the times this replica became a candidate and did
	// not win, newest last, at most campaignLimit of them; guarded by mu.
	elections []time.Time
	// failing are the followers whose heartbeats fail, while this replica
	// leads, with the last time each answered; guarded by mu.
	failing map[string]time.Time
	// leaderSince is when the replica's current leadership began, zero
	// while it does not lead; removed are the followers raft stopped
	// replicating to during it. Both sort out the failures that loops of
	// an ended leadership, or of a follower that left, report late
	// (observe); guarded by mu.
	leaderSince time.Time
	removed     map[string]bool
}

func newReplicaHealth(hbTimeout time.Duration) *replicaHealth {
	return &replicaHealth{started: time.Now(), hbTO: hbTimeout}
}

// observe records o and keeps it from the observer's channel. raft calls
// it on its own goroutines (the main loop, a follower's replication loop),
// so it takes only the replica's small lock.
func (rh *replicaHealth) observe(o *raft.Observation) bool {
	now := time.Now()
	switch d := o.Data.(type) {
	case raft.RaftState:
		rh.mu.Lock()
		if d == raft.Candidate {
			rh.elections = append(rh.elections, now)
			if len(rh.elections) > campaignLimit {
				rh.elections = slices.Delete(rh.elections, 0, len(rh.elections)-campaignLimit)
			}
		}
		if d == raft.Leader && len(rh.elections) > 0 {
			// An election won (a leadership transfer's, or after a leader
			// failed) is not campaigning in vain.
			rh.elections = rh.elections[:len(rh.elections)-1]
		}
		// Every change of state starts over: a new leadership has fresh
		// replication loops, and the loops of an old one keep reporting
		// failed heartbeats for a while after it ended, which no resumed
		// heartbeat of theirs will ever clear.
		rh.failing, rh.removed, rh.leaderSince = nil, nil, time.Time{}
		if d == raft.Leader {
			rh.leaderSince = now
		}
		rh.mu.Unlock()
	case raft.FailedHeartbeatObservation:
		rh.mu.Lock()
		if rh.current(d) {
			if rh.failing == nil {
				rh.failing = map[string]time.Time{}
			}
			rh.failing[string(d.PeerID)] = d.LastContact
		}
		rh.mu.Unlock()
	case raft.ResumedHeartbeatObservation:
		rh.mu.Lock()
		delete(rh.failing, string(d.PeerID))
		rh.mu.Unlock()
	case raft.PeerObservation:
		id := string(d.Peer.ID)
		rh.mu.Lock()
		if d.Removed {
			delete(rh.failing, id)
			if rh.removed == nil {
				rh.removed = map[string]bool{}
			}
			rh.removed[id] = true
		} else {
			delete(rh.removed, id)
		}
		rh.mu.Unlock()
	}
	return false
}

// current reports whether a failed heartbeat comes from a loop of the
// replica's current leadership to a follower it still replicates to;
// rh.mu is held.
//
// raft tells neither which loop reported a failure nor when a loop ends:
// it stops a follower's heartbeat loop only after that follower's
// replication loop has made its last attempt, which waits for the peer as
// long as the transport lets it. So failures arrive after the step-down
// that ended their leadership, after the next leadership began (a
// goroutine that logged its failure before the election can record it
// after), and after raft reported the follower removed. The loops of the
// current leadership would clear such a record only by failing and then
// succeeding, which a reachable follower never does, and a removed one is
// never heard from again: the record would stay for good.
//
// A loop of this leadership starts with its follower's contact set to its
// own start, after the state change, and moves it only forward, so a
// failure with an earlier contact is an old loop's. A follower removed
// during this leadership is heard from again only once raft adds it back.
// One case is left: a follower removed and added back while its old loop
// still waits, whose late failure then counts as the new loop's.
func (rh *replicaHealth) current(d raft.FailedHeartbeatObservation) bool {
	return !rh.leaderSince.IsZero() && !d.LastContact.Before(rh.leaderSince) && !rh.removed[string(d.PeerID)]
}

// PeerContact is a follower its leader cannot reach.
type PeerContact struct {
	ID string `json:"id"`
	// Since is how long ago the follower last answered the leader (on the
	// leader's clock; the whole time the leader led when it never did).
	Since Duration `json:"since"`
}

// Duration is a time.Duration that is written to JSON as a Go duration
// string ("1.5s").
type Duration time.Duration

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// fill adds the replica's contact and campaign record to st, judged at now.
func (rh *replicaHealth) fill(st *GroupStatus, last time.Time, now time.Time) {
	st.HeartbeatTimeout = Duration(rh.hbTO)
	if st.State != raft.Leader.String() {
		// A replica that never heard from a leader counts from its start:
		// raft's zero time would make every new replica look stuck.
		last = later(last, rh.started)
		st.ContactAge = Duration(now.Sub(last).Round(time.Millisecond))
	}
	window := now.Add(-campaignWindowTimeouts * rh.hbTO)
	rh.mu.Lock()
	for _, t := range rh.elections {
		if t.After(window) {
			st.Elections++
		}
	}
	for id, t := range rh.failing {
		since := now.Sub(later(t, rh.started))
		st.Unreachable = append(st.Unreachable, PeerContact{ID: id, Since: Duration(since.Round(time.Millisecond))})
	}
	rh.mu.Unlock()
	slices.SortFunc(st.Unreachable, func(a, b PeerContact) int { return cmp.Compare(a.ID, b.ID) })
	stuckAfter := stuckContactTimeouts * rh.hbTO
	switch {
	case st.State == raft.Shutdown.String():
	case st.State != raft.Leader.String() && time.Duration(st.ContactAge) > stuckAfter:
		st.Stuck = fmt.Sprintf("has not heard from a leader for %v (more than %d heartbeat timeouts of %v)",
			time.Duration(st.ContactAge).Round(100*time.Millisecond), stuckContactTimeouts, rh.hbTO)
		if st.State == raft.Candidate.String() {
			st.Stuck += "; it is campaigning"
		}
	case st.Elections >= campaignLimit:
		st.Stuck = fmt.Sprintf("started %d elections in the last %v and won none", st.Elections, campaignWindowTimeouts*rh.hbTO)
	}
}

// cutOff reports whether r, a follower, has gone without hearing from a
// leader for longer than a stuck replica may.
func (rh *replicaHealth) cutOff(r *raft.Raft) bool {
	if r.State() == raft.Leader {
		return false
	}
	return time.Since(later(r.LastContact(), rh.started)) > stuckContactTimeouts*rh.hbTO
}

// StuckReplicas returns, by group, why each local replica that is stuck is
// (GroupStatus.Stuck). It asks nothing of raft's main loop, unlike Status,
// so probes may call it often whatever the number of groups.
func (h *Host) StuckReplicas() map[uint64]string {
	h.mu.RLock()
	reps := make([]*replica, 0, len(h.replicas))
	for _, rep := range h.replicas {
		reps = append(reps, rep)
	}
	h.mu.RUnlock()
	var out map[uint64]string
	now := time.Now()
	for _, rep := range reps {
		st := GroupStatus{State: rep.raft.State().String()}
		rep.health.fill(&st, rep.raft.LastContact(), now)
		if st.Stuck != "" {
			if out == nil {
				out = map[uint64]string{}
			}
			out[rep.group] = st.Stuck
		}
	}
	return out
}

// StuckAfter is how long the replica that reported st may go without
// hearing from a leader before it counts as stuck.
func (st GroupStatus) StuckAfter() time.Duration {
	return stuckContactTimeouts * time.Duration(st.HeartbeatTimeout)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
