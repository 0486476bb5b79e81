package meta

import (
	"slices"
	"testing"
	"time"
)

// leaseState has registered nodes a, b and c (epochs 5, 6, 7), d with an
// expired lease and e not registered yet.
func leaseState() *ClusterState {
	s := NewState()
	for id, n := range map[string]*NodeInfo{
		"a": {Epoch: 5}, "b": {Epoch: 6}, "c": {Epoch: 7},
		"d": {Epoch: 8, LeaseExpired: true}, "e": {},
	} {
		n.ID, n.State = id, NodeActive
		s.Nodes[id] = n
	}
	return s
}

func TestLeaseExpiry(t *testing.T) {
	const ttl = 10 * time.Second
	t0 := time.Unix(1000, 0)
	// check: at t0+at, the leader of term finds want expired.
	type check struct {
		term uint64
		at   time.Duration
		want []string
	}
	type renewal struct {
		term uint64
		node string
		at   time.Duration // after t0
	}
	for _, tc := range []struct {
		name     string
		renewals []renewal
		checks   []check // at increasing times
	}{
		{
			name:   "a node not seen this term gets a full TTL from the first check",
			checks: []check{{2, 0, nil}, {2, ttl, nil}, {2, ttl + time.Millisecond, []string{"a", "b", "c"}}},
		},
		{
			name:     "renewals keep a lease; one not renewed for more than a TTL expires",
			renewals: []renewal{{2, "a", 0}, {2, "b", 0}, {2, "c", 0}, {2, "a", 8 * time.Second}, {2, "b", 8 * time.Second}},
			checks:   []check{{2, ttl, nil}, {2, ttl + time.Millisecond, []string{"c"}}, {2, 18 * time.Second, []string{"c"}}, {2, 18*time.Second + 1, []string{"a", "b", "c"}}},
		},
		{
			name:     "a new term forgets the old leader's renewals and starts every node anew",
			renewals: []renewal{{2, "a", 0}, {2, "b", 0}, {2, "c", 0}},
			checks:   []check{{3, 30 * time.Second, nil}, {3, 40 * time.Second, nil}, {3, 40*time.Second + 1, []string{"a", "b", "c"}}},
		},
		{
			name:     "a renewal seen in a later term counts in that term only",
			renewals: []renewal{{3, "a", 25 * time.Second}},
			checks:   []check{{3, 20 * time.Second, nil}, {3, 31 * time.Second, []string{"b", "c"}}, {3, 36 * time.Second, []string{"a", "b", "c"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Leases
			st := leaseState()
			for _, r := range tc.renewals {
				l.Renew(r.term, r.node, t0.Add(r.at))
			}
			for _, c := range tc.checks {
				got := l.Expired(st, c.term, t0.Add(c.at), ttl)
				if !slices.Equal(got, c.want) {
					t.Errorf("term %d at %v: expired %v, want %v", c.term, c.at, got, c.want)
				}
				if slices.Contains(got, "d") || slices.Contains(got, "e") {
					t.Errorf("an expired or unregistered node expired again: %v", got)
				}
			}
		})
	}
}

func TestLeaseRules(t *testing.T) {
	st := leaseState()
	for _, tc := range []struct {
		node    string
		epoch   uint64
		renewal Renewal
	}{
		{"a", 5, RenewOK},
		{"a", 4, RenewExpired},  // a newer process registered
		{"a", 6, RenewUnknown},  // registered, not yet applied here
		{"d", 8, RenewExpired},  // ran out
		{"zz", 1, RenewUnknown}, // not a member (yet)
		{"e", 0, RenewOK},
	} {
		if got := st.Renewal(tc.node, tc.epoch); got != tc.renewal {
			t.Errorf("renewal of %s at epoch %d: %v, want %v", tc.node, tc.epoch, got, tc.renewal)
		}
	}
	for _, tc := range []struct {
		node       string
		live, down bool
		target     uint64
	}{
		{"a", true, false, 5},
		{"d", false, true, 9}, // its current epoch goes too
		{"e", false, false, 0},
		{"zz", false, true, 0},
	} {
		if st.NodeLive(tc.node) != tc.live || st.NodeDown(tc.node) != tc.down {
			t.Errorf("%s: live %v down %v, want %v %v", tc.node, st.NodeLive(tc.node), st.NodeDown(tc.node), tc.live, tc.down)
		}
		if n := st.Nodes[tc.node]; n != nil && n.ExpireTarget() != tc.target {
			t.Errorf("%s: expire below %d, want %d", tc.node, n.ExpireTarget(), tc.target)
		}
	}
}
