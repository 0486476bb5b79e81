package multiraft_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/multiraft"
)

// TestDecommissionRidesOutLostMetaReplies: a decommission whose meta
// proposals find no leader, or commit but lose their replies (as when the
// meta group elects a new leader under them), finishes instead of failing
// halfway: the executor reads the meta state to learn whether each command
// took effect, and proposes it again if not.
func TestDecommissionRidesOutLostMetaReplies(t *testing.T) {
	// The first proposal of each kind fails before it is made, the second
	// commits but its reply is lost.
	var mu sync.Mutex
	asked := map[string]int{}
	restore := multiraft.MetaFaultsForTest(func(cmd []byte, committed bool) bool {
		var c struct {
			Op string `json:"op"`
		}
		if json.Unmarshal(cmd, &c) != nil {
			return false
		}
		switch c.Op {
		case "set_state", "set_replicas", "end_op", "remove_node":
		default:
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if !committed {
			asked[c.Op]++
			return asked[c.Op] == 1
		}
		return asked[c.Op] == 2
	})
	t.Cleanup(restore) // after the cluster stopped: cleanups run last in, first out

	c := newTwinCluster(t)
	c.bootstrap(4, 3, "n1", "n2", "n3", "n4")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.nodes["n3"].h().Decommission(ctx, "n1"); err != nil {
		t.Fatalf("decommission n1 with lost meta replies: %v", err)
	}
	mu.Lock()
	for _, op := range []string{"set_state", "set_replicas", "remove_node"} {
		if asked[op] < 2 {
			t.Errorf("%s was proposed %d times; the test needs a dropped proposal and a lost reply", op, asked[op])
		}
	}
	t.Logf("meta proposals made: %v", asked)
	mu.Unlock()
	checkDecommissioned(ctx, t, c.nodes["n2"].h(), "n1", 4)
}
