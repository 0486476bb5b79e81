package admin_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
)

// TestAdminHealthStuckReplica cuts every link into one node while its own
// links out stay up, as in the incident behind this check: the node's
// replicas stop hearing their leaders and campaign in vain, every group
// keeps a leader and a quorum, and every node still answers the admin API.
// The verdict must turn degraded naming the node's replicas, and return to
// ok once the links heal.
func TestAdminHealthStuckReplica(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 3, Groups: 2, Replication: 3, PeerProxies: true})
	ctx := eventually.Within(t, 90*time.Second)
	// n3 must follow, not lead: a leader whose own links out are up keeps
	// its quorum, and its groups are healthy.
	for g := uint64(0); g <= 2; g++ {
		if err := c.Node(0).Host().TransferLeader(ctx, g, "n1"); err != nil {
			t.Fatalf("transfer group %d to n1: %v", g, err)
		}
	}
	n3 := admin.NewClient(c.HTTP(2), token)
	n1 := admin.NewClient(c.HTTP(0), token)
	waitVerdict(t, n3, "before the cut", func(st *admin.Status) bool { return st.Health.Verdict == admin.HealthOK })

	c.Proxy(2).Block("n1", "n2")
	st := waitVerdict(t, n3, "n3 cut off from its leaders", func(st *admin.Status) bool {
		return st.Health.Verdict == admin.HealthDegraded && hasReason(st, "group 1: the replica on n3 has not heard from a leader") &&
			hasReason(st, "group 2: the replica on n3 has not heard from a leader")
	})
	t.Logf("n3's verdict: %s %q", st.Health.Verdict, st.Health.Reasons)
	for _, g := range st.GroupList[1:] {
		for _, r := range g.Replicas {
			stuck := r.Node == "n3"
			if r.Status == nil || r.Status.Error != "" || (r.Status.Stuck != "") != stuck {
				t.Errorf("group %d, replica on %s: status %+v, want stuck=%v", g.ID, r.Node, r.Status, stuck)
			}
			// Stuck means silent for longer than the group's bound (900ms
			// here), which a status read right then shows, not a second.
			if stuck && (g.StuckAfter == 0 || r.Status.LastContact <= g.StuckAfter) {
				t.Errorf("group %d, stuck replica on n3 reports its last contact %v ago (stuck after %v)", g.ID, time.Duration(r.Status.LastContact), time.Duration(g.StuckAfter))
			}
		}
	}
	// The leader's side: n1's heartbeats to n3 fail, and n1's view names it.
	st = waitVerdict(t, n1, "n1's view of n3 cut off", func(st *admin.Status) bool {
		for _, g := range st.GroupList[1:] {
			found := false
			for _, u := range g.Unreachable {
				found = found || (u.Node == "n3" && u.Since > g.StuckAfter)
			}
			if g.Leader != "n1" || !found {
				return false
			}
		}
		return st.Health.Verdict == admin.HealthDegraded && slices.ContainsFunc(st.Health.Reasons, func(r string) bool {
			return strings.HasPrefix(r, "node n3 did not answer") && strings.Contains(r, "have had no answer from it either")
		})
	})
	t.Logf("n1's verdict: %s %q", st.Health.Verdict, st.Health.Reasons)

	// The cut-off node keeps telling the truth while the cut lasts: its
	// meta replica is stuck too, and must not make it report the meta
	// group as gone.
	time.Sleep(2 * time.Second)
	waitVerdict(t, n3, "n3 cut off for a while", func(st *admin.Status) bool {
		return st.Health.Verdict == admin.HealthDegraded && st.StateSource == "meta" &&
			hasReason(st, "group 1: the replica on n3 has not heard from a leader")
	})

	c.Proxy(2).Unblock()
	waitVerdict(t, n3, "after the heal", func(st *admin.Status) bool { return st.Health.Verdict == admin.HealthOK })
	waitVerdict(t, n1, "after the heal", func(st *admin.Status) bool { return st.Health.Verdict == admin.HealthOK })
}

// waitVerdict polls a node's status until ok accepts it, for up to 30s.
func waitVerdict(t *testing.T, cl *admin.Client, what string, ok func(*admin.Status) bool) *admin.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last *admin.Status
	for {
		st, err := cl.Status(eventually.Within(t, 10*time.Second))
		if err == nil {
			last = st
			if ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			if last == nil {
				t.Fatalf("%s: no status within 30s: %v", what, err)
			}
			t.Fatalf("%s: health never became as expected within 30s; last: %s %q", what, last.Health.Verdict, last.Health.Reasons)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hasReason(st *admin.Status, prefix string) bool {
	for _, r := range st.Health.Reasons {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}
