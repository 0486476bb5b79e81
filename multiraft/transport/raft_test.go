package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

// countFSM counts applied commands; its snapshot carries the count plus
// padding so snapshot installs move a meaningful amount of data.
type countFSM struct {
	mu       sync.Mutex
	n        uint64
	restores int
}

const snapshotPadding = 256 << 10

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Type == raft.LogCommand {
		f.n++
	}
	return f.n
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return countSnapshot(f.n), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if len(b) != 8+snapshotPadding {
		return fmt.Errorf("snapshot of %d bytes", len(b))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n = binary.BigEndian.Uint64(b)
	f.restores++
	return nil
}

func (f *countFSM) state() (n uint64, restores int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.restores
}

type countSnapshot uint64

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	b := binary.BigEndian.AppendUint64(nil, uint64(s))
	b = append(b, make([]byte, snapshotPadding)...)
	if _, err := sink.Write(b); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// raftReplica is one group's raft on one node, with stores that survive a
// restart of the node. Snapshots go to a FileSnapshotStore: raft's
// InmemSnapshotStore lets Open read a snapshot while it is still being
// written, which the race detector reports.
type raftReplica struct {
	r      *raft.Raft
	fsm    *countFSM
	logs   *raft.InmemStore
	snaps  raft.SnapshotStore
	stable *raft.InmemStore
}

type raftNode struct {
	id       string
	addr     raft.ServerAddress
	m        *Manager
	replicas map[uint64]*raftReplica
}

// raftConfigMod, when set, adjusts raftConfig for the running test.
var raftConfigMod func(*raft.Config)

func raftConfig(id string) *raft.Config {
	c := raft.DefaultConfig()
	defer func() {
		if raftConfigMod != nil {
			raftConfigMod(c)
		}
	}()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 16
	c.TrailingLogs = 4
	c.SnapshotInterval = 200 * time.Millisecond
	c.LogOutput = io.Discard
	c.LogLevel = "ERROR"
	return c
}

// startRaftNode starts a Manager (on ln, if given) and the rafts of groups,
// reusing stores from old when restarting.
func startRaftNode(t *testing.T, id string, ln net.Listener, groups []uint64, old *raftNode, mod ...func(*Config)) *raftNode {
	t.Helper()
	m := newTestManager(t, id, append([]func(*Config){func(c *Config) {
		c.Listener = ln
		c.RPCTimeout = time.Second
	}}, mod...)...)
	n := &raftNode{id: id, addr: m.Addr(), m: m, replicas: make(map[uint64]*raftReplica)}
	for _, gid := range groups {
		tr, err := m.Group(gid)
		if err != nil {
			t.Fatal(err)
		}
		rep := &raftReplica{fsm: &countFSM{}}
		if old != nil {
			o := old.replicas[gid]
			rep.logs, rep.stable, rep.snaps = o.logs, o.stable, o.snaps
		} else {
			snaps, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			rep.logs, rep.stable, rep.snaps = raft.NewInmemStore(), raft.NewInmemStore(), snaps
		}
		r, err := raft.NewRaft(raftConfig(id), rep.fsm, rep.logs, rep.stable, rep.snaps, tr)
		if err != nil {
			t.Fatalf("NewRaft(%s, group %d): %v", id, gid, err)
		}
		rep.r = r
		n.replicas[gid] = rep
	}
	// Startup restores from the local snapshot store are not what the test
	// looks for; count only restores from InstallSnapshot.
	for _, rep := range n.replicas {
		rep.fsm.mu.Lock()
		rep.fsm.restores = 0
		rep.fsm.mu.Unlock()
	}
	return n
}

func (n *raftNode) stop(t *testing.T) {
	t.Helper()
	for gid, rep := range n.replicas {
		if err := rep.r.Shutdown().Error(); err != nil {
			t.Errorf("shutdown %s group %d: %v", n.id, gid, err)
		}
	}
	_ = n.m.Close()
}

// leaderOf returns the replica leading group gid among nodes, if any.
func leaderOf(nodes []*raftNode, gid uint64) *raftReplica {
	for _, n := range nodes {
		if rep := n.replicas[gid]; rep.r.State() == raft.Leader {
			return rep
		}
	}
	return nil
}

// bootstrap makes nodes the voters of every group they run and waits for
// a leader in each of gids.
func bootstrap(t *testing.T, nodes []*raftNode, gids []uint64) {
	t.Helper()
	var servers []raft.Server
	for _, n := range nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.id), Address: n.addr})
	}
	booted := make(map[uint64]bool)
	for _, n := range nodes {
		for gid, rep := range n.replicas {
			err := rep.r.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
			// The nodes bootstrapped first may elect a leader of the group
			// before a later one gets here (on a loaded machine, easily
			// within the election timeout): its raft then has a term or the
			// leader's log, which holds the same configuration, and
			// refuses to bootstrap.
			if err != nil && !(booted[gid] && errors.Is(err, raft.ErrCantBootstrap)) {
				t.Fatalf("bootstrap %s group %d: %v", n.id, gid, err)
			}
			booted[gid] = true
		}
	}
	waitLeaders(t, nodes, gids, "a leader in every group")
}

// waitLeaders waits until each of gids has a leader among nodes.
func waitLeaders(t *testing.T, nodes []*raftNode, gids []uint64, what string) {
	t.Helper()
	eventually.True(t, 15*time.Second, what, func() bool {
		for _, gid := range gids {
			if leaderOf(nodes, gid) == nil {
				return false
			}
		}
		return true
	})
}

// applyN applies n commands to group gid through whichever node leads it,
// retrying across elections.
func applyN(t *testing.T, nodes []*raftNode, gid uint64, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for done := 0; done < n; {
		if time.Now().After(deadline) {
			t.Fatalf("group %d: applied only %d of %d commands", gid, done, n)
		}
		l := leaderOf(nodes, gid)
		if l == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err := l.r.Apply([]byte("inc"), time.Second).Error(); err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		done++
	}
}

// TestRaftCluster runs real raft groups over the transport: 3 nodes with 8
// groups each. It elects leaders, commits, kills a node, checks every group
// recovers and commits with the remaining two, then restarts the dead node
// after the logs it needs were compacted away, so it must catch up through
// InstallSnapshot.
func TestRaftCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const groups = 8
	var gids []uint64
	for g := uint64(1); g <= groups; g++ {
		gids = append(gids, g)
	}
	// Fixed listeners so the third node can come back on its address.
	var lns []net.Listener
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	var nodes []*raftNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startRaftNode(t, fmt.Sprintf("n%d", i+1), lns[i], gids, nil))
	}
	defer func() {
		for _, n := range nodes {
			n.stop(t)
		}
	}()
	bootstrap(t, nodes, gids)
	const first = 10
	var wg sync.WaitGroup
	for _, gid := range gids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applyN(t, nodes, gid, first)
		}()
	}
	wg.Wait()
	eventually.True(t, 10*time.Second, "all replicas to apply the first batch", func() bool {
		for _, n := range nodes {
			for _, rep := range n.replicas {
				if c, _ := rep.fsm.state(); c < first {
					return false
				}
			}
		}
		return true
	})
	for _, n := range nodes {
		if out, _ := managerConns(n.m); out > 2 {
			t.Fatalf("node %s has %d outbound connections for %d groups; want at most one per peer", n.id, out, groups)
		}
	}

	// Kill n3: its Manager goes away under its rafts.
	dead := nodes[2]
	_ = dead.m.Close()
	dead.stop(t)
	live := nodes[:2]
	waitLeaders(t, live, gids, "a leader on a live node in every group")
	const second = 30
	for _, gid := range gids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applyN(t, live, gid, second)
			// Compact the leader's log past what n3 has.
			if l := leaderOf(live, gid); l != nil {
				_ = l.r.Snapshot().Error()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, gid := range gids {
		l := leaderOf(live, gid)
		if l == nil {
			continue
		}
		first, _ := l.logs.FirstIndex()
		last, _ := dead.replicas[gid].logs.LastIndex()
		if first <= last+1 {
			t.Logf("group %d: leader log starts at %d, n3 has up to %d; a snapshot may not be needed", gid, first, last)
		}
	}

	// Bring n3 back on its address with its old stores.
	ln, err := net.Listen("tcp", string(dead.addr))
	if err != nil {
		t.Fatalf("re-listen on %s: %v", dead.addr, err)
	}
	nodes[2] = startRaftNode(t, dead.id, ln, gids, dead)
	// applyN retries an Apply whose leadership was lost, which may have
	// committed anyway, so a group may hold more than it was asked for:
	// the restarted node must reach what the group's other replicas hold.
	want := uint64(first + second)
	eventually.True(t, 90*time.Second, "the restarted node to catch up in every group", func() bool {
		for gid, rep := range nodes[2].replicas {
			c, _ := rep.fsm.state()
			if c < want {
				return false
			}
			for _, n := range nodes[:2] {
				if other, _ := n.replicas[gid].fsm.state(); other != c {
					return false
				}
			}
		}
		return true
	})
	installs := 0
	for _, rep := range nodes[2].replicas {
		if _, r := rep.fsm.state(); r > 0 {
			installs++
		}
	}
	if installs == 0 {
		t.Fatal("the restarted node caught up without any InstallSnapshot")
	}
	t.Logf("restarted node caught up; %d of %d groups through InstallSnapshot", installs, groups)

	// Every group keeps committing on all three.
	base := map[uint64]uint64{}
	for gid, rep := range nodes[2].replicas {
		base[gid], _ = rep.fsm.state()
	}
	for _, gid := range gids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applyN(t, nodes, gid, 5)
		}()
	}
	wg.Wait()
	eventually.True(t, 10*time.Second, "all replicas to apply the last batch", func() bool {
		for gid, rep := range nodes[2].replicas {
			c, _ := rep.fsm.state()
			if c < base[gid]+5 {
				return false
			}
			for _, n := range nodes[:2] {
				if other, _ := n.replicas[gid].fsm.state(); other != c {
					return false
				}
			}
		}
		return true
	})
}
