package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
)

// readyz is a node's /readyz answer.
type readyz struct {
	status   int
	OK       bool     `json:"ok"`
	Reason   string   `json:"reason"`
	Degraded []string `json:"degraded"`
}

// fetch GETs url and returns the status and the body.
func fetch(url string) (int, []byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func getReadyz(base string) (readyz, error) {
	var r readyz
	status, b, err := fetch(base + "/readyz")
	if err != nil {
		return r, err
	}
	r.status = status
	return r, json.Unmarshal(b, &r)
}

// metricValues returns the values of a gauge by its group label, from a
// node's /metrics text.
func metricValues(base, name string) (map[string]float64, error) {
	_, b, err := fetch(base + "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		var g string
		var v float64
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		if _, err := fmt.Sscanf(line[len(name):], "{group=%q} %g", &g, &v); err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		out[g] = v
	}
	return out, nil
}

// A node whose replicas are cut off from their leaders (its incoming peer
// links cut, its outgoing ones up) stays ready, says why it is degraded on
// /readyz, and exports the stuck replicas; its groups' leader exports the
// follower it cannot reach. All of it clears when the links heal.
func TestStuckReplicaReadinessAndMetrics(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 3, Groups: 2, Replication: 3, PeerProxies: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for g := uint64(0); g <= 2; g++ {
		if err := c.Node(0).Host().TransferLeader(ctx, g, "n1"); err != nil {
			t.Fatalf("transfer group %d to n1: %v", g, err)
		}
	}
	n1, n3 := c.HTTP(0), c.HTTP(2)

	c.Proxy(2).Block("n1", "n2")
	eventually.Nil(t, 20*time.Second, "n3 cut off", func() error {
		r, err := getReadyz(n3)
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || !r.OK || len(r.Degraded) != 3 {
			return fmt.Errorf("n3 /readyz: %d %+v, want 200 naming its 3 stuck replicas", r.status, r)
		}
		for _, note := range r.Degraded {
			if !strings.Contains(note, "has not heard from a leader") {
				return fmt.Errorf("n3 /readyz note %q", note)
			}
		}
		stuck, err := metricValues(n3, "herald_raft_group_stuck")
		if err != nil {
			return err
		}
		contact, err := metricValues(n3, "herald_raft_group_last_contact_seconds")
		if err != nil {
			return err
		}
		for _, g := range []string{"0", "1", "2"} {
			if stuck[g] != 1 || contact[g] < 0.9 {
				return fmt.Errorf("n3 group %s: stuck %v, last contact %vs ago; want stuck, more than 0.9s", g, stuck[g], contact[g])
			}
		}
		unreachable, err := metricValues(n1, "herald_raft_group_unreachable_followers")
		if err != nil {
			return err
		}
		for _, g := range []string{"0", "1", "2"} {
			if unreachable[g] != 1 {
				return fmt.Errorf("n1 group %s: %v unreachable followers, want 1", g, unreachable[g])
			}
		}
		return nil
	})

	c.Proxy(2).Unblock()
	eventually.Nil(t, 20*time.Second, "healed", func() error {
		r, err := getReadyz(n3)
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || len(r.Degraded) != 0 {
			return fmt.Errorf("n3 /readyz after the heal: %d %+v", r.status, r)
		}
		for node, base := range map[string]string{"n1": n1, "n3": n3} {
			for _, name := range []string{"herald_raft_group_stuck", "herald_raft_group_unreachable_followers"} {
				vals, err := metricValues(base, name)
				if err != nil {
					return err
				}
				for g, v := range vals {
					if v != 0 {
						return fmt.Errorf("%s after the heal: %s{group=%s} = %v", node, name, g, v)
					}
				}
			}
		}
		return nil
	})
}
