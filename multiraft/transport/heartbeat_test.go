package transport

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

// batchedCluster starts three raft nodes with node-level heartbeats (a
// quarter of raftConfig's heartbeat timeout) and bootstraps groups on them.
// mods apply to every node's Manager.
func batchedCluster(t *testing.T, groups int, mods ...func(id string, c *Config)) []*raftNode {
	t.Helper()
	var gids []uint64
	for g := 1; g <= groups; g++ {
		gids = append(gids, uint64(g))
	}
	var nodes []*raftNode
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, startRaftNode(t, id, ln, gids, nil, func(c *Config) {
			c.HeartbeatInterval = raftConfig(id).HeartbeatTimeout / 4
			for _, mod := range mods {
				mod(id, c)
			}
		}))
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})
	bootstrap(t, nodes, gids)
	return nodes
}

// terms returns each group's term as its leader sees it.
func terms(nodes []*raftNode, groups int) map[uint64]uint64 {
	out := make(map[uint64]uint64)
	for g := uint64(1); g <= uint64(groups); g++ {
		for _, n := range nodes {
			if rep := n.replicas[g]; rep.r.State() == raft.Leader {
				var term uint64
				fmt.Sscan(rep.r.Stats()["term"], &term)
				out[g] = term
			}
		}
	}
	return out
}

// idleFor leaves the groups idle for d and fails t for each group whose
// term changed meanwhile: an election, so its followers missed
// heartbeats. It returns the nodes' heartbeat counts before and after.
func idleFor(t *testing.T, nodes []*raftNode, groups int, d time.Duration) (before, after HeartbeatStats) {
	t.Helper()
	terms0, before := terms(nodes, groups), sumStats(nodes)
	time.Sleep(d)
	terms1, after := terms(nodes, groups), sumStats(nodes)
	for g, term := range terms0 {
		if terms1[g] != term {
			t.Errorf("group %d changed term %d -> %d while idle: followers missed heartbeats", g, term, terms1[g])
		}
	}
	return before, after
}

func sumStats(nodes []*raftNode) HeartbeatStats {
	var s HeartbeatStats
	for _, n := range nodes {
		h := n.m.HeartbeatStats()
		s.Sent += h.Sent
		s.Batched += h.Batched
		s.Batches += h.Batches
		s.Ridden += h.Ridden
		s.Received += h.Received
	}
	return s
}

// TestHeartbeatBatching runs 12 raft groups on 3 nodes with node-level
// heartbeats. Followers must hear from their leaders through the batches
// alone (no election happens while nearly every heartbeat is batched),
// VerifyLeader must still work and must fail for a leader cut off from its
// followers, and a dead node's groups must fail over.
func TestHeartbeatBatching(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	steadyRaft(t)
	const groups = 12
	nodes := batchedCluster(t, groups)
	for g := uint64(1); g <= groups; g++ {
		applyN(t, nodes, g, 3)
	}
	stats0, stats1 := idleFor(t, nodes, groups, 3*time.Second) // three heartbeat timeouts
	sent, batched := stats1.Sent-stats0.Sent, stats1.Batched-stats0.Batched
	t.Logf("over 3s: %d heartbeats batched in %d batches, %d sent alone", batched, stats1.Batches-stats0.Batches, sent)
	// 12 groups x 2 followers, one heartbeat per 250 ms interval: ~290.
	if batched < 100 || sent > batched/10 {
		t.Fatalf("heartbeats: %d batched, %d sent alone; want nearly all batched", batched, sent)
	}
	if stats1.Received == 0 {
		t.Fatal("no node answered a batched heartbeat as a follower")
	}

	// Leadership checks go out at once and succeed.
	for g := uint64(1); g <= groups; g++ {
		l := leaderOf(nodes, g)
		if l == nil {
			t.Fatalf("group %d lost its leader", g)
		}
		if err := l.r.VerifyLeader().Error(); err != nil {
			t.Fatalf("group %d: VerifyLeader on the leader: %v", g, err)
		}
	}

	// Stop n2 and n3: a leader on n1 must not confirm its leadership.
	var onN1 []uint64
	for g := uint64(1); g <= groups; g++ {
		if nodes[0].replicas[g].r.State() == raft.Leader {
			onN1 = append(onN1, g)
		}
	}
	nodes[1].stop(t)
	nodes[2].stop(t)
	for _, g := range onN1 {
		err := nodes[0].replicas[g].r.VerifyLeader().Error()
		if err == nil {
			t.Fatalf("group %d: VerifyLeader succeeded on n1 with both followers gone", g)
		}
	}
	t.Logf("%d leaders on n1 failed VerifyLeader once their followers were gone", len(onN1))
}

// TestHeartbeatBatchingFailover kills a node and checks that every group
// it led elects a leader among the other two and commits.
func TestHeartbeatBatchingFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const groups = 9
	nodes := batchedCluster(t, groups)
	dead := nodes[2]
	_ = dead.m.Close()
	dead.stop(t)
	live := nodes[:2]
	for g := uint64(1); g <= groups; g++ {
		applyN(t, live, g, 2)
	}
}

// TestHeartbeatBatchingPeerWithoutService: a peer that does not serve
// batches (an older node) answers "unknown service"; heartbeats to it must
// go on their own and its groups must stay quiet.
func TestHeartbeatBatchingPeerWithoutService(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	steadyRaft(t)
	const groups = 6
	nodes := batchedCluster(t, groups)
	for _, n := range nodes {
		n.m.Handle(heartbeatService, nil)
	}
	time.Sleep(500 * time.Millisecond) // batches in flight finish
	stats0, stats1 := idleFor(t, nodes, groups, 2*time.Second)
	if b := stats1.Batched - stats0.Batched; b != 0 {
		t.Errorf("%d heartbeats answered through batches no node serves", b)
	}
	if s := stats1.Sent - stats0.Sent; s < 40 { // 12 links, one per 0.2–0.45 s
		t.Errorf("only %d heartbeats sent on their own in 2s", s)
	}
}

// TestServeHeartbeats checks the follower side: an entry reaches raft only
// for a term raft accepted before, and malformed batches are refused with
// an error, never a panic.
func TestServeHeartbeats(t *testing.T) {
	m := newTestManager(t, "f")
	g := mustGroup(t, m, 7)
	var got []uint64
	g.SetHeartbeatHandler(func(rpc raft.RPC) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		got = append(got, req.Term)
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
	})
	g.hbTerm.Store(5)
	hb := heartbeatRPC()
	batch := func(entries ...[2]uint64) []byte {
		b := []byte{heartbeatBatchVersion}
		b = appendBytes(b, appendAppendEntriesRequest(nil, &hb))
		b = binary.AppendUvarint(b, uint64(len(entries)))
		for _, e := range entries {
			b = binary.AppendUvarint(b, e[0])
			b = binary.AppendUvarint(b, e[1])
			b = append(b, 0)
		}
		return b
	}
	// Group 7 at the accepted term 5; group 7 at term 6 (new: skipped);
	// group 9 (not here: skipped).
	out, err := m.serveHeartbeats(t.Context(), "l", 0, batch([2]uint64{7, 5}, [2]uint64{7, 6}, [2]uint64{9, 5}))
	if err != nil {
		t.Fatal(err)
	}
	resps, _, err := decodeHeartbeatReply(out, 3)
	if err != nil {
		t.Fatal(err)
	}
	if resps[0] == nil || !resps[0].Success || resps[0].Term != 5 || resps[1] != nil || resps[2] != nil {
		t.Fatalf("replies %s, %v, %v; want success at term 5, then two skipped", describe(resps[0]), resps[1], resps[2])
	}
	if len(got) != 1 || got[0] != 5 {
		t.Fatalf("raft saw heartbeats of terms %v, want [5]", got)
	}
	if _, _, err := decodeHeartbeatReply(out, 2); err == nil {
		t.Fatal("a reply with the wrong number of entries was accepted")
	}

	// An empty append riding on the heartbeat is answered only if this
	// transport relayed exactly that append to raft, and raft accepted it.
	ride := func(m appendMark) []byte {
		b := []byte{heartbeatBatchVersion}
		b = appendBytes(b, appendAppendEntriesRequest(nil, &hb))
		b = binary.AppendUvarint(b, 1)
		b = binary.AppendUvarint(b, 7)
		b = binary.AppendUvarint(b, m.term)
		b = append(b, 1)
		b = binary.AppendUvarint(b, m.prev)
		b = binary.AppendUvarint(b, m.prevTerm)
		return binary.AppendUvarint(b, m.commit)
	}
	rides := func(mark appendMark) bool {
		t.Helper()
		out, err := m.serveHeartbeats(t.Context(), "l", 0, ride(mark))
		if err != nil {
			t.Fatal(err)
		}
		resps, ridden, err := decodeHeartbeatReply(out, 1)
		if err != nil || resps[0] == nil {
			t.Fatalf("riding heartbeat not handled: %v", err)
		}
		return ridden[0]
	}
	mark := appendMark{term: 5, prev: 40, prevTerm: 5, commit: 38}
	if rides(mark) {
		t.Fatal("an empty append rode on a transport that relayed no append")
	}
	appendReq := &raft.AppendEntriesRequest{Term: 5, PrevLogEntry: 39, PrevLogTerm: 4,
		Entries: []*raft.Log{{Index: 40, Term: 5}}, LeaderCommitIndex: 38}
	g.noteAppend(&inboundRPC{cmd: appendReq}, &raft.AppendEntriesResponse{Term: 5, Success: true}, nil)
	if !rides(mark) {
		t.Fatal("an empty append repeating the relayed append did not ride")
	}
	for _, other := range []appendMark{{5, 40, 5, 39}, {5, 41, 5, 38}, {5, 40, 4, 38}} {
		if rides(other) {
			t.Fatalf("an empty append %+v rode on the relayed append %+v", other, mark)
		}
	}
	g.noteAppend(&inboundRPC{cmd: appendReq}, &raft.AppendEntriesResponse{Term: 6, Success: false}, nil)
	if rides(mark) {
		t.Fatal("an empty append rode after raft refused an append")
	}

	good := batch([2]uint64{7, 5})
	bad := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, good[1:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 0),
		"huge count":    binary.AppendUvarint(appendBytes([]byte{heartbeatBatchVersion}, appendAppendEntriesRequest(nil, &hb)), 1<<40),
		"not heartbeat": batchOf(makeAppendRPC()),
	}
	for name, req := range bad {
		if _, err := m.serveHeartbeats(t.Context(), "l", 0, req); err == nil {
			t.Errorf("%s batch accepted", name)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		p := append([]byte{}, good...)
		for range 1 + rng.IntN(4) {
			p[rng.IntN(len(p))] = byte(rng.IntN(256))
		}
		_, _ = m.serveHeartbeats(t.Context(), "l", 0, p[:rng.IntN(len(p)+1)])
		_, _, _ = decodeHeartbeatReply(p, 1)
	}
}

func batchOf(req raft.AppendEntriesRequest) []byte {
	b := []byte{heartbeatBatchVersion}
	b = appendBytes(b, appendAppendEntriesRequest(nil, &req))
	return binary.AppendUvarint(b, 0)
}

// steadyRaft gives the rest of the test raft's default 1 s heartbeat
// timeout (heartbeat batches every 250 ms), so that "no election while
// idle" holds on a loaded machine.
func steadyRaft(t *testing.T) {
	raftConfigMod = func(c *raft.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	}
	t.Cleanup(func() { raftConfigMod = nil })
}

// slowCommits makes raft's empty appends (every CommitTimeout) rarer than
// the batches, as with the multiraft defaults, for the rest of the test.
func slowCommits(t *testing.T) {
	raftConfigMod = func(c *raft.Config) { c.CommitTimeout = 300 * time.Millisecond }
	t.Cleanup(func() { raftConfigMod = nil })
}

// allApplied says whether every replica of every group has applied all of
// its group's log, holding the same writes, want at least. Not exactly
// want: applyN retries an Apply that failed with "leadership lost while
// committing log", and the next leader often commits that entry anyway, so
// a group may hold more writes than it was asked for. The last commit
// still has to reach every follower: no replica counts before it applied
// up to the end of the longest log among the group's replicas.
func allApplied(nodes []*raftNode, groups int, want uint64) bool {
	for g := uint64(1); g <= uint64(groups); g++ {
		var end uint64
		for _, n := range nodes {
			end = max(end, n.replicas[g].r.LastIndex())
		}
		first, _ := nodes[0].replicas[g].fsm.state()
		for _, n := range nodes {
			rep := n.replicas[g]
			if c, _ := rep.fsm.state(); c < want || c != first || rep.r.AppliedIndex() != end {
				return false
			}
		}
	}
	return true
}

// TestEmptyAppendsRide: once followers acknowledged the commit index,
// raft's empty appends are answered through heartbeat batches; followers
// still learn the last commits (the first empty append after writes
// carries news and is sent).
func TestEmptyAppendsRide(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	slowCommits(t)
	const groups = 6
	nodes := batchedCluster(t, groups)
	for round := 1; round <= 3; round++ {
		for g := uint64(1); g <= groups; g++ {
			applyN(t, nodes, g, 5)
		}
		eventually.True(t, 10*time.Second, "every replica to apply every write", func() bool {
			return allApplied(nodes, groups, uint64(5*round))
		})
		// 6 groups x 2 followers, an empty append every 300-600 ms: about
		// 20 a second once the commits are acknowledged.
		ridden := sumStats(nodes).Ridden
		eventually.True(t, 10*time.Second, "empty appends to ride on heartbeats after the writes", func() bool {
			return sumStats(nodes).Ridden >= ridden+groups
		})
	}
	t.Logf("%+v", sumStats(nodes))
}

// TestRiderRestartedFollower restarts one follower replica behind a
// Manager (and connection) that stays up, while empty appends ride. Its
// raft has not been told the commit index since it restarted, so it must
// get a real append and apply every write without a new one. (Here the
// leader's pipeline also fails while the group is gone; TestServeHeartbeats
// checks that a new transport never answers a rider.)
func TestRiderRestartedFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	slowCommits(t)
	const groups = 2
	nodes := batchedCluster(t, groups)
	applyN(t, nodes, 1, 20)
	eventually.True(t, 10*time.Second, "every replica to apply", func() bool {
		for _, n := range nodes {
			if c, _ := n.replicas[1].fsm.state(); c != 20 {
				return false
			}
		}
		return true
	})
	var follower *raftNode
	for _, n := range nodes {
		if n.replicas[1].r.State() == raft.Follower {
			follower = n
		}
	}
	eventually.True(t, 10*time.Second, "riders to answer empty appends", func() bool { return sumStats(nodes).Ridden > 0 })
	ridden := sumStats(nodes).Ridden

	rep := follower.replicas[1]
	if err := rep.r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if old := follower.m.group(1); old != nil { // raft's Shutdown closes it
		_ = old.Close()
	}
	tr, err := follower.m.Group(1)
	if err != nil {
		t.Fatal(err)
	}
	fresh := &countFSM{}
	r, err := raft.NewRaft(raftConfig(follower.id), fresh, rep.logs, rep.stable, rep.snaps, tr)
	if err != nil {
		t.Fatal(err)
	}
	follower.replicas[1] = &raftReplica{r: r, fsm: fresh, logs: rep.logs, stable: rep.stable, snaps: rep.snaps}
	eventually.True(t, 10*time.Second, "the restarted replica to apply all 20 writes without new ones", func() bool {
		c, _ := fresh.state()
		return c == 20
	})
	if sumStats(nodes).Ridden == ridden {
		t.Log("no empty append rode after the restart")
	}
}
