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
}

func TestInitialPlacementRefusesImpossibleSpecs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []string
		r     int
	}{
		{"no nodes", nil, 1},
		{"replication above the node count", []string{"a", "b"}, 3},
		{"no replication", []string{"a", "b"}, 0},
		{"negative replication", []string{"a"}, -1},
		{"a node twice", []string{"a", "b", "a"}, 1},
	} {
		if p, err := InitialPlacement(tc.nodes, 4, tc.r); err == nil {
			t.Errorf("%s: placed %v", tc.name, p)
		}
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

// A plan, applied, leaves every group with its replication on distinct
// active nodes, replicas and leaders even over the active nodes, every
// leader on one of its group's replicas, and nothing more to plan.
func TestPlanAfterMembershipChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nodes  []string
		groups uint64
		r      int
		add    []string // joined after placement, with no replicas
		leave  []string // decommissioning
		// oneLeader: a single node leads every group, the worst case for
		// leader balance; otherwise each group's first replica leads.
		oneLeader bool
	}{
		{name: "one node added to three", nodes: []string{"a", "b", "c"}, groups: 8, r: 3, add: []string{"d"}},
		{name: "two nodes added to three, one leader", nodes: []string{"a", "b", "c"}, groups: 12, r: 3, add: []string{"d", "e"}, oneLeader: true},
		{name: "a node added to seven, many groups", nodes: []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"}, groups: 64, r: 3, add: []string{"n8"}},
		{name: "replication one", nodes: []string{"a", "b"}, groups: 6, r: 1, add: []string{"c", "d"}},
		{name: "one of five leaves", nodes: []string{"a", "b", "c", "d", "e"}, groups: 16, r: 3, leave: []string{"c"}},
		{name: "two of five leave", nodes: []string{"a", "b", "c", "d", "e"}, groups: 10, r: 3, leave: []string{"a", "e"}, oneLeader: true},
		{name: "one leaves as one joins", nodes: []string{"a", "b", "c"}, groups: 9, r: 3, add: []string{"d"}, leave: []string{"b"}},
		{name: "already balanced", nodes: []string{"a", "b", "c", "d"}, groups: 8, r: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stateOf(tc.nodes, tc.groups, tc.r)
			for _, n := range tc.add {
				s.Nodes[n] = &NodeInfo{ID: n, State: NodeActive}
			}
			for _, n := range tc.leave {
				s.Nodes[n].State = NodeDecommissioning
			}
			leaders := map[uint64]string{}
			for g, r := range s.Replicas {
				leaders[g] = r[0]
				if tc.oneLeader {
					leaders[g] = s.Replicas[1][0]
				}
			}
			if tc.oneLeader {
				for g := range s.Replicas {
					if !slices.Contains(s.Replicas[g], leaders[g]) {
						s.Replicas[g][0] = leaders[g] // keep the leader a replica
					}
				}
			}
			plan := Plan(s, leaders)
			if again := Plan(s, leaders); !slices.Equal(plan, again) {
				t.Fatalf("the plan is not deterministic:\n%v\n%v", plan, again)
			}
			for _, m := range plan {
				if slices.Contains(tc.leave, m.To) {
					t.Errorf("plan moves onto a leaving node: %v", m)
				}
			}
			applyPlan(s, leaders, plan)
			var active []string
			for _, id := range s.NodeIDs() {
				if s.Nodes[id].State == NodeActive {
					active = append(active, id)
				}
			}
			loads, leads := map[string]int{}, map[string]int{}
			for g := uint64(1); g <= tc.groups; g++ {
				r := s.Replicas[g]
				if len(r) != tc.r || len(slices.Compact(slices.Sorted(slices.Values(r)))) != tc.r {
					t.Fatalf("group %d has replicas %v, want %d distinct", g, r, tc.r)
				}
				for _, n := range r {
					if !slices.Contains(active, n) {
						t.Errorf("group %d keeps a replica on leaving node %s", g, n)
					}
					loads[n]++
				}
				if !slices.Contains(r, leaders[g]) {
					t.Errorf("group %d led by %s, which holds no replica (%v)", g, leaders[g], r)
				}
				leads[leaders[g]]++
			}
			for what, m := range map[string]map[string]int{"replicas": loads, "leaders": leads} {
				lo, hi := 1<<30, 0
				for _, n := range active {
					lo, hi = min(lo, m[n]), max(hi, m[n])
				}
				if hi-lo > 1 {
					t.Errorf("%s uneven after the plan: %v", what, m)
				}
			}
			if again := Plan(s, leaders); len(again) != 0 {
				t.Errorf("after the plan, still planned: %v", again)
			}
		})
	}
}

// When no active node can take a leaving node's replica without holding
// two of one group, the plan moves none (Decommission then says so).
func TestPlanCannotEmptyANodeNeededForReplication(t *testing.T) {
	s := stateOf([]string{"a", "b", "c"}, 4, 3)
	s.Nodes["c"].State = NodeDecommissioning
	for _, m := range Plan(s, nil) {
		if m.Kind == MoveReplica {
			t.Errorf("planned %v with nowhere to go", m)
		}
	}
}

func TestPlanWithoutActiveNodesIsEmpty(t *testing.T) {
	s := stateOf([]string{"a", "b"}, 2, 1)
	for _, n := range s.Nodes {
		n.State = NodeDecommissioning
	}
	if p := Plan(s, map[uint64]string{1: "a"}); len(p) != 0 {
		t.Errorf("planned %v", p)
	}
}

func TestMetaVoters(t *testing.T) {
	for n, want := range []int{0, 1, 1, 3, 3, 5, 5, 5, 5} {
		if got := Voters(n); got != want {
			t.Errorf("Voters(%d) = %d, want %d", n, got, want)
		}
	}
	if Voters(1000) != MaxVoters {
		t.Error("more nodes than MaxVoters")
	}
}
