package multiraft

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The health record judges a replica from the observations raft feeds it:
// each case is a sequence of observations, the replica's state and last
// contact, and what its status must say.
func TestReplicaHealthJudgement(t *testing.T) {
	const hb = 100 * time.Millisecond
	// failed is a failed heartbeat to peer from a loop started at the step
	// it is observed in; longAgo is a contact from before every step.
	failed := func(peer string) raft.FailedHeartbeatObservation {
		return raft.FailedHeartbeatObservation{PeerID: raft.ServerID(peer)}
	}
	longAgo := time.Now().Add(-time.Minute)
	for _, tt := range []struct {
		name          string
		steps         []any
		state         raft.RaftState
		contactAgo    time.Duration // 0: never heard from a leader
		wantStuck     string        // substring; "" means not stuck
		wantElections int
		wantUnreach   []string
		justStarted   bool // else the replica started long ago
	}{
		{name: "fresh follower", state: raft.Follower, contactAgo: hb / 4},
		{name: "new replica counts from its start", state: raft.Follower, justStarted: true},
		{name: "silent follower", state: raft.Follower, contactAgo: 4 * hb, wantStuck: "has not heard from a leader"},
		{name: "silent candidate", state: raft.Candidate, contactAgo: 4 * hb,
			steps: []any{raft.Candidate}, wantElections: 1, wantStuck: "it is campaigning"},
		{name: "lost elections", state: raft.Follower, contactAgo: hb / 4,
			steps:         []any{raft.Candidate, raft.Follower, raft.Candidate, raft.Follower, raft.Candidate, raft.Follower},
			wantElections: 3, wantStuck: "started 3 elections"},
		{name: "won elections do not count", state: raft.Follower, contactAgo: hb / 4,
			steps:         []any{raft.Candidate, raft.Leader, raft.Follower, raft.Candidate, raft.Leader, raft.Follower, raft.Candidate, raft.Follower},
			wantElections: 1},
		{name: "leader with a failing follower", state: raft.Leader,
			steps:       []any{raft.Leader, failed("n3")},
			wantUnreach: []string{"n3"}},
		{name: "resumed follower", state: raft.Leader,
			steps: []any{raft.Leader, failed("n3"),
				raft.ResumedHeartbeatObservation{PeerID: "n3"}}},
		{name: "removed follower", state: raft.Leader,
			steps: []any{raft.Leader, failed("n3"),
				raft.PeerObservation{Removed: true, Peer: raft.Server{ID: "n3"}}}},
		{name: "leadership lost", state: raft.Follower, contactAgo: hb / 4,
			steps: []any{raft.Leader, failed("n3"), raft.Follower}},
		// The heartbeat loop of a leadership that ended can report a
		// failure after the step-down, even once the replica campaigns;
		// the next leadership's loop starts fresh and never reports that
		// follower resumed.
		{name: "stale failure of an old leadership", state: raft.Leader,
			steps: []any{raft.Leader, raft.Follower, raft.Candidate,
				failed("n3"), raft.Leader}},
		// The same failure recorded only once the next leadership began:
		// the old loop's follower contact predates it.
		{name: "old leadership's failure after the election", state: raft.Leader,
			steps: []any{raft.Leader, raft.Follower, raft.Candidate, raft.Leader,
				raft.FailedHeartbeatObservation{PeerID: "n3", LastContact: longAgo}}},
		{name: "failure while not leading", state: raft.Candidate, contactAgo: hb / 4,
			steps: []any{raft.Candidate, failed("n3")}, wantElections: 1},
		// raft stops a removed follower's heartbeat loop only after its
		// replication loop's last attempt; the heartbeats that fail
		// meanwhile come after the removal.
		{name: "failure after the follower left", state: raft.Leader,
			steps: []any{raft.Leader, failed("n3"),
				raft.PeerObservation{Removed: true, Peer: raft.Server{ID: "n3"}}, failed("n3")}},
		{name: "follower added back", state: raft.Leader,
			steps: []any{raft.Leader, raft.PeerObservation{Removed: true, Peer: raft.Server{ID: "n3"}},
				raft.PeerObservation{Peer: raft.Server{ID: "n3"}}, failed("n3")},
			wantUnreach: []string{"n3"}},
		{name: "another follower still counts after a removal", state: raft.Leader,
			steps:       []any{raft.Leader, raft.PeerObservation{Removed: true, Peer: raft.Server{ID: "n3"}}, failed("n2")},
			wantUnreach: []string{"n2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rh := newReplicaHealth(hb)
			if !tt.justStarted {
				rh.started = rh.started.Add(-time.Hour)
			}
			for _, d := range tt.steps {
				if f, ok := d.(raft.FailedHeartbeatObservation); ok && f.LastContact.IsZero() {
					// A loop of the leadership at hand: raft starts it, with
					// its follower's contact set to now, after the state
					// change.
					f.LastContact = time.Now()
					d = f
				}
				if rh.observe(&raft.Observation{Data: d}) {
					t.Fatal("the observer passed an observation on: it has no channel")
				}
			}
			now := time.Now()
			var last time.Time
			if tt.contactAgo > 0 {
				last = now.Add(-tt.contactAgo)
			}
			st := GroupStatus{State: tt.state.String()}
			rh.fill(&st, last, now)
			if (tt.wantStuck == "") != (st.Stuck == "") || !strings.Contains(st.Stuck, tt.wantStuck) {
				t.Errorf("stuck %q, want %q", st.Stuck, tt.wantStuck)
			}
			if st.Elections != tt.wantElections {
				t.Errorf("%d elections, want %d", st.Elections, tt.wantElections)
			}
			var unreach []string
			for _, u := range st.Unreachable {
				unreach = append(unreach, u.ID)
			}
			if strings.Join(unreach, ",") != strings.Join(tt.wantUnreach, ",") {
				t.Errorf("unreachable %v, want %v", unreach, tt.wantUnreach)
			}
			if tt.state == raft.Leader && st.ContactAge != 0 {
				t.Errorf("a leader reports a contact age of %v", time.Duration(st.ContactAge))
			}
		})
	}

	// Lost elections age out of the window.
	rh := newReplicaHealth(hb)
	for range 3 {
		rh.observe(&raft.Observation{Data: raft.Candidate})
	}
	st := GroupStatus{State: raft.Follower.String()}
	rh.fill(&st, time.Now(), time.Now().Add(campaignWindowTimeouts*hb+time.Millisecond))
	if st.Elections != 0 || strings.Contains(st.Stuck, "elections") {
		t.Errorf("elections older than the window still count: %d, %q", st.Elections, st.Stuck)
	}
}
