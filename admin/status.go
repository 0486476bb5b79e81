package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Bounds of the time a status or group listing may take: the caller gets
// what answered by then, marked partial.
const (
	defaultReportTimeout = 5 * time.Second
	maxReportTimeout     = time.Minute
	// reportWorkers bounds the groups asked at once: a cluster may have
	// hundreds, each a peer round trip or more.
	reportWorkers = 16
	// lagThreshold is the replica lag, in log entries, that the health
	// verdict calls degraded: a replica that far behind is not keeping up.
	lagThreshold = 1000
)

// joined reports whether the node is part of a cluster: a node started
// without bootstrap or join is not, until nodes/add.
func (s *server) joined() bool {
	return s.host.Epoch() != 0 || s.host.Cluster().Initialized()
}

func (s *server) notJoined() *APIError {
	return unavailable("node %s is not part of a cluster yet: bootstrap it, or add it with POST %snodes/add", s.host.NodeID(), Prefix)
}

// metaState reads the cluster state linearizably.
func (s *server) metaState(ctx context.Context) (*meta.ClusterState, error) {
	if !s.joined() {
		return nil, s.notJoined()
	}
	st, err := s.host.MetaState(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the cluster state from the meta group: %w", err)
	}
	return st, nil
}

func queryTimeout(r *http.Request) (time.Duration, error) {
	raw := r.URL.Query().Get("timeout")
	if raw == "" {
		return defaultReportTimeout, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		return 0, badRequest("timeout %q is not a duration such as 5s", raw)
	}
	return timeoutOf(Duration(d), defaultReportTimeout, maxReportTimeout)
}

// forEach runs fn(i) for i in [0, n) on up to workers goroutines.
func forEach(n, workers int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// groupReport describes group g: the leader's view and, with details, each
// replica's own report. Replicas that the meta group assigns and members of
// the leader's raft configuration are merged, so a half-done move shows.
func (s *server) groupReport(ctx context.Context, st *meta.ClusterState, g uint64, details bool) Group {
	out := Group{ID: g, Meta: g == multiraft.MetaGroup}
	addrs := map[string]string{}
	for id, n := range st.Nodes {
		addrs[id] = n.PeerAddr
	}
	// Indexes, not pointers: out.Replicas grows while replicas are found.
	byNode := map[string]int{}
	add := func(id string) *Replica {
		i, ok := byNode[id]
		if !ok {
			out.Replicas = append(out.Replicas, Replica{Node: id})
			i = len(out.Replicas) - 1
			byNode[id] = i
		}
		return &out.Replicas[i]
	}
	var servers []multiraft.ServerInfo
	ls, lsErr := s.host.LeaderStatus(ctx, g)
	if lsErr != nil {
		out.Error = fmt.Sprintf("no answer from the group's leader: %v", lsErr)
		// The local replica still knows the configuration.
		if local, lerr := s.host.Status(g); lerr == nil {
			servers = local.Servers
		}
	} else {
		out.Leader, out.Term = ls.LeaderID, ls.Term
		out.LastIndex, out.CommitIndex, out.AppliedIndex = ls.LastIndex, ls.CommitIndex, ls.AppliedIndex
		servers = ls.Servers
		out.StuckAfter = Duration(ls.StuckAfter())
		for _, u := range ls.Unreachable {
			out.Unreachable = append(out.Unreachable, Unreachable{Node: u.ID, Since: Duration(u.Since)})
		}
	}
	if g == multiraft.MetaGroup {
		for _, sv := range servers {
			add(sv.ID).Assigned = true
		}
	}
	for _, id := range st.Replicas[g] {
		add(id).Assigned = true
	}
	for _, sv := range servers {
		r := add(sv.ID)
		r.Member, r.Voter = true, sv.Voter
		if addrs[sv.ID] == "" {
			addrs[sv.ID] = sv.Addr
		}
	}
	if !details {
		return out
	}
	reps := out.Replicas
	forEach(len(reps), reportWorkers, func(i int) {
		r := &reps[i]
		var rs multiraft.GroupStatus
		var err error
		switch {
		case lsErr == nil && r.Node == out.Leader:
			rs = ls
		case addrs[r.Node] == "":
			err = fmt.Errorf("node %s has no known peer address", r.Node)
		default:
			rs, err = s.host.NodeGroupStatus(ctx, addrs[r.Node], g)
		}
		if err != nil {
			r.Status = &ReplicaStatus{Error: err.Error()}
			return
		}
		r.Status = &ReplicaStatus{State: rs.State, LastIndex: rs.LastIndex, AppliedIndex: rs.AppliedIndex,
			LastContact: Duration(rs.ContactAge), Elections: rs.Elections, Stuck: rs.Stuck, Damaged: rs.Damaged}
		if out.Leader != "" && out.CommitIndex > rs.AppliedIndex {
			r.Status.Lag = out.CommitIndex - rs.AppliedIndex
		}
	})
	return out
}

// groupReports describes groups 0..G within ctx.
func (s *server) groupReports(ctx context.Context, st *meta.ClusterState, details bool) []Group {
	out := make([]Group, st.Groups+1)
	forEach(len(out), reportWorkers, func(i int) {
		out[i] = s.groupReport(ctx, st, uint64(i), details)
	})
	return out
}

func (s *server) nodeList(st *meta.ClusterState) []Node {
	out := make([]Node, 0, len(st.Nodes))
	for _, id := range st.NodeIDs() {
		n := st.Nodes[id]
		out = append(out, Node{ID: n.ID, PeerAddr: n.PeerAddr, ClientAddr: n.ClientAddr, State: n.State, Epoch: n.Epoch,
			LeaseExpired: n.LeaseExpired, Replicas: len(st.GroupsOf(id)), Self: id == s.host.NodeID()})
	}
	return out
}

// countRooms counts the rooms of the local replicas, stale: the status is a
// summary, and a quorum read per group would make it slow and fragile.
func (s *server) countRooms(ctx context.Context, st *meta.ClusterState) RoomCount {
	rc := RoomCount{Approximate: true, GroupsTotal: st.Groups}
	local := map[uint64]bool{}
	for _, g := range s.host.LocalGroups() {
		local[g] = true
	}
	for g := uint64(1); g <= st.Groups; g++ {
		if !local[g] {
			rc.Uncounted = append(rc.Uncounted, g)
			continue
		}
		n := 0
		err := s.host.Read(ctx, g, multiraft.Stale, func(sm multiraft.StateMachine) error {
			f, ok := sm.(*fsm.FSM)
			if !ok {
				return fmt.Errorf("group %d runs %T, not a room state machine", g, sm)
			}
			rooms, err := f.Rooms()
			n = len(rooms)
			return err
		})
		if err != nil {
			rc.Uncounted = append(rc.Uncounted, g)
			continue
		}
		rc.Count += n
		rc.GroupsCounted++
	}
	return rc
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	timeout, err := queryTimeout(r)
	if err != nil {
		return err
	}
	start := time.Now()
	out := Status{Node: s.host.NodeID(), Time: start.UTC(), Timeout: Duration(timeout), Jobs: s.jobs.running()}
	if !s.joined() {
		out.Health = Health{Verdict: HealthUnavailable, Reasons: []string{s.notJoined().Message}}
		out.Elapsed = Duration(time.Since(start).Round(100 * time.Microsecond))
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var h healthBuilder
	// The meta group gets a third of the time, so that a cluster without
	// it still reports its groups.
	mctx, mcancel := context.WithTimeout(ctx, timeout/3)
	st, err := s.host.MetaState(mctx)
	mcancel()
	out.StateSource = "meta"
	if err != nil {
		st = s.host.Cluster()
		out.StateSource = "local"
		h.unavailable("the meta group did not answer (%v): node and replica changes are impossible; this node's last known state is shown", err)
	}
	out.ClusterID, out.Groups, out.Replication = st.ClusterID, st.Groups, st.Replication
	out.GroupList = s.groupReports(ctx, st, true)
	if ctx.Err() != nil {
		out.Partial = true
		h.degraded("the report is incomplete: not everything answered within %v", timeout)
	}
	rctx, rcancel := context.WithTimeout(r.Context(), 2*time.Second)
	out.Rooms = s.countRooms(rctx, st)
	rcancel()

	leads := map[string]int{}
	for _, g := range out.GroupList {
		if !g.Meta && g.Leader != "" {
			leads[g.Leader]++
		}
	}
	for _, n := range s.nodeList(st) {
		out.Nodes = append(out.Nodes, NodeStatus{Node: n, Leads: leads[n.ID]})
	}
	h.assess(st, out.GroupList)
	out.Health = h.result()
	out.Elapsed = Duration(time.Since(start).Round(100 * time.Microsecond))
	writeJSON(w, http.StatusOK, out)
	return nil
}

type healthBuilder struct {
	verdict string
	reasons []string
}

func (h *healthBuilder) unavailable(format string, args ...any) {
	h.verdict = HealthUnavailable
	h.reasons = append(h.reasons, fmt.Sprintf(format, args...))
}

func (h *healthBuilder) degraded(format string, args ...any) {
	if h.verdict != HealthUnavailable {
		h.verdict = HealthDegraded
	}
	h.reasons = append(h.reasons, fmt.Sprintf(format, args...))
}

func (h *healthBuilder) result() Health {
	if h.verdict == "" {
		return Health{Verdict: HealthOK}
	}
	return Health{Verdict: h.verdict, Reasons: h.reasons}
}

// assess turns the cluster state and group reports into reasons.
func (h *healthBuilder) assess(st *meta.ClusterState, groups []Group) {
	for _, id := range st.NodeIDs() {
		n := st.Nodes[id]
		if n.LeaseExpired {
			h.degraded("node %s's lease expired: it is down or cut off; its replicas do not count towards quorums", id)
		}
		if n.State == meta.NodeDecommissioning {
			h.degraded("node %s is decommissioning", id)
		}
	}
	// A node that is down fails in every group it holds: one reason for
	// it, not one per group.
	type silence struct {
		groups []string
		first  string
		// cut are the groups whose leader has had no answer from the node
		// either, and longest the longest such silence: then it is not
		// only this node that cannot reach it.
		cut     []string
		longest Duration
	}
	silent := map[string]*silence{}
	var silentNodes []string
	defer func() {
		for _, id := range silentNodes {
			sl := silent[id]
			msg := fmt.Sprintf("node %s did not answer for its replicas of %s (%s)", id, strings.Join(sl.groups, ", "), sl.first)
			if len(sl.cut) > 0 {
				msg += fmt.Sprintf("; the leaders of %s have had no answer from it either, for up to %v",
					strings.Join(sl.cut, ", "), time.Duration(sl.longest).Round(100*time.Millisecond))
			}
			h.degraded("%s", msg)
		}
	}()
	for _, g := range groups {
		name := fmt.Sprintf("group %d", g.ID)
		if g.Meta {
			name = "the meta group (0)"
		}
		if g.Leader == "" {
			h.unavailable("%s has no leader: %s", name, g.Error)
		}
		assigned, members := 0, 0
		for _, r := range g.Replicas {
			if r.Assigned {
				assigned++
			}
			if r.Member {
				members++
			}
			if r.Status == nil {
				continue
			}
			switch {
			case r.Status.Error != "":
				sl := silent[r.Node]
				if sl == nil {
					sl = &silence{first: r.Status.Error}
					silent[r.Node] = sl
					silentNodes = append(silentNodes, r.Node)
				}
				sl.groups = append(sl.groups, name)
				for _, u := range g.Unreachable {
					if u.Node == r.Node && g.StuckAfter > 0 && u.Since > g.StuckAfter {
						sl.cut = append(sl.cut, name)
						sl.longest = max(sl.longest, u.Since)
					}
				}
			case r.Status.Damaged != "":
				h.degraded("%s: the replica on %s is damaged (%s); rebuild it with: herald admin groups repair %d --node %s", name, r.Node, r.Status.Damaged, g.ID, r.Node)
			case r.Status.Stuck != "":
				h.degraded("%s: the replica on %s %s", name, r.Node, r.Status.Stuck)
			case r.Status.Lag > lagThreshold:
				h.degraded("%s: the replica on %s is %d entries behind the leader", name, r.Node, r.Status.Lag)
			}
			if g.Leader != "" && r.Assigned != r.Member {
				where := "assigned by the meta group but not a member of the raft group"
				if r.Member {
					where = "a member of the raft group but not assigned by the meta group"
				}
				h.degraded("%s: node %s is %s; a replica move is under way or was interrupted (finish it with groups move)", name, r.Node, where)
			}
		}
		h.assessContact(name, g)
		if !g.Meta && st.Replication > 0 && assigned != st.Replication &&
			!(assigned < st.Replication && len(st.Nodes) < st.Replication) {
			h.degraded("%s has %d replicas, want %d", name, assigned, st.Replication)
		}
	}
}

// assessContact judges g from its leader's side: followers that do not
// answer it, and whether it still hears from a quorum of voters.
func (h *healthBuilder) assessContact(name string, g Group) {
	if g.Leader == "" || g.StuckAfter == 0 {
		return
	}
	cut := map[string]Duration{}
	for _, u := range g.Unreachable {
		if u.Since > g.StuckAfter {
			cut[u.Node] = u.Since
		}
	}
	voters, heard := 0, 0
	for _, r := range g.Replicas {
		if !r.Voter {
			continue
		}
		voters++
		if _, ok := cut[r.Node]; !ok {
			heard++
		}
	}
	if voters > 0 && heard <= voters/2 {
		h.degraded("%s: leader %s hears from only %d of %d voters, not a quorum", name, g.Leader, heard, voters)
	}
	for _, r := range g.Replicas {
		since, ok := cut[r.Node]
		// A replica that reports itself stuck, or did not answer at all,
		// already has its reason; this one is for a follower that hears
		// the leader while the leader does not hear it.
		if !ok || r.Status == nil || r.Status.Stuck != "" || r.Status.Error != "" {
			continue
		}
		h.degraded("%s: leader %s has had no answer from the replica on %s for %v", name, g.Leader, r.Node, time.Duration(since).Round(100*time.Millisecond))
	}
}

func (s *server) listNodes(w http.ResponseWriter, r *http.Request) error {
	_, cancel, st, err := s.clusterWithin(r, metaReadTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Nodes []Node `json:"nodes"`
	}{s.nodeList(st)})
	return nil
}

// GroupList is the reply of the group listing.
type GroupList struct {
	Groups  []Group `json:"groups"`
	Partial bool    `json:"partial"`
}

func (s *server) listGroups(w http.ResponseWriter, r *http.Request) error {
	timeout, err := queryTimeout(r)
	if err != nil {
		return err
	}
	ctx, cancel, st, err := s.clusterWithin(r, timeout)
	defer cancel()
	if err != nil {
		return err
	}
	out := GroupList{Groups: s.groupReports(ctx, st, false)}
	out.Partial = ctx.Err() != nil
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkGroup refuses a group the cluster does not have.
func checkGroup(st *meta.ClusterState, g uint64) error {
	if g > st.Groups {
		return notFound("group_not_found", "group %d does not exist: the cluster has the meta group 0 and data groups 1..%d", g, st.Groups)
	}
	return nil
}

func (s *server) showGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := parseGroupID(r)
	if err != nil {
		return err
	}
	timeout, err := queryTimeout(r)
	if err != nil {
		return err
	}
	ctx, cancel, st, err := s.groupWithin(r, g, timeout)
	defer cancel()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.groupReport(ctx, st, g, true))
	return nil
}

// holders lists the nodes with a replica of g, for messages.
func holders(st *meta.ClusterState, g uint64) []string {
	return slices.Clone(st.Replicas[g])
}
