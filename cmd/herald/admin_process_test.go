package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/wstest"
)

// A cluster of serve processes operated with the herald admin binary while
// a client keeps publishing: a joined node gets replicas by rebalancing, a
// leader moves, a replica moves, the node is decommissioned, and no
// acknowledged publish is lost or doubled.
func TestAdminCommandsOnServeProcesses(t *testing.T) {
	c := startServeCluster(t, t.TempDir(), 4, append([]string{"--insecure-auth", "--groups", "8", "--admin-token", "secret"}, fastElections...)...)
	type status struct {
		Health struct{ Verdict string }
		Nodes  []struct {
			ID       string
			Replicas int
			Leads    int
		}
		GroupList []struct {
			ID       uint64
			Meta     bool
			Leader   string
			Replicas []struct{ Node string }
		} `json:"group_list"`
	}
	getStatus := func() status {
		t.Helper()
		var st status
		if err := json.Unmarshal([]byte(c.mustAdmin(0, "--json", "status")), &st); err != nil {
			t.Fatalf("status JSON: %v", err)
		}
		return st
	}

	// A publisher runs through everything below.
	var (
		mu      sync.Mutex
		acked   = map[int]bool{}
		stop    atomic.Bool
		pubDone = make(chan struct{})
	)
	go func() {
		defer close(pubDone)
		var conn *wstest.Client
		for k := 0; !stop.Load(); k++ {
			for attempt := 0; !stop.Load(); attempt++ {
				if conn == nil {
					conn = wstest.Login(t, c.ws(1+attempt%2), "writer")
				}
				r, _ := conn.TryCall("publish", wstest.Obj{"room": fmt.Sprintf("room-%d", k%5), "data": k, "key": fmt.Sprint(k)})
				if r == nil {
					conn = nil
					continue
				}
				if r["ok"] == true {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	if st := getStatus(); len(st.Nodes) != 3 || st.Health.Verdict != "ok" {
		t.Fatalf("status of a fresh cluster: %+v", st)
	}
	if out := c.mustAdmin(0, "groups", "list"); !strings.Contains(out, "(meta)") {
		t.Fatalf("groups list:\n%s", out)
	}

	// A fourth node joins and a rebalance gives it its share.
	c.start(3, "--join", c.peer(0))
	waitReady(t, c.url(3), 60*time.Second)
	c.mustAdmin(0, "rebalance")
	st := getStatus()
	for _, n := range st.Nodes {
		if n.Replicas < 5 || n.Replicas > 7 {
			t.Fatalf("after rebalance node %s holds %d replicas (want about 6): %+v", n.ID, n.Replicas, st.Nodes)
		}
	}

	// Move a leader and a replica by hand.
	c.mustAdmin(0, "groups", "transfer-leader", "1", "--to", "n4")
	for _, g := range getStatus().GroupList {
		if g.ID == 1 && g.Leader != "n4" {
			t.Fatalf("group 1 led by %s after transfer-leader to n4", g.Leader)
		}
	}
	var group uint64
	var from, to string
	for _, g := range getStatus().GroupList {
		if g.Meta || from != "" {
			continue
		}
		holds := map[string]bool{}
		for _, r := range g.Replicas {
			holds[r.Node] = true
		}
		for _, n := range []string{"n1", "n2", "n3", "n4"} {
			if !holds[n] {
				to = n
			} else if from == "" {
				from = n
			}
		}
		group = g.ID
	}
	c.mustAdmin(0, "groups", "move", fmt.Sprint(group), "--from", from, "--to", to)
	for _, g := range getStatus().GroupList {
		if g.ID != group {
			continue
		}
		var nodes []string
		for _, r := range g.Replicas {
			nodes = append(nodes, r.Node)
		}
		if !strings.Contains(strings.Join(nodes, ","), to) || strings.Contains(strings.Join(nodes, ","), from) {
			t.Fatalf("group %d replicas %v after moving %s -> %s", group, nodes, from, to)
		}
	}

	// Decommission the fourth node: it ends up holding nothing and gone.
	c.mustAdmin(0, "nodes", "decommission", "n4")
	st = getStatus()
	if len(st.Nodes) != 3 {
		t.Fatalf("after decommission: %+v", st.Nodes)
	}
	c.stop(3)

	stop.Store(true)
	<-pubDone
	mu.Lock()
	defer mu.Unlock()
	seen := map[int]int{}
	reader := wstest.Login(t, c.ws(0), "reader")
	for r := range 5 {
		for from := 1; ; {
			h, _ := reader.TryCall("history", wstest.Obj{"room": fmt.Sprintf("room-%d", r), "from_seq": from, "limit": 1000})
			if h == nil || h["ok"] != true {
				t.Fatalf("history: %v", h)
			}
			evs := h["events"].([]any)
			for _, e := range evs {
				seen[int(e.(map[string]any)["data"].(float64))]++
			}
			if len(evs) == 0 || from+len(evs) > int(h["last_seq"].(float64)) {
				break
			}
			from += len(evs)
		}
	}
	for k := range acked {
		if seen[k] != 1 {
			t.Fatalf("acknowledged publish %d appears %d times", k, seen[k])
		}
	}
	t.Logf("%d publishes acknowledged during the admin operations, each exactly once in history", len(acked))
	c.stop(0, 1, 2)
}
