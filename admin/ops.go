package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Bounds of the synchronous operations. A move copies a group's state to a
// new replica, so it gets minutes; everything else is a few round trips.
const (
	defaultMoveTimeout     = 2 * time.Minute
	defaultTransferTimeout = 30 * time.Second
	defaultJoinTimeout     = 30 * time.Second
	maxSyncTimeout         = 30 * time.Minute
	metaReadTimeout        = 10 * time.Second
	// detailTimeout bounds the group report sent back after a change.
	detailTimeout = 5 * time.Second
)

func (s *server) addNode(w http.ResponseWriter, r *http.Request) error {
	var req AddNodeRequest
	timeout, err := readChange(w, r, &req, defaultJoinTimeout, maxSyncTimeout)
	if err != nil {
		return err
	}
	if s.joined() {
		return conflict("already_member", "node %s is already part of cluster %q; nodes/add is for a node started without bootstrap or join",
			s.host.NodeID(), s.host.Cluster().ClusterID)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	s.log.Info("joining a cluster", "seeds", req.Seeds)
	if err := s.node.Join(ctx, req.Seeds); err != nil {
		return fmt.Errorf("join through %v: %w", req.Seeds, err)
	}
	st, err := s.metaState(ctx)
	if err != nil {
		return err
	}
	for _, n := range s.nodeList(st) {
		if n.Self {
			writeJSON(w, http.StatusOK, n)
			return nil
		}
	}
	return fmt.Errorf("node %s joined but the cluster state does not list it", s.host.NodeID())
}

// activeOthers counts the active nodes other than id.
func activeOthers(st *meta.ClusterState, id string) int {
	n := 0
	for other, info := range st.Nodes {
		if other != id && info.State == meta.NodeActive {
			n++
		}
	}
	return n
}

// leavingNode finds the node a decommission or remove is about.
func leavingNode(st *meta.ClusterState, id string) (*meta.NodeInfo, error) {
	n := st.Nodes[id]
	if n == nil {
		return nil, notFound("node_not_found", "node %q is not in the cluster (nodes: %v): it never joined, or its decommission or removal has finished",
			id, st.NodeIDs())
	}
	return n, nil
}

// capacityCheck refuses a decommission or remove that cannot finish for
// want of nodes. It comes after the checks that say the request is wrong in
// itself, since adding a node would not make those succeed.
func capacityCheck(st *meta.ClusterState, id string) error {
	if held := len(st.GroupsOf(id)); held > 0 && activeOthers(st, id) < st.Replication {
		return conflict("not_enough_nodes", "node %s holds %d replicas and the other %d active nodes cannot take them with %d replicas per group; add a node first",
			id, held, activeOthers(st, id), st.Replication)
	}
	return nil
}

func (s *server) decommission(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var req JobRequest
	timeout, err := readChange(w, r, &req, defaultJobTimeout, maxJobTimeout)
	if err != nil {
		return err
	}
	_, cancel, st, err := s.clusterWithin(r, metaReadTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	if _, err := leavingNode(st, id); err != nil {
		return err
	}
	if err := capacityCheck(st, id); err != nil {
		return err
	}
	total := len(st.GroupsOf(id))
	job, err := s.jobs.start(JobDecommission, id, timeout, func(ctx context.Context, p progress) error {
		return s.runDecommission(ctx, p, id, total, "stop its process")
	})
	if err != nil {
		return err
	}
	writeJob(w, job)
	return nil
}

// alive reports whether a node answers on its peer port.
func (s *server) alive(ctx context.Context, peerAddr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.host.NodeGroupStatus(ctx, peerAddr, multiraft.MetaGroup)
	// "No replica" is the node itself answering.
	return err == nil || errors.Is(err, multiraft.ErrNoReplica)
}

func (s *server) removeNode(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var req JobRequest
	timeout, err := readChange(w, r, &req, defaultJobTimeout, maxJobTimeout)
	if err != nil {
		return err
	}
	ctx, cancel, st, err := s.clusterWithin(r, metaReadTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	n, err := leavingNode(st, id)
	if err != nil {
		return err
	}
	if id == s.host.NodeID() {
		return conflict("remove_self", "node %s is the node answering this request: remove is for nodes that are gone; decommission it instead, or ask another node", id)
	}
	held := len(st.GroupsOf(id))
	if held > 0 && s.alive(ctx, n.PeerAddr) {
		return conflict("node_alive", "node %s is running and holds %d replicas: decommission it instead (its replicas move while it serves), or stop it first", id, held)
	}
	if err := capacityCheck(st, id); err != nil {
		return err
	}
	job, err := s.jobs.start(JobRemove, id, timeout, func(ctx context.Context, p progress) error {
		return s.runDecommission(ctx, p, id, held, "if its process still runs, stop it; do not start it again on its data")
	})
	if err != nil {
		return err
	}
	writeJob(w, job)
	return nil
}

// runDecommission runs multiraft's Decommission, which also serves remove:
// every step of it works with the node down (replicas are added elsewhere
// and the node's are removed by each group's leader), as long as each group
// keeps a quorum without it.
func (s *server) runDecommission(ctx context.Context, p progress, id string, total int, advice string) error {
	p.update(func(j *Job) {
		j.Total = total
		j.Message = fmt.Sprintf("moving %d replicas off %s", total, id)
	})
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			left := len(s.host.Cluster().GroupsOf(id))
			p.update(func(j *Job) {
				j.Done = max(0, total-left)
				j.Message = fmt.Sprintf("%d of %d replicas left on %s", left, total, id)
			})
		}
	}()
	err := s.finishMovesOff(ctx, id)
	if err == nil {
		err = s.host.Decommission(ctx, id)
	}
	close(stop)
	<-watched
	if err != nil {
		return err
	}
	p.update(func(j *Job) {
		j.Done = j.Total
		j.Message = fmt.Sprintf("node %s holds no replicas and is no longer part of the cluster; %s", id, advice)
	})
	return nil
}

// finishMovesOff completes the moves of node's replicas that an earlier,
// interrupted decommission left halfway. Such a group lists one replica too
// many, and multiraft's planner would find no node to move node's replica
// to (every active node already holds one), so Decommission alone could
// not go on. The replica the move was adding is the one that is not yet a
// voter, or, past that step, the last one the meta group recorded.
func (s *server) finishMovesOff(ctx context.Context, node string) error {
	st, err := s.host.MetaState(ctx)
	if err != nil {
		return err
	}
	for _, g := range st.GroupsOf(node) {
		cur := st.Replicas[g]
		if len(cur) <= st.Replication {
			continue
		}
		ls, err := s.host.LeaderStatus(ctx, g)
		if err != nil {
			return fmt.Errorf("find the leader of group %d: %w", g, err)
		}
		to := ""
		for _, id := range cur {
			if id == node {
				continue
			}
			voter := slices.ContainsFunc(ls.Servers, func(sv multiraft.ServerInfo) bool { return sv.ID == id && sv.Voter })
			if !voter {
				to = id
				break
			}
			to = id
		}
		if to == "" {
			continue
		}
		s.log.Info("finishing an interrupted move", "group", g, "from", node, "to", to)
		if err := s.host.MoveReplica(ctx, g, node, to); err != nil {
			return err
		}
	}
	return nil
}

func writeJob(w http.ResponseWriter, job Job) {
	w.Header().Set("Location", Prefix+"jobs/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
}

// report answers a change with the group's state right after it.
func (s *server) report(r *http.Request, g uint64) Group {
	ctx, cancel := context.WithTimeout(r.Context(), detailTimeout)
	defer cancel()
	st, err := s.host.MetaState(ctx)
	if err != nil {
		st = s.host.Cluster()
	}
	return s.groupReport(ctx, st, g, true)
}

func (s *server) moveReplica(w http.ResponseWriter, r *http.Request) error {
	var req MoveRequest
	g, ctx, cancel, st, err := s.openGroupChange(w, r, &req, defaultMoveTimeout, maxSyncTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	if g == multiraft.MetaGroup {
		return badRequest("the meta group's members follow the nodes by themselves (up to %d voters); decommission a node to take it out", meta.MaxVoters)
	}
	if _, err := clusterNode(st, req.From); err != nil {
		return err
	}
	to, err := clusterNode(st, req.To)
	if err != nil {
		return err
	}
	cur := st.Replicas[g]
	hasFrom, hasTo := slices.Contains(cur, req.From), slices.Contains(cur, req.To)
	switch {
	case st.Ops[g] != nil:
		// The replica list is halfway through another change: multiraft
		// refuses this move (move_in_progress), or finishes it when it is
		// the same move and nobody runs it any more.
	case !hasFrom && hasTo:
		// A finished move and a mistyped --from look the same here, and
		// answering the mistake with success would tell the operator a
		// replica moved that never existed.
		return conflict("not_a_replica", "node %s holds no replica of group %d (replicas: %v); %s holds one, so if this repeats a move whose answer was lost, that move is done",
			req.From, g, cur, req.To)
	case !hasFrom:
		return conflict("not_a_replica", "node %s holds no replica of group %d (replicas: %v)", req.From, g, cur)
	case hasTo && len(cur) <= st.Replication:
		// Only an interrupted move leaves both with an extra replica; else
		// this would drop the group to one replica fewer.
		return conflict("already_replica", "node %s already holds a replica of group %d (replicas: %v)", req.To, g, cur)
	case !hasTo && to.State != meta.NodeActive:
		return conflict("node_not_active", "node %s is %s: it takes no new replicas", req.To, to.State)
	}
	s.log.Info("moving a replica", "group", g, "from", req.From, "to", req.To)
	if err := rerunnable(s.host.MoveReplica(ctx, g, req.From, req.To), "the same move, run again, finishes it"); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.report(r, g))
	return nil
}

// repairReplica rebuilds a group's replica on one node from the others
// (multiraft.Host.RepairReplica): for a replica whose stored data is
// corrupt, or any replica an operator no longer trusts.
func (s *server) repairReplica(w http.ResponseWriter, r *http.Request) error {
	var req RepairRequest
	g, ctx, cancel, st, err := s.openGroupChange(w, r, &req, defaultMoveTimeout, maxSyncTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	if g == multiraft.MetaGroup {
		return badRequest("the meta group keeps its state in memory and snapshots; it is not rebuilt this way")
	}
	if _, err := clusterNode(st, req.Node); err != nil {
		return err
	}
	if !slices.Contains(st.Replicas[g], req.Node) {
		return conflict("not_a_replica", "node %s holds no replica of group %d (replicas: %v)", req.Node, g, st.Replicas[g])
	}
	s.log.Info("rebuilding a replica from its peers", "group", g, "node", req.Node)
	if err := rerunnable(s.host.RepairReplica(ctx, g, req.Node), "run the repair again"); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.report(r, g))
	return nil
}

func (s *server) transferLeader(w http.ResponseWriter, r *http.Request) error {
	var req TransferRequest
	g, ctx, cancel, st, err := s.openGroupChange(w, r, &req, defaultTransferTimeout, maxSyncTimeout)
	defer cancel()
	if err != nil {
		return err
	}
	if _, err := clusterNode(st, req.To); err != nil {
		return err
	}
	ls, err := s.host.LeaderStatus(ctx, g)
	if err != nil {
		return fmt.Errorf("find the leader of group %d: %w", g, err)
	}
	if !slices.ContainsFunc(ls.Servers, func(sv multiraft.ServerInfo) bool { return sv.ID == req.To && sv.Voter }) {
		var voters []string
		for _, sv := range ls.Servers {
			if sv.Voter {
				voters = append(voters, sv.ID)
			}
		}
		return conflict("not_a_voter", "node %s is not a voting replica of group %d (voters: %v)", req.To, g, voters)
	}
	if ls.LeaderID != req.To {
		s.log.Info("transferring a leadership", "group", g, "from", ls.LeaderID, "to", req.To)
		if err := s.host.TransferLeader(ctx, g, req.To); err != nil {
			return err
		}
		// Raft reports the hand-over before every replica has seen it.
		for {
			ls, err := s.host.LeaderStatus(ctx, g)
			if err == nil && ls.LeaderID == req.To {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("group %d did not report %s as its leader in time: %w", g, req.To, ctx.Err())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writeJSON(w, http.StatusOK, s.report(r, g))
	return nil
}

func (s *server) planRebalance(w http.ResponseWriter, r *http.Request) error {
	timeout := 30 * time.Second
	if r.URL.Query().Get("timeout") != "" {
		var err error
		if timeout, err = queryTimeout(r); err != nil {
			return err
		}
	}
	ctx, cancel, st, err := s.clusterWithin(r, timeout)
	defer cancel()
	if err != nil {
		return err
	}
	// This is PlanRebalance, with the leaders kept for the summary.
	leaders := s.host.Leaders(ctx, st)
	writeJSON(w, http.StatusOK, summarize(st, leaders, meta.Plan(st, leaders)))
	return nil
}

// summarize counts replicas and leaderships per node before and after a
// plan.
func summarize(st *meta.ClusterState, leaders map[uint64]string, moves []Move) Plan {
	p := Plan{Moves: moves, Replicas: map[string]Counts{}, Leaders: map[string]Counts{}, LeadersKnown: len(leaders), Groups: st.Groups}
	if p.Moves == nil {
		p.Moves = []Move{}
	}
	replicas, leads := map[string]int{}, map[string]int{}
	for _, id := range st.NodeIDs() {
		replicas[id] = len(st.GroupsOf(id))
	}
	for _, n := range leaders {
		leads[n]++
	}
	for id := range replicas {
		p.Replicas[id] = Counts{Before: replicas[id]}
		p.Leaders[id] = Counts{Before: leads[id]}
	}
	lead := map[uint64]string{}
	for g, n := range leaders {
		lead[g] = n
	}
	for _, m := range moves {
		switch m.Kind {
		case meta.MoveReplica:
			replicas[m.From]--
			replicas[m.To]++
			if lead[m.Group] == m.From {
				leads[m.From]--
				leads[m.To]++
				lead[m.Group] = m.To
			}
		case meta.TransferLeader:
			if lead[m.Group] != "" {
				leads[lead[m.Group]]--
			}
			leads[m.To]++
			lead[m.Group] = m.To
		}
	}
	for id := range replicas {
		c := p.Replicas[id]
		c.After = replicas[id]
		p.Replicas[id] = c
		l := p.Leaders[id]
		l.After = leads[id]
		p.Leaders[id] = l
	}
	return p
}

func (s *server) applyRebalance(w http.ResponseWriter, r *http.Request) error {
	var req JobRequest
	timeout, err := readChange(w, r, &req, defaultJobTimeout, maxJobTimeout)
	if err != nil {
		return err
	}
	if !s.joined() {
		return s.notJoined()
	}
	job, err := s.jobs.start(JobRebalance, "", timeout, s.runRebalance)
	if err != nil {
		return err
	}
	writeJob(w, job)
	return nil
}

func (s *server) applyMove(ctx context.Context, m Move) error {
	switch m.Kind {
	case meta.MoveReplica:
		return s.host.MoveReplica(ctx, m.Group, m.From, m.To)
	case meta.TransferLeader:
		return s.host.TransferLeader(ctx, m.Group, m.To)
	}
	return fmt.Errorf("unknown move kind %q", m.Kind)
}

func (s *server) runRebalance(ctx context.Context, p progress) error {
	if m := s.jobs.takeInterrupted(); m != nil {
		p.update(func(j *Job) {
			j.Resumed, j.Current = m, m
			j.Message = fmt.Sprintf("finishing the move an earlier rebalance left halfway: %v", m)
		})
		if err := s.applyMove(ctx, *m); err != nil {
			if ctx.Err() != nil {
				s.jobs.setInterrupted(m)
				return fmt.Errorf("finish the interrupted %v: %w", m, err)
			}
			// The cluster moved on (another operator finished or undid
			// it); a fresh plan covers what is left.
			s.log.Warn("could not finish an interrupted move; planning afresh", "move", m.String(), "err", err)
		}
	}
	p.update(func(j *Job) { j.Message = "planning" })
	plan, err := s.host.PlanRebalance(ctx)
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	p.update(func(j *Job) {
		j.Moves, j.Total, j.Done = plan, len(plan), 0
		j.Message = fmt.Sprintf("applying %d moves", len(plan))
		if len(plan) > 0 {
			j.Current = &plan[0]
		}
	})
	done, err := s.host.ApplyPlan(ctx, plan, func(done int, _ Move) {
		p.update(func(j *Job) {
			j.Done = done
			j.Current = nil
			if done < len(plan) {
				j.Current = &plan[done]
			}
		})
	})
	if err != nil {
		if plan[done].Kind == meta.MoveReplica {
			s.jobs.setInterrupted(&plan[done])
		}
		return fmt.Errorf("move %d of %d (%v): %w", done+1, len(plan), plan[done], err)
	}
	p.update(func(j *Job) {
		j.Message = "balanced"
		if len(plan) == 0 {
			j.Message = "already balanced: nothing to move"
		}
	})
	return nil
}
