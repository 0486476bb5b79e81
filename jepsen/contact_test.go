package jepsen

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
)

// healthyStatus is n1's status of a 3-node cluster with the meta group and
// one data group, every replica in contact.
func healthyStatus() *admin.Status {
	group := func(id uint64) admin.Group {
		g := admin.Group{ID: id, Meta: id == 0, Leader: "n1", StuckAfter: admin.Duration(1500 * time.Millisecond)}
		for _, n := range []string{"n1", "n2", "n3"} {
			st := &admin.ReplicaStatus{State: "Follower", LastContact: admin.Duration(100 * time.Millisecond)}
			if n == "n1" {
				st = &admin.ReplicaStatus{State: "Leader"}
			}
			g.Replicas = append(g.Replicas, admin.Replica{Node: n, Assigned: true, Member: true, Voter: true, Status: st})
		}
		return g
	}
	return &admin.Status{Node: "n1", GroupList: []admin.Group{group(0), group(1)}}
}

// Each status is wrong in one way, and the checker must say so naming the
// group and the replica; the healthy one passes.
func TestContactProblems(t *testing.T) {
	if p := ContactProblems(healthyStatus()); len(p) != 0 {
		t.Fatalf("a healthy status has contact problems: %q", p)
	}
	for _, tt := range []struct {
		name  string
		spoil func(st *admin.Status)
		want  string
	}{
		{"no leader", func(st *admin.Status) { st.GroupList[1].Leader = "" }, "group 1 has no leader"},
		{"silent replica", func(st *admin.Status) {
			st.GroupList[1].Replicas[2].Status = &admin.ReplicaStatus{Error: "transport: peer unreachable"}
		}, "group 1: the replica on n3 did not answer"},
		{"stuck replica", func(st *admin.Status) {
			st.GroupList[1].Replicas[2].Status.Stuck = "has not heard from a leader for 12s"
		}, "group 1: the replica on n3 has not heard from a leader for 12s"},
		{"old contact", func(st *admin.Status) {
			st.GroupList[0].Replicas[1].Status.LastContact = admin.Duration(2 * time.Second)
		}, "group 0: the replica on n2 last heard from leader n1 2s ago"},
		{"leader hears nothing", func(st *admin.Status) {
			st.GroupList[1].Unreachable = []admin.Unreachable{{Node: "n2", Since: admin.Duration(3 * time.Second)}}
		}, "group 1: leader n1 has had no answer from n2 for 3s"},
		{"no report", func(st *admin.Status) { st.GroupList[1].Replicas[1].Status = nil }, "group 1: no report from the replica on n2"},
		{"partial", func(st *admin.Status) { st.Partial = true }, "partial"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := healthyStatus()
			tt.spoil(st)
			p := ContactProblems(st)
			if len(p) != 1 || !strings.Contains(p[0], tt.want) || !strings.HasPrefix(p[0], "n1's status: ") {
				t.Fatalf("problems %q, want one naming %q", p, tt.want)
			}
		})
	}
	// Short of the bound is in contact; a replica still being added is
	// not judged.
	st := healthyStatus()
	st.GroupList[1].Unreachable = []admin.Unreachable{{Node: "n2", Since: admin.Duration(time.Second)}}
	st.GroupList[1].Replicas = append(st.GroupList[1].Replicas, admin.Replica{Node: "n4", Assigned: true})
	if p := ContactProblems(st); len(p) != 0 {
		t.Fatalf("problems %q, want none", p)
	}
}

func TestContactMakesRunInvalid(t *testing.T) {
	info := RunInfo{Ready: true, Started: time.Now(), Contact: &ContactResult{After: 30, Bound: 30,
		Problems: []string{"n1's status: group 3: the replica on n3 has not heard from a leader for 31s"}}}
	res := Check(valid(nil, nil), info, "", 10*time.Second)
	if res.Valid || !slices.ContainsFunc(res.Problems, func(p string) bool {
		return strings.Contains(p, "not in contact") && strings.Contains(p, "group 3: the replica on n3")
	}) {
		t.Fatalf("a run with a replica out of contact: valid %v, problems %q", res.Valid, res.Problems)
	}
	info.Contact = &ContactResult{InContact: true, After: 0.5, Bound: 30}
	if res := Check(valid(nil, nil), info, "", 10*time.Second); !res.Valid {
		t.Fatalf("a run with every replica in contact is invalid: %q", res.Problems)
	}
}
