package jepsen

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/wait"
)

// Replica contact after the final heal.
//
// A cluster can pass every safety checker and still come out of a fault
// with a replica that never rejoined its group: the group keeps a leader
// and a quorum, so writes go on, while that replica campaigns in vain and
// the group has lost its fault tolerance. The admin status says, for
// every group, whether each replica hears from its leader and the leader
// from it; after the final heal every node's status must say so for every
// replica, within a bound.

// ContactBound is how long after the final heal every replica may take to
// be in contact with its group's leader.
const ContactBound = 30 * time.Second

// ContactResult is the outcome of the contact check.
type ContactResult struct {
	// InContact: every node's status showed every replica in contact
	// with its leader, After seconds after the final heal.
	InContact bool    `json:"in_contact"`
	After     float64 `json:"after"`
	Bound     float64 `json:"bound"`
	// Problems are what the last statuses showed when InContact is false.
	Problems []string `json:"problems,omitempty"`
	// Dumps are the goroutine dumps then saved in the run's folder (one
	// per member node and the harness's), DumpFailures those that could
	// not be taken.
	Dumps        []string `json:"dumps,omitempty"`
	DumpFailures []string `json:"dump_failures,omitempty"`
}

// ContactProblems lists the replicas of st that are not in contact with
// their group's leader, as the answering node sees them: a group without
// a leader, a replica that did not answer, one that reports itself stuck
// or has not heard from the leader for longer than the group's bound, and
// a follower its leader has had no answer from for as long.
func ContactProblems(st *admin.Status) []string {
	var out []string
	view := st.Node + "'s status: "
	if st.Partial {
		out = append(out, view+"partial (not everything answered in time)")
	}
	for _, g := range st.GroupList {
		name := fmt.Sprintf("group %d", g.ID)
		if g.Leader == "" {
			out = append(out, fmt.Sprintf("%s%s has no leader (%s)", view, name, g.Error))
			continue
		}
		for _, r := range g.Replicas {
			if !r.Member {
				continue // a move in progress: not a replica of the raft group yet
			}
			switch s := r.Status; {
			case s == nil:
				out = append(out, fmt.Sprintf("%s%s: no report from the replica on %s", view, name, r.Node))
			case s.Error != "":
				out = append(out, fmt.Sprintf("%s%s: the replica on %s did not answer: %s", view, name, r.Node, s.Error))
			case s.Stuck != "":
				out = append(out, fmt.Sprintf("%s%s: the replica on %s %s", view, name, r.Node, s.Stuck))
			case r.Node != g.Leader && g.StuckAfter > 0 && s.LastContact > g.StuckAfter:
				out = append(out, fmt.Sprintf("%s%s: the replica on %s last heard from leader %s %v ago", view, name, r.Node, g.Leader, time.Duration(s.LastContact)))
			}
		}
		for _, u := range g.Unreachable {
			if g.StuckAfter > 0 && u.Since > g.StuckAfter {
				out = append(out, fmt.Sprintf("%s%s: leader %s has had no answer from %s for %v", view, name, g.Leader, u.Node, time.Duration(u.Since)))
			}
		}
	}
	return out
}

// waitContact asks every member node for its status until none shows a
// contact problem or bound has passed since heal.
func waitContact(ctx context.Context, c *Cluster, heal time.Time, bound time.Duration) ContactResult {
	res := ContactResult{Bound: bound.Seconds()}
	for {
		var problems []string
		for _, n := range c.Members() {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := c.Admin(n).Status(sctx)
			cancel()
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s's status: %v", n.ID, err))
				continue
			}
			problems = append(problems, ContactProblems(st)...)
		}
		if len(problems) == 0 {
			res.InContact, res.After = true, time.Since(heal).Seconds()
			return res
		}
		if time.Since(heal) > bound || ctx.Err() != nil {
			res.After, res.Problems = time.Since(heal).Seconds(), slices.Clone(problems)
			return res
		}
		wait.Sleep(ctx, 500*time.Millisecond)
	}
}
