package metrics

import (
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/multiraft"
)

// GroupSource is what the group collector reads at scrape time;
// *multiraft.Host is one.
type GroupSource interface {
	LocalGroups() []uint64
	Status(group uint64) (multiraft.GroupStatus, error)
	// DamagedReplicas and CorruptionCounts report local replicas whose
	// stored data failed its checksums, by group.
	DamagedReplicas() map[uint64]string
	CorruptionCounts() map[uint64]uint64
}

// WatchGroups exports the state of every local replica of src: leader
// flag, term, log indexes, apply lag and its contact with its leader. It reads them at scrape time,
// from the replicas' raft instances, so no goroutine keeps them current.
// Per-follower replication lag is not among them: raft keeps it on the
// leader without exposing it.
func (n *Node) WatchGroups(src GroupSource) {
	n.reg.MustRegister(&groupCollector{src: src})
}

var (
	groupLabels   = []string{"group"}
	groupLeader   = groupDesc("herald_raft_group_leader", "1 if this node's replica of the group (0: the meta group) leads it, else 0.")
	groupTerm     = groupDesc("herald_raft_group_term", "Raft term of this node's replica of the group.")
	groupLast     = groupDesc("herald_raft_group_last_index", "Last log index this node's replica of the group holds.")
	groupCommit   = groupDesc("herald_raft_group_commit_index", "Highest log index this node's replica of the group knows to be committed.")
	groupApplied  = groupDesc("herald_raft_group_applied_index", "Highest log index this node's replica of the group applied.")
	groupApplyLag = groupDesc("herald_raft_group_apply_lag", "Committed entries this node's replica of the group has not applied yet (commit index minus applied index).")
	groupContact  = groupDesc("herald_raft_group_last_contact_seconds", "Seconds since this node's replica of the group last heard from a leader (0 while it leads).")
	groupStuck    = groupDesc("herald_raft_group_stuck", "1 if this node's replica of the group is cut off from it: no contact with a leader for more than 3 heartbeat timeouts, or 3 elections lost in 20; else 0.")
	groupUnreach  = groupDesc("herald_raft_group_unreachable_followers", "On the group's leader: followers that have not answered it for more than 3 heartbeat timeouts (0 elsewhere).")
	groupDamaged  = groupDesc("herald_group_damaged", "1 if this node's replica of the group found its stored data corrupt and serves nothing until it is repaired (herald admin groups repair); else 0.")
	corruptions   = groupDesc("herald_storage_corruptions_total", "Times this node found its replica of the group corrupt (a record, raft log entry or snapshot failing its checksum) since it started.")
)

func groupDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, groupLabels, nil)
}

type groupCollector struct{ src GroupSource }

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{groupLeader, groupTerm, groupLast, groupCommit, groupApplied, groupApplyLag, groupContact, groupStuck, groupUnreach, groupDamaged, corruptions} {
		ch <- d
	}
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	damaged := c.src.DamagedReplicas()
	for g, n := range c.src.CorruptionCounts() {
		ch <- prometheus.MustNewConstMetric(corruptions, prometheus.CounterValue, float64(n), strconv.FormatUint(g, 10))
	}
	for g := range damaged {
		// A replica too damaged to start is not among LocalGroups.
		if _, err := c.src.Status(g); err == nil && !slices.Contains(c.src.LocalGroups(), g) {
			ch <- prometheus.MustNewConstMetric(groupDamaged, prometheus.GaugeValue, 1, strconv.FormatUint(g, 10))
		}
	}
	for _, g := range c.src.LocalGroups() {
		st, err := c.src.Status(g)
		if err != nil {
			continue // the replica left this node since LocalGroups
		}
		label := strconv.FormatUint(g, 10)
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
		}
		leader := 0.0
		if st.State == "Leader" {
			leader = 1
		}
		lag := 0.0
		if st.CommitIndex > st.AppliedIndex {
			lag = float64(st.CommitIndex - st.AppliedIndex)
		}
		gauge(groupLeader, leader)
		gauge(groupTerm, float64(st.Term))
		gauge(groupLast, float64(st.LastIndex))
		gauge(groupCommit, float64(st.CommitIndex))
		gauge(groupApplied, float64(st.AppliedIndex))
		gauge(groupApplyLag, lag)
		stuck, unreachable := 0.0, 0.0
		if st.Stuck != "" {
			stuck = 1
		}
		for _, u := range st.Unreachable {
			if time.Duration(u.Since) > st.StuckAfter() {
				unreachable++
			}
		}
		gauge(groupContact, time.Duration(st.ContactAge).Seconds())
		gauge(groupStuck, stuck)
		gauge(groupUnreach, unreachable)
		dmg := 0.0
		if damaged[g] != "" {
			dmg = 1
		}
		gauge(groupDamaged, dmg)
	}
}
