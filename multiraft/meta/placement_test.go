package meta

import (
	"fmt"
	"slices"
	"testing"
)

// The group of a key is part of a cluster's on-disk contract: these values
// must never change.
func TestGroupForKeyIsStable(t *testing.T) {
	// 1 + FNV-1a-64(key) mod groups, computed independently.
	cases := []struct {
		key    string
		groups uint64
		want   uint64
	}{
		{"lobby", 64, 52},
		{"lobby", 1024, 308},
		{"", 1024, 806},
		{"room-1", 7, 5},
		{"日本", 64, 18},
	}
	for _, c := range cases {
		if g := GroupForKey(c.key, c.groups); g != c.want {
			t.Errorf("GroupForKey(%q, %d) = %d, want %d", c.key, c.groups, g, c.want)
		}
	}
	if GroupForKey("x", 0) != 0 {
		t.Error("no groups must map to 0")
	}
}

func TestInitialPlacementIsEven(t *testing.T) {
	for _, tc := range []struct {
		nodes  int
		groups uint64
		r      int
	}{{1, 8, 1}, {3, 64, 3}, {5, 64, 3}, {4, 10, 3}, {7, 1024, 3}} {
		var nodes []string
		for i := range tc.nodes {
			nodes = append(nodes, fmt.Sprintf("n%d", tc.nodes-i)) // unsorted on purpose
		}
		p, err := InitialPlacement(nodes, tc.groups, tc.r)
		if err != nil {
			t.Fatal(err)
		}
		count, first := map[string]int{}, map[string]int{}
		for g := uint64(1); g <= tc.groups; g++ {
			r := p[g]
			if len(r) != tc.r {
				t.Fatalf("group %d has %d replicas", g, len(r))
			}
			if len(slices.Compact(slices.Sorted(slices.Values(r)))) != tc.r {
				t.Fatalf("group %d has a node twice: %v", g, r)
			}
			first[r[0]]++
			for _, n := range r {
				count[n]++
			}
		}
		for _, m := range []map[string]int{count, first} {
			lo, hi := int(^uint(0)>>1), 0
			for _, n := range nodes {
				lo, hi = min(lo, m[n]), max(hi, m[n])
			}
			if hi-lo > 1 {
				t.Errorf("%d nodes, %d groups: uneven spread %v", tc.nodes, tc.groups, m)
			}
		}
	}
	if _, err := InitialPlacement([]string{"a", "b"}, 4, 3); err == nil {
		t.Error("replication above node count accepted")
	}
	if _, err := InitialPlacement([]string{"a", "a"}, 4, 1); err == nil {
		t.Error("duplicate node accepted")
	}
}

func stateOf(nodes []string, groups uint64, r int) *ClusterState {
	s := NewState()
	s.ClusterID, s.Groups, s.Replication = "c", groups, r
	for _, n := range nodes {
		s.Nodes[n] = &NodeInfo{ID: n, State: NodeActive}
	}
	p, _ := InitialPlacement(nodes, groups, r)
	s.Replicas = p
	return s
}

func applyPlan(s *ClusterState, leaders map[uint64]string, plan []Move) {
	for _, m := range plan {
		switch m.Kind {
		case MoveReplica:
			r := s.Replicas[m.Group]
			r[slices.Index(r, m.From)] = m.To
			if leaders[m.Group] == m.From {
				leaders[m.Group] = m.To
			}
		case TransferLeader:
			leaders[m.Group] = m.To
		}
	}
}

func TestPlanBalancesAndConverges(t *testing.T) {
	s := stateOf([]string{"a", "b", "c"}, 12, 3)
	leaders := map[uint64]string{}
	for g := uint64(1); g <= 12; g++ {
		leaders[g] = "a" // the worst case: one node leads everything
	}
	s.Nodes["d"] = &NodeInfo{ID: "d", State: NodeActive}
	s.Nodes["e"] = &NodeInfo{ID: "e", State: NodeActive}
	plan := Plan(s, leaders)
	if len(plan) == 0 {
		t.Fatal("no plan for an unbalanced cluster")
	}
	applyPlan(s, leaders, plan)
	loads, leads := map[string]int{}, map[string]int{}
	for g, r := range s.Replicas {
		if len(slices.Compact(slices.Sorted(slices.Values(r)))) != 3 {
			t.Fatalf("group %d ended with a node twice: %v", g, r)
		}
		for _, n := range r {
			loads[n]++
		}
		if !slices.Contains(r, leaders[g]) {
			t.Fatalf("group %d led by %s, which holds no replica (%v)", g, leaders[g], r)
		}
		leads[leaders[g]]++
	}
	for _, m := range []map[string]int{loads, leads} {
		lo, hi := 1<<30, 0
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			lo, hi = min(lo, m[n]), max(hi, m[n])
		}
		if hi-lo > 1 {
			t.Errorf("after the plan: %v", m)
		}
	}
	if again := Plan(s, leaders); len(again) != 0 {
		t.Errorf("a balanced cluster still plans %v", again)
	}
}

func TestPlanEmptiesDecommissioningNode(t *testing.T) {
	s := stateOf([]string{"a", "b", "c", "d"}, 8, 3)
	s.Nodes["b"].State = NodeDecommissioning
	plan := Plan(s, nil)
	applyPlan(s, map[uint64]string{}, plan)
	if gs := s.GroupsOf("b"); len(gs) != 0 {
		t.Fatalf("b still holds %v after the plan %v", gs, plan)
	}
	for _, m := range plan {
		if m.To == "b" {
			t.Errorf("plan moves onto the leaving node: %v", m)
		}
	}
}
