package logstore

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// recordFSM remembers every command it applied, in order.
type recordFSM struct {
	mu   sync.Mutex
	data [][]byte
}

func (f *recordFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = append(f.data, bytes.Clone(l.Data))
	return nil
}

func (f *recordFSM) applied() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.data)
}

func (f *recordFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, fmt.Errorf("snapshots are disabled in this test")
}

func (f *recordFSM) Restore(io.ReadCloser) error {
	return fmt.Errorf("snapshots are disabled in this test")
}

// raftCluster is one raft group replicated on every node.
type raftCluster struct {
	group  uint64
	rafts  []*raft.Raft
	fsms   []*recordFSM
	stores []Store
}

func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.MaxAppendEntries = 512
	// FSM replay after restart must come from the log alone.
	c.SnapshotThreshold = 1 << 30
	c.SnapshotInterval = time.Hour
	c.LogOutput = io.Discard
	c.LogLevel = "OFF"
	return c
}

// startCluster starts the group's raft on every node, sharing each node's
// Backend with the node's other groups.
func startCluster(t *testing.T, group uint64, backends []Backend, snaps []raft.SnapshotStore, bootstrap bool) *raftCluster {
	t.Helper()
	c := &raftCluster{group: group}
	var trans []*raft.InmemTransport
	var servers []raft.Server
	for n := range backends {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("g%d-n%d", group, n)))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", n)), Address: addr})
	}
	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for n, be := range backends {
		s := mustGroup(t, be, group)
		conf := raftConfig(servers[n].ID)
		if bootstrap {
			if err := raft.BootstrapCluster(conf, s, s, snaps[n], trans[n], raft.Configuration{Servers: servers}); err != nil {
				t.Fatalf("group %d node %d: bootstrap: %v", group, n, err)
			}
		}
		cache, err := raft.NewLogCache(64, s)
		if err != nil {
			t.Fatal(err)
		}
		fsm := &recordFSM{}
		r, err := raft.NewRaft(conf, fsm, cache, s, snaps[n], trans[n])
		if err != nil {
			t.Fatalf("group %d node %d: new raft: %v", group, n, err)
		}
		c.rafts, c.fsms, c.stores = append(c.rafts, r), append(c.fsms, fsm), append(c.stores, s)
	}
	return c
}

func (c *raftCluster) leader(t *testing.T) *raft.Raft {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range c.rafts {
			if r.State() == raft.Leader {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("group %d: no leader", c.group)
	return nil
}

// waitApplied waits until every node's FSM applied n commands.
func (c *raftCluster) waitApplied(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, f := range c.fsms {
		for len(f.applied()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("group %d: applied %d of %d commands", c.group, len(f.applied()), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (c *raftCluster) shutdown(t *testing.T) {
	t.Helper()
	for n, r := range c.rafts {
		if err := r.Shutdown().Error(); err != nil {
			t.Fatalf("group %d node %d: shutdown: %v", c.group, n, err)
		}
	}
}

func TestRaftRestart(t *testing.T) {
	// bolt is left out: a file per group with two fsyncs per write makes
	// it slow, and its store is raft-boltdb's own, tested upstream.
	for _, kind := range []Kind{KindBadger, KindWAL} {
		t.Run(string(kind), func(t *testing.T) { testRaftRestart(t, kind) })
	}
}

func testRaftRestart(t *testing.T, kind Kind) {
	const nodes, groups, entries = 3, 4, 200
	dirs := make([]string, nodes)
	backends := make([]Backend, nodes)
	snaps := make([]raft.SnapshotStore, nodes)
	for n := range nodes {
		dirs[n] = t.TempDir()
		backends[n] = openTest(t, kind, dirs[n])
		snaps[n] = raft.NewInmemSnapshotStore()
	}
	clusters := make([]*raftCluster, groups)
	for g := range groups {
		clusters[g] = startCluster(t, uint64(g+1), backends, snaps, true)
	}
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for _, c := range clusters {
		leader := c.leader(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last raft.ApplyFuture
			for i := range entries {
				last = leader.Apply([]byte(fmt.Sprintf("group %d entry %d", c.group, i)), 10*time.Second)
			}
			if err := last.Error(); err != nil {
				errs <- fmt.Errorf("group %d: apply: %w", c.group, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := make([][][]byte, groups)
	lastIndex := make([][]uint64, groups)
	for g, c := range clusters {
		c.waitApplied(t, entries)
		want[g] = c.fsms[0].applied()
		c.shutdown(t)
		for _, s := range c.stores {
			li, err := s.LastIndex()
			if err != nil {
				t.Fatal(err)
			}
			lastIndex[g] = append(lastIndex[g], li)
		}
	}
	for n, b := range backends {
		if err := b.Close(); err != nil {
			t.Fatalf("node %d: close: %v", n, err)
		}
		backends[n] = openTest(t, kind, dirs[n])
		defer backends[n].Close()
	}
	for g := range groups {
		c := startCluster(t, uint64(g+1), backends, snaps, false)
		for n, s := range c.stores {
			if li, err := s.LastIndex(); err != nil || li < lastIndex[g][n] {
				t.Fatalf("group %d node %d: last index %d after restart, %d before (%v)", g+1, n, li, lastIndex[g][n], err)
			}
		}
		// Logs are only re-applied once the new leader commits in its
		// term, which it does right after the election.
		c.leader(t)
		c.waitApplied(t, entries)
		for n, f := range c.fsms {
			if got := f.applied(); !slices.EqualFunc(got, want[g], bytes.Equal) {
				t.Fatalf("group %d node %d: replayed %d commands that differ from the %d applied before restart", g+1, n, len(got), len(want[g]))
			}
		}
		c.shutdown(t)
	}
}
