package multiraft_test

import (
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/multiraft"
)

// A replica moved off a node its leader cannot reach leaves the raft
// configuration while the leader's heartbeat loop to it still waits for a
// call: raft stops that loop only after the follower's replication loop
// has made its last attempt, and the heartbeats that fail meanwhile
// report the follower unreachable after raft reported it removed. The
// leader must not keep reporting a node that is no longer a member: the
// health verdict and the harness's contact check would wait for an answer
// from it for good.
func TestRemovedFollowerIsNotReportedUnreachable(t *testing.T) {
	c := newTwinCluster(t)
	ctx := c.bootstrapWithSpare(60 * time.Second)

	const g = 1
	// The silent node leads neither the group nor the meta group, whose
	// leader keeps the nodes' leases.
	leader, meta := c.waitLeader(g), c.waitLeader(multiraft.MetaGroup)
	var gone string
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != leader && id != meta {
			gone = id
			break
		}
	}
	var via string
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		if id != leader && id != gone {
			via = id
			break
		}
	}
	unreachable := func() ([]string, string) {
		st, err := c.nodes[via].h().LeaderStatus(ctx, g)
		if err != nil {
			return nil, ""
		}
		var ids []string
		for _, u := range st.Unreachable {
			ids = append(ids, u.ID)
		}
		return ids, st.LeaderID
	}

	// The follower goes silent; wait until its leader reports it.
	c.net.Isolate(gone)
	for {
		ids, _ := unreachable()
		if slices.Contains(ids, gone) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the leader of group %d never reported the silent %s unreachable", g, gone)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.nodes[via].h().MoveReplica(ctx, g, gone, "n4"); err != nil {
		t.Fatalf("move group %d from %s to n4: %v", g, gone, err)
	}

	// raft's loops to the removed follower give up within a few calls
	// (each bounded by the transport's dial and RPC timeouts); allow
	// them that, then the leader must not name it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, lead := unreachable()
		if lead != "" && !slices.Contains(ids, gone) {
			t.Logf("leader %s stopped reporting the removed %s", lead, gone)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader %s of group %d still reports %s unreachable 10s after it left the group: %v", lead, g, gone, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And it stays so.
	time.Sleep(3 * time.Second)
	if ids, lead := unreachable(); slices.Contains(ids, gone) {
		t.Fatalf("leader %s of group %d reports the removed %s unreachable again: %v", lead, g, gone, ids)
	}
	c.net.HealAll()
}
