package meta

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
)

// GroupForKey maps a key (a room name) to its data group: 1 + FNV-1a-64 of
// the key's bytes, mod groups. The function is part of the cluster's
// contract: changing it would move every room, so it never changes for a
// cluster whose group count is fixed at bootstrap.
func GroupForKey(key string, groups uint64) uint64 {
	if groups == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return 1 + h.Sum64()%groups
}

// InitialPlacement spreads data groups 1..groups over nodes, replication
// replicas each, greedily: group g's first (preferred leader) replica is the
// node leading the fewest groups so far, its other replicas the least loaded
// nodes, ties broken in sorted order from position (g-1) mod N. Every node
// then holds the same number of replicas and leads the same number of
// groups, give or take one.
func InitialPlacement(nodes []string, groups uint64, replication int) (map[uint64][]string, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("multiraft: placement needs at least one node")
	}
	if replication <= 0 || replication > len(nodes) {
		return nil, fmt.Errorf("multiraft: replication %d needs between 1 and %d nodes", replication, len(nodes))
	}
	sorted := slices.Clone(nodes)
	sort.Strings(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, fmt.Errorf("multiraft: node %q is listed twice", sorted[i])
		}
	}
	out := make(map[uint64][]string, groups)
	load, leads := make([]int, len(sorted)), make([]int, len(sorted))
	for g := uint64(1); g <= groups; g++ {
		start := int((g - 1) % uint64(len(sorted)))
		first := start
		for k := 1; k < len(sorted); k++ {
			j := (start + k) % len(sorted)
			if leads[j] < leads[first] || leads[j] == leads[first] && load[j] < load[first] {
				first = j
			}
		}
		leads[first]++
		picked := []int{first}
		load[first]++
		for len(picked) < replication {
			best := -1
			for k := 1; k < len(sorted); k++ {
				j := (first + k) % len(sorted)
				if !slices.Contains(picked, j) && (best < 0 || load[j] < load[best]) {
					best = j
				}
			}
			picked = append(picked, best)
			load[best]++
		}
		r := make([]string, len(picked))
		for i, j := range picked {
			r[i] = sorted[j]
		}
		out[g] = r
	}
	return out, nil
}

// MoveKind says what one step of a plan does.
type MoveKind string

// Plan step kinds.
const (
	// MoveReplica adds a replica of Group on To, waits until it caught up,
	// then removes the replica on From.
	MoveReplica MoveKind = "move_replica"
	// TransferLeader hands the leadership of Group from From to To.
	TransferLeader MoveKind = "transfer_leader"
)

// Move is one step of a rebalancing plan.
type Move struct {
	Kind  MoveKind `json:"kind"`
	Group uint64   `json:"group"`
	From  string   `json:"from"`
	To    string   `json:"to"`
}

func (m Move) String() string {
	return fmt.Sprintf("%s group %d: %s -> %s", m.Kind, m.Group, m.From, m.To)
}

// Plan computes the moves that empty decommissioning nodes and even out
// replicas and then leaders over the active nodes. leaders maps a data
// group to the node that leads it now (groups without a known leader are
// left out of leader balancing). The plan is deterministic for a given
// input, so a dry run shows exactly what an apply will start with.
func Plan(s *ClusterState, leaders map[uint64]string) []Move {
	var active []string
	for _, id := range s.NodeIDs() {
		if s.Nodes[id].State == NodeActive {
			active = append(active, id)
		}
	}
	if len(active) == 0 {
		return nil
	}
	replicas := make(map[uint64][]string, len(s.Replicas))
	for g, r := range s.Replicas {
		replicas[g] = slices.Clone(r)
	}
	groups := make([]uint64, 0, len(replicas))
	for g := range replicas {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	load := map[string]int{}
	for _, g := range groups {
		for _, n := range replicas[g] {
			load[n]++
		}
	}
	leader := map[uint64]string{}
	for g, n := range leaders {
		leader[g] = n
	}
	var plan []Move
	move := func(g uint64, from, to string) {
		r := replicas[g]
		r[slices.Index(r, from)] = to
		load[from]--
		load[to]++
		plan = append(plan, Move{Kind: MoveReplica, Group: g, From: from, To: to})
		if leader[g] == from {
			// The executor hands leadership to the new replica before
			// removing the old one.
			leader[g] = to
		}
	}
	leastLoaded := func(g uint64) string {
		best := ""
		for _, n := range active {
			if slices.Contains(replicas[g], n) {
				continue
			}
			if best == "" || load[n] < load[best] {
				best = n
			}
		}
		return best
	}
	// Empty the nodes that are leaving.
	for _, g := range groups {
		for _, n := range slices.Clone(replicas[g]) {
			if s.Nodes[n] != nil && s.Nodes[n].State == NodeActive {
				continue
			}
			if to := leastLoaded(g); to != "" {
				move(g, n, to)
			}
		}
	}
	// Even out replica counts: move from the most to the least loaded node
	// while they differ by more than one.
	for range len(groups) * len(active) {
		most, least := active[0], active[0]
		for _, n := range active {
			if load[n] > load[most] {
				most = n
			}
			if load[n] < load[least] {
				least = n
			}
		}
		if load[most]-load[least] <= 1 {
			break
		}
		moved := false
		for _, g := range groups {
			if slices.Contains(replicas[g], most) && !slices.Contains(replicas[g], least) {
				move(g, most, least)
				moved = true
				break
			}
		}
		if !moved {
			break
		}
	}
	// Even out leaders among each group's replicas.
	leads := map[string]int{}
	for _, g := range groups {
		if n, ok := leader[g]; ok {
			leads[n]++
		}
	}
	for range len(groups) {
		most := ""
		for _, n := range active {
			if most == "" || leads[n] > leads[most] {
				most = n
			}
		}
		moved := false
		for _, g := range groups {
			if leader[g] != most {
				continue
			}
			for _, to := range replicas[g] {
				if to != most && s.Nodes[to] != nil && s.Nodes[to].State == NodeActive && leads[to]+1 < leads[most] {
					leader[g] = to
					leads[most]--
					leads[to]++
					plan = append(plan, Move{Kind: TransferLeader, Group: g, From: most, To: to})
					moved = true
					break
				}
			}
			if moved {
				break
			}
		}
		if !moved {
			break
		}
	}
	return plan
}

// MaxVoters caps the meta group's size: more voters only slow it.
const MaxVoters = 5

// Voters is how many of n live nodes should vote in the meta group: at most
// MaxVoters, rounded down to an odd count, because an even count adds no
// fault tolerance over the odd count below it.
func Voters(n int) int {
	v := min(n, MaxVoters)
	if v%2 == 0 {
		v--
	}
	return max(v, 0)
}
