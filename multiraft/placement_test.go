package multiraft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The group of a key is part of a cluster's on-disk contract: these values
// must never change.
func TestGroupForKeyIsStable(t *testing.T) {
	// 1 + FNV-1a-64(key) mod groups, computed independently.
	cases := []struct {
		key    string
		groups uint64
		want   uint64
	}{
		{"lobby", 64, 52},
		{"lobby", 1024, 308},
		{"", 1024, 806},
		{"room-1", 7, 5},
		{"日本", 64, 18},
	}
	for _, c := range cases {
		if g := GroupForKey(c.key, c.groups); g != c.want {
			t.Errorf("GroupForKey(%q, %d) = %d, want %d", c.key, c.groups, g, c.want)
		}
	}
	if GroupForKey("x", 0) != 0 {
		t.Error("no groups must map to 0")
	}
}

func TestInitialPlacementIsEven(t *testing.T) {
	for _, tc := range []struct {
		nodes  int
		groups uint64
		r      int
	}{{1, 8, 1}, {3, 64, 3}, {5, 64, 3}, {4, 10, 3}, {7, 1024, 3}} {
		var nodes []string
		for i := range tc.nodes {
			nodes = append(nodes, fmt.Sprintf("n%d", tc.nodes-i)) // unsorted on purpose
		}
		p, err := InitialPlacement(nodes, tc.groups, tc.r)
		if err != nil {
			t.Fatal(err)
		}
		count, first := map[string]int{}, map[string]int{}
		for g := uint64(1); g <= tc.groups; g++ {
			r := p[g]
			if len(r) != tc.r {
				t.Fatalf("group %d has %d replicas", g, len(r))
			}
			if len(slices.Compact(slices.Sorted(slices.Values(r)))) != tc.r {
				t.Fatalf("group %d has a node twice: %v", g, r)
			}
			first[r[0]]++
			for _, n := range r {
				count[n]++
			}
		}
		for _, m := range []map[string]int{count, first} {
			lo, hi := int(^uint(0)>>1), 0
			for _, n := range nodes {
				lo, hi = min(lo, m[n]), max(hi, m[n])
			}
			if hi-lo > 1 {
				t.Errorf("%d nodes, %d groups: uneven spread %v", tc.nodes, tc.groups, m)
			}
		}
	}
	if _, err := InitialPlacement([]string{"a", "b"}, 4, 3); err == nil {
		t.Error("replication above node count accepted")
	}
	if _, err := InitialPlacement([]string{"a", "a"}, 4, 1); err == nil {
		t.Error("duplicate node accepted")
	}
}

func stateOf(nodes []string, groups uint64, r int) *ClusterState {
	s := emptyClusterState()
	s.ClusterID, s.Groups, s.Replication = "c", groups, r
	for _, n := range nodes {
		s.Nodes[n] = &NodeInfo{ID: n, State: NodeActive}
	}
	p, _ := InitialPlacement(nodes, groups, r)
	s.Replicas = p
	return s
}

func applyPlan(s *ClusterState, leaders map[uint64]string, plan []Move) {
	for _, m := range plan {
		switch m.Kind {
		case MoveReplica:
			r := s.Replicas[m.Group]
			r[slices.Index(r, m.From)] = m.To
			if leaders[m.Group] == m.From {
				leaders[m.Group] = m.To
			}
		case TransferLeader:
			leaders[m.Group] = m.To
		}
	}
}

func TestPlanBalancesAndConverges(t *testing.T) {
	s := stateOf([]string{"a", "b", "c"}, 12, 3)
	leaders := map[uint64]string{}
	for g := uint64(1); g <= 12; g++ {
		leaders[g] = "a" // the worst case: one node leads everything
	}
	s.Nodes["d"] = &NodeInfo{ID: "d", State: NodeActive}
	s.Nodes["e"] = &NodeInfo{ID: "e", State: NodeActive}
	plan := Plan(s, leaders)
	if len(plan) == 0 {
		t.Fatal("no plan for an unbalanced cluster")
	}
	applyPlan(s, leaders, plan)
	loads, leads := map[string]int{}, map[string]int{}
	for g, r := range s.Replicas {
		if len(slices.Compact(slices.Sorted(slices.Values(r)))) != 3 {
			t.Fatalf("group %d ended with a node twice: %v", g, r)
		}
		for _, n := range r {
			loads[n]++
		}
		if !slices.Contains(r, leaders[g]) {
			t.Fatalf("group %d led by %s, which holds no replica (%v)", g, leaders[g], r)
		}
		leads[leaders[g]]++
	}
	for _, m := range []map[string]int{loads, leads} {
		lo, hi := 1<<30, 0
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			lo, hi = min(lo, m[n]), max(hi, m[n])
		}
		if hi-lo > 1 {
			t.Errorf("after the plan: %v", m)
		}
	}
	if again := Plan(s, leaders); len(again) != 0 {
		t.Errorf("a balanced cluster still plans %v", again)
	}
}

func TestPlanEmptiesDecommissioningNode(t *testing.T) {
	s := stateOf([]string{"a", "b", "c", "d"}, 8, 3)
	s.Nodes["b"].State = NodeDecommissioning
	plan := Plan(s, nil)
	applyPlan(s, map[uint64]string{}, plan)
	if gs := s.GroupsOf("b"); len(gs) != 0 {
		t.Fatalf("b still holds %v after the plan %v", gs, plan)
	}
	for _, m := range plan {
		if m.To == "b" {
			t.Errorf("plan moves onto the leaving node: %v", m)
		}
	}
}

func applyMeta(t *testing.T, m *MetaFSM, index uint64, c metaCommand) *MetaResult {
	t.Helper()
	return m.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: encodeMeta(c)}).(*MetaResult)
}

// restoredMeta is a new MetaFSM restored from a snapshot of m.
func restoredMeta(t *testing.T, m *MetaFSM) *MetaFSM {
	t.Helper()
	snap, _ := m.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	m2 := newMetaFSM()
	if err := m2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return m2
}

func TestMetaFSMCommandsAndSnapshot(t *testing.T) {
	m := newMetaFSM()
	if r := applyMeta(t, m, 1, metaCommand{Op: metaOpRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}}); r.err() == nil {
		t.Error("register before init accepted; init would overwrite it")
	}
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 4, 3)
	if r := applyMeta(t, m, 1, metaCommand{Op: metaOpInit, ClusterID: "c1", Groups: 4, Replication: 3,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}, {ID: "b", PeerAddr: "2"}, {ID: "c", PeerAddr: "3"}}, Placement: p}); r.err() != nil {
		t.Fatal(r.err())
	}
	if r := applyMeta(t, m, 2, metaCommand{Op: metaOpInit, ClusterID: "c2", Groups: 1, Replication: 1}); r.err() == nil {
		t.Error("second init accepted")
	}
	r := applyMeta(t, m, 3, metaCommand{Op: metaOpRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}})
	if r.Epoch != 3 {
		t.Errorf("register epoch %d, want the entry index 3", r.Epoch)
	}
	st, changed := m.State()
	if st.Nodes["a"].ExpiredBefore != 3 {
		t.Errorf("a first register leaves ExpiredBefore %d, want 3 (nothing older to expire)", st.Nodes["a"].ExpiredBefore)
	}
	applyMeta(t, m, 4, metaCommand{Op: metaOpRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}})
	select {
	case <-changed:
	default:
		t.Error("state change not signalled")
	}
	st, _ = m.State()
	if n := st.Nodes["a"]; n.Epoch != 4 || n.expireTarget() != 4 || n.ExpiredBefore != 3 {
		t.Errorf("restarted node: %+v", n)
	}
	if r := applyMeta(t, m, 5, metaCommand{Op: metaOpLeaseExpired, NodeID: "a", Epoch: 3}); r.err() == nil {
		t.Error("lease expiry of an old epoch accepted")
	}
	applyMeta(t, m, 6, metaCommand{Op: metaOpLeaseExpired, NodeID: "a", Epoch: 4})
	st, _ = m.State()
	if st.Nodes["a"].expireTarget() != 5 {
		t.Errorf("expired lease target %d, want 5", st.Nodes["a"].expireTarget())
	}
	// set_replicas is a compare-and-set.
	if r := applyMeta(t, m, 7, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: []string{"x"}, Replicas: []string{"a"}}); !errors.Is(r.err(), ErrMetaConflict) {
		t.Errorf("set_replicas with a wrong expectation: %v", r.err())
	}
	if r := applyMeta(t, m, 8, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: p[1], Replicas: []string{"a", "b"}}); r.err() != nil {
		t.Error(r.err())
	}
	if r := applyMeta(t, m, 9, metaCommand{Op: metaOpRemoveNode, NodeID: "c"}); r.err() == nil {
		t.Error("removing a node that holds replicas accepted")
	}
	if r := m.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte("{garbage")}).(*MetaResult); r.err() == nil {
		t.Error("garbage entry accepted")
	}
	m2 := restoredMeta(t, m)
	a, _ := m.State()
	b, _ := m2.State()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) || a.Index != 10 {
		t.Errorf("restored state differs:\n%s\n%s", ja, jb)
	}
	if err := m2.Restore(io.NopCloser(bytes.NewReader([]byte("not json")))); err == nil {
		t.Error("garbage snapshot restored")
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func TestReplyCodecKeepsErrorKinds(t *testing.T) {
	for _, err := range []error{
		&NotLeaderError{Group: 7, LeaderID: "n2", LeaderAddr: "127.0.0.1:9"},
		&NotLeaderError{Group: 7},
		fmt.Errorf("%w: group 3", ErrUnknownOutcome),
		fmt.Errorf("%w: group 3", ErrUnavailable),
		fmt.Errorf("%w of group 3", ErrNoReplica),
		fmt.Errorf("%w: cas lost", ErrMetaConflict),
	} {
		_, got := decodeReply(errReply(err))
		if got == nil || got.Error() != err.Error() {
			t.Errorf("%v came back as %v", err, got)
		}
		for _, kind := range []error{ErrUnknownOutcome, ErrUnavailable, ErrNoReplica, ErrMetaConflict} {
			if errors.Is(err, kind) != errors.Is(got, kind) {
				t.Errorf("errors.Is(%v, %v) changed in transit", err, kind)
			}
		}
	}
	if b, err := decodeReply(okReply([]byte("x"))); err != nil || string(b) != "x" {
		t.Errorf("ok reply: %q %v", b, err)
	}
	for _, bad := range [][]byte{nil, {replyNotLeader}, {replyNotLeader, 1, 200}, {200}} {
		if _, err := decodeReply(bad); err == nil {
			t.Errorf("malformed reply %v accepted", bad)
		}
	}
}

// Replies come from peers: no byte string may crash the decoder, and what
// decodes as a not-leader error must say so consistently.
func FuzzDecodeReply(f *testing.F) {
	f.Add(okReply([]byte("x")))
	f.Add(errReply(&NotLeaderError{Group: 7, LeaderID: "n2", LeaderAddr: "127.0.0.1:9"}))
	f.Add(errReply(fmt.Errorf("%w: group 3", ErrUnknownOutcome)))
	f.Add([]byte{replyNotLeader, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, err := decodeReply(b)
		if err == nil && len(b) > 0 && b[0] != replyOK {
			t.Fatalf("reply code %d decoded as success", b[0])
		}
		var nl *NotLeaderError
		if errors.As(err, &nl) {
			again, err2 := decodeReply(errReply(nl))
			var nl2 *NotLeaderError
			if again != nil || !errors.As(err2, &nl2) || *nl2 != *nl {
				t.Fatalf("not-leader %+v did not survive a second trip: %v", nl, err2)
			}
		}
		_ = payload
	})
}

func TestMetaFSMGroupOps(t *testing.T) {
	m := newMetaFSM()
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 2, 3)
	applyMeta(t, m, 1, metaCommand{Op: metaOpInit, ClusterID: "c1", Groups: 2, Replication: 3,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}, {ID: "b", PeerAddr: "2"}, {ID: "c", PeerAddr: "3"}, {ID: "d", PeerAddr: "4"}}, Placement: p})
	move := &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "a", OwnerEpoch: 7}
	r := applyMeta(t, m, 2, metaCommand{Op: metaOpBeginOp, Group: 1, Begin: move})
	if r.err() != nil || r.Op == nil || r.Op.ID != 2 || r.Op.Started != 2 || r.Op.Owner != "a" {
		t.Fatalf("begin: %v %+v", r.err(), r.Op)
	}
	// A second change of the group is refused and told which one runs.
	r = applyMeta(t, m, 3, metaCommand{Op: metaOpBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "b", To: "d", Owner: "b"}})
	if !errors.Is(r.err(), ErrMetaConflict) || r.Op == nil || r.Op.ID != 2 {
		t.Fatalf("second begin: %v %+v", r.err(), r.Op)
	}
	// Only the record's own operation changes the group's replicas.
	next := append(slices.Clone(p[1]), "d")
	if r := applyMeta(t, m, 4, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: p[1], Replicas: next}); r.err() == nil || r.Op == nil {
		t.Fatalf("set_replicas outside the operation: %v", r.err())
	}
	if r := applyMeta(t, m, 5, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: p[1], Replicas: next, OpID: 2}); r.err() != nil {
		t.Fatal(r.err())
	}
	// Other groups are not held.
	if r := applyMeta(t, m, 6, metaCommand{Op: metaOpSetReplicas, Group: 2, Expect: p[2], Replicas: p[2]}); r.err() != nil {
		t.Fatal(r.err())
	}
	// A takeover names the record it replaces and keeps its start.
	if r := applyMeta(t, m, 7, metaCommand{Op: metaOpBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "b"}, TakeOver: 99}); r.err() == nil {
		t.Fatal("takeover of the wrong record accepted")
	}
	r = applyMeta(t, m, 8, metaCommand{Op: metaOpBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "b", OwnerEpoch: 3}, TakeOver: 2})
	if r.err() != nil || r.Op.ID != 8 || r.Op.Started != 2 || r.Op.Owner != "b" || r.Op.TakenOver != 1 {
		t.Fatalf("takeover: %v %+v", r.err(), r.Op)
	}
	// The old owner is fenced off.
	if r := applyMeta(t, m, 9, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: next, Replicas: p[1], OpID: 2, End: true}); r.err() == nil {
		t.Fatal("the replaced owner changed the replicas")
	}
	if r := applyMeta(t, m, 10, metaCommand{Op: metaOpEndOp, Group: 1, OpID: 2}); r.err() == nil {
		t.Fatal("the replaced owner ended the operation")
	}
	// The last step ends the operation with the same entry.
	done := slices.DeleteFunc(slices.Clone(next), func(s string) bool { return s == "a" })
	if r := applyMeta(t, m, 11, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: next, Replicas: done, OpID: 8, End: true}); r.err() != nil {
		t.Fatal(r.err())
	}
	st, _ := m.State()
	if st.Ops[1] != nil || !slices.Equal(st.Replicas[1], done) {
		t.Fatalf("after the move: ops %v replicas %v", st.Ops, st.Replicas[1])
	}
	if r := applyMeta(t, m, 12, metaCommand{Op: metaOpBeginOp, Group: 1, Begin: &GroupOp{Kind: OpRepair, Owner: "zz"}}); r.err() == nil {
		t.Fatal("an operation owned by an unknown node accepted")
	}
	applyMeta(t, m, 13, metaCommand{Op: metaOpBeginOp, Group: 2, Begin: &GroupOp{Kind: OpRepair, Owner: "c"}})
	// Records survive a snapshot; a snapshot from before records existed
	// (no "ops" field) restores with none.
	m2 := restoredMeta(t, m)
	if st, _ := m2.State(); st.Ops[2] == nil || st.Ops[2].ID != 13 || st.Ops[2].Kind != OpRepair {
		t.Fatalf("restored ops: %v", st.Ops)
	}
	old := []byte(`{"cluster_id":"c1","groups":2,"replication":3,"nodes":{"a":{"id":"a","peer_addr":"1","state":"active","epoch":1}},"replicas":{"1":["a"],"2":["a"]},"index":5}`)
	m3 := newMetaFSM()
	if err := m3.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if r := applyMeta(t, m3, 6, metaCommand{Op: metaOpSetReplicas, Group: 1, Expect: []string{"a"}, Replicas: []string{"a"}}); r.err() != nil {
		t.Fatalf("set_replicas without an operation on an old state: %v", r.err())
	}
}

// Application settings: given at init, replaced only by a set_app_settings
// that read the current version, and kept by snapshots.
func TestMetaFSMAppSettings(t *testing.T) {
	m := newMetaFSM()
	if r := applyMeta(t, m, 1, metaCommand{Op: metaOpSetSettings, Settings: []byte(`{"a":1}`)}); r.err() == nil {
		t.Error("settings accepted before init")
	}
	if r := applyMeta(t, m, 2, metaCommand{Op: metaOpInit, ClusterID: "c1", Groups: 1, Replication: 1,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}}, Settings: []byte(`{"a":1}`)}); r.err() != nil {
		t.Fatal(r.err())
	}
	if st, _ := m.State(); string(st.AppSettings) != `{"a":1}` || st.AppSettingsIndex != 2 {
		t.Fatalf("after init: %s at %d", st.AppSettings, st.AppSettingsIndex)
	}
	if r := applyMeta(t, m, 3, metaCommand{Op: metaOpSetSettings, Settings: []byte(`{"a":2}`), ExpectIndex: 0}); r.err() == nil {
		t.Error("a set that read an older version was accepted")
	}
	if r := applyMeta(t, m, 4, metaCommand{Op: metaOpSetSettings, Settings: []byte(`{"a":3}`), ExpectIndex: 2}); r.err() != nil || r.Index != 4 {
		t.Fatalf("set: %+v", r)
	}
	m2 := restoredMeta(t, m)
	if st, _ := m2.State(); string(st.AppSettings) != `{"a":3}` || st.AppSettingsIndex != 4 {
		t.Fatalf("restored: %s at %d", st.AppSettings, st.AppSettingsIndex)
	}
}

// A configuration sets only the timings it changes.
func TestTimingWithDefaults(t *testing.T) {
	if got := (Timing{}).WithDefaults(); got != DefaultTiming() {
		t.Fatalf("zero timing: %+v, want the defaults", got)
	}
	tm := Timing{HeartbeatTimeout: 2 * time.Second, PerGroupHeartbeats: true}.WithDefaults()
	d := DefaultTiming()
	if tm.HeartbeatTimeout != 2*time.Second || !tm.PerGroupHeartbeats || tm.ElectionTimeout != d.ElectionTimeout ||
		tm.MaxAppendEntries != d.MaxAppendEntries || tm.TrailingLogs != 0 {
		t.Fatalf("one field set: %+v", tm)
	}
	if err := tm.Validate(); err != nil {
		t.Fatal(err)
	}
	if short := (Timing{HeartbeatTimeout: 200 * time.Millisecond}).WithDefaults(); short.LeaderLeaseTimeout != 200*time.Millisecond || short.Validate() != nil {
		t.Fatalf("the default lease does not follow a shorter heartbeat timeout: %+v", short)
	}
	if err := (Timing{CommitTimeout: -1}).WithDefaults().Validate(); err == nil {
		t.Fatal("a negative commit timeout passed")
	}
}
