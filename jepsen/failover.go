package jepsen

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Failover of a paused leader.
//
// A pause's cost to clients is its longest write gap; what the cluster
// cannot avoid is the election. To tell the two apart the nemesis reads,
// right before a SIGSTOP, which data groups the node leads (its /metrics:
// herald_raft_group_leader), then polls the other nodes' /metrics until
// each of those groups has a leader among them. Polling costs each node a
// scrape every failoverPoll; the measure is late by at most that much.

const failoverPoll = 25 * time.Millisecond

// ledGroups lists the data groups node n's replicas lead (the meta group,
// which takes no client writes, left out).
func ledGroups(ctx context.Context, hc *http.Client, n *Node) ([]uint64, error) {
	leaders, err := scrapeLeaders(ctx, hc, n)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for g := range leaders {
		if g != 0 {
			out = append(out, g)
		}
	}
	return out, nil
}

// scrapeLeaders returns the groups whose replica on n leads.
func scrapeLeaders(ctx context.Context, hc *http.Client, n *Node) (map[uint64]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Net.ClientAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[uint64]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const prefix = `herald_raft_group_leader{group="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		g, v, ok := strings.Cut(rest, `"} `)
		if !ok || strings.TrimSpace(v) != "1" {
			continue
		}
		if id, err := strconv.ParseUint(g, 10, 64); err == nil {
			out[id] = true
		}
	}
	return out, sc.Err()
}

// watchFailover polls the nodes other than paused until every group of led
// has a leader among them, and returns the seconds since since; -1 when
// stop closes first.
func (nm *nemesis) watchFailover(paused *Node, led []uint64, since time.Time, stop <-chan struct{}) float64 {
	hc := &http.Client{Timeout: 4 * failoverPoll}
	t := time.NewTicker(failoverPoll)
	defer t.Stop()
	for {
		seen := map[uint64]bool{}
		for _, n := range nm.c.Up() {
			if n == paused {
				continue
			}
			leaders, err := scrapeLeaders(context.Background(), hc, n)
			if err != nil {
				continue
			}
			for g := range leaders {
				seen[g] = true
			}
		}
		all := true
		for _, g := range led {
			all = all && seen[g]
		}
		if all {
			return time.Since(since).Seconds()
		}
		select {
		case <-stop:
			return -1
		case <-t.C:
		}
	}
}
