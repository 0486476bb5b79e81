package jepsen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestLedGroupsReadsTheLeaderGauge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`# HELP herald_raft_group_leader 1 if this node's replica of the group (0: the meta group) leads it, else 0.
# TYPE herald_raft_group_leader gauge
herald_raft_group_leader{group="0"} 1
herald_raft_group_leader{group="1"} 0
herald_raft_group_leader{group="2"} 1
herald_raft_group_leader{group="10"} 1
herald_raft_group_term{group="3"} 1
`))
	}))
	defer srv.Close()
	n := &Node{ID: "n1", Net: NodeNet{ClientAddr: strings.TrimPrefix(srv.URL, "http://")}}
	got, err := ledGroups(context.Background(), srv.Client(), n)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{2, 10}) {
		t.Fatalf("led groups %v, want [2 10] (the meta group left out)", got)
	}
}
