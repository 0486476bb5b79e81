package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

func applyMeta(t *testing.T, m *FSM, index uint64, c command) *Result {
	t.Helper()
	return m.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: c.encode()}).(*Result)
}

// restoredMeta is a new FSM restored from a snapshot of m.
func restoredMeta(t *testing.T, m *FSM) *FSM {
	t.Helper()
	snap, _ := m.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	m2 := NewFSM()
	if err := m2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return m2
}

func TestFSMCommandsAndSnapshot(t *testing.T) {
	m := NewFSM()
	if r := applyMeta(t, m, 1, command{Op: opRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}}); r.Refused() == nil {
		t.Error("register before init accepted; init would overwrite it")
	}
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 4, 3)
	if r := applyMeta(t, m, 1, command{Op: opInit, ClusterID: "c1", Groups: 4, Replication: 3,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}, {ID: "b", PeerAddr: "2"}, {ID: "c", PeerAddr: "3"}}, Placement: p}); r.Refused() != nil {
		t.Fatal(r.Refused())
	}
	if r := applyMeta(t, m, 2, command{Op: opInit, ClusterID: "c2", Groups: 1, Replication: 1}); r.Refused() == nil {
		t.Error("second init accepted")
	}
	r := applyMeta(t, m, 3, command{Op: opRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}})
	if r.Epoch != 3 {
		t.Errorf("register epoch %d, want the entry index 3", r.Epoch)
	}
	st, changed := m.State()
	if st.Nodes["a"].ExpiredBefore != 3 {
		t.Errorf("a first register leaves ExpiredBefore %d, want 3 (nothing older to expire)", st.Nodes["a"].ExpiredBefore)
	}
	applyMeta(t, m, 4, command{Op: opRegister, Node: &NodeInfo{ID: "a", PeerAddr: "1"}})
	select {
	case <-changed:
	default:
		t.Error("state change not signalled")
	}
	st, _ = m.State()
	if n := st.Nodes["a"]; n.Epoch != 4 || n.ExpireTarget() != 4 || n.ExpiredBefore != 3 {
		t.Errorf("restarted node: %+v", n)
	}
	if r := applyMeta(t, m, 5, command{Op: opLeaseExpired, NodeID: "a", Epoch: 3}); r.Refused() == nil {
		t.Error("lease expiry of an old epoch accepted")
	}
	applyMeta(t, m, 6, command{Op: opLeaseExpired, NodeID: "a", Epoch: 4})
	st, _ = m.State()
	if st.Nodes["a"].ExpireTarget() != 5 {
		t.Errorf("expired lease target %d, want 5", st.Nodes["a"].ExpireTarget())
	}
	// set_replicas is a compare-and-set.
	if r := applyMeta(t, m, 7, command{Op: opSetReplicas, Group: 1, Expect: []string{"x"}, Replicas: []string{"a"}}); !errors.Is(r.Refused(), ErrConflict) {
		t.Errorf("set_replicas with a wrong expectation: %v", r.Refused())
	}
	if r := applyMeta(t, m, 8, command{Op: opSetReplicas, Group: 1, Expect: p[1], Replicas: []string{"a", "b"}}); r.Refused() != nil {
		t.Error(r.Refused())
	}
	if r := applyMeta(t, m, 9, command{Op: opRemoveNode, NodeID: "c"}); r.Refused() == nil {
		t.Error("removing a node that holds replicas accepted")
	}
	if r := m.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte("{garbage")}).(*Result); r.Refused() == nil {
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

func TestFSMGroupOps(t *testing.T) {
	m := NewFSM()
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 2, 3)
	applyMeta(t, m, 1, command{Op: opInit, ClusterID: "c1", Groups: 2, Replication: 3,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}, {ID: "b", PeerAddr: "2"}, {ID: "c", PeerAddr: "3"}, {ID: "d", PeerAddr: "4"}}, Placement: p})
	move := &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "a", OwnerEpoch: 7}
	r := applyMeta(t, m, 2, command{Op: opBeginOp, Group: 1, Begin: move})
	if r.Refused() != nil || r.Op == nil || r.Op.ID != 2 || r.Op.Started != 2 || r.Op.Owner != "a" {
		t.Fatalf("begin: %v %+v", r.Refused(), r.Op)
	}
	// A second change of the group is refused and told which one runs.
	r = applyMeta(t, m, 3, command{Op: opBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "b", To: "d", Owner: "b"}})
	if !errors.Is(r.Refused(), ErrConflict) || r.Op == nil || r.Op.ID != 2 {
		t.Fatalf("second begin: %v %+v", r.Refused(), r.Op)
	}
	// Only the record's own operation changes the group's replicas.
	next := append(slices.Clone(p[1]), "d")
	if r := applyMeta(t, m, 4, command{Op: opSetReplicas, Group: 1, Expect: p[1], Replicas: next}); r.Refused() == nil || r.Op == nil {
		t.Fatalf("set_replicas outside the operation: %v", r.Refused())
	}
	if r := applyMeta(t, m, 5, command{Op: opSetReplicas, Group: 1, Expect: p[1], Replicas: next, OpID: 2}); r.Refused() != nil {
		t.Fatal(r.Refused())
	}
	// Other groups are not held.
	if r := applyMeta(t, m, 6, command{Op: opSetReplicas, Group: 2, Expect: p[2], Replicas: p[2]}); r.Refused() != nil {
		t.Fatal(r.Refused())
	}
	// A takeover names the record it replaces and keeps its start.
	if r := applyMeta(t, m, 7, command{Op: opBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "b"}, TakeOver: 99}); r.Refused() == nil {
		t.Fatal("takeover of the wrong record accepted")
	}
	r = applyMeta(t, m, 8, command{Op: opBeginOp, Group: 1, Begin: &GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "b", OwnerEpoch: 3}, TakeOver: 2})
	if r.Refused() != nil || r.Op.ID != 8 || r.Op.Started != 2 || r.Op.Owner != "b" || r.Op.TakenOver != 1 {
		t.Fatalf("takeover: %v %+v", r.Refused(), r.Op)
	}
	// The old owner is fenced off.
	if r := applyMeta(t, m, 9, command{Op: opSetReplicas, Group: 1, Expect: next, Replicas: p[1], OpID: 2, End: true}); r.Refused() == nil {
		t.Fatal("the replaced owner changed the replicas")
	}
	if r := applyMeta(t, m, 10, command{Op: opEndOp, Group: 1, OpID: 2}); r.Refused() == nil {
		t.Fatal("the replaced owner ended the operation")
	}
	// The last step ends the operation with the same entry.
	done := slices.DeleteFunc(slices.Clone(next), func(s string) bool { return s == "a" })
	if r := applyMeta(t, m, 11, command{Op: opSetReplicas, Group: 1, Expect: next, Replicas: done, OpID: 8, End: true}); r.Refused() != nil {
		t.Fatal(r.Refused())
	}
	st, _ := m.State()
	if st.Ops[1] != nil || !slices.Equal(st.Replicas[1], done) {
		t.Fatalf("after the move: ops %v replicas %v", st.Ops, st.Replicas[1])
	}
	if r := applyMeta(t, m, 12, command{Op: opBeginOp, Group: 1, Begin: &GroupOp{Kind: OpRepair, Owner: "zz"}}); r.Refused() == nil {
		t.Fatal("an operation owned by an unknown node accepted")
	}
	applyMeta(t, m, 13, command{Op: opBeginOp, Group: 2, Begin: &GroupOp{Kind: OpRepair, Owner: "c"}})
	// Records survive a snapshot; a snapshot from before records existed
	// (no "ops" field) restores with none.
	m2 := restoredMeta(t, m)
	if st, _ := m2.State(); st.Ops[2] == nil || st.Ops[2].ID != 13 || st.Ops[2].Kind != OpRepair {
		t.Fatalf("restored ops: %v", st.Ops)
	}
	old := []byte(`{"cluster_id":"c1","groups":2,"replication":3,"nodes":{"a":{"id":"a","peer_addr":"1","state":"active","epoch":1}},"replicas":{"1":["a"],"2":["a"]},"index":5}`)
	m3 := NewFSM()
	if err := m3.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if r := applyMeta(t, m3, 6, command{Op: opSetReplicas, Group: 1, Expect: []string{"a"}, Replicas: []string{"a"}}); r.Refused() != nil {
		t.Fatalf("set_replicas without an operation on an old state: %v", r.Refused())
	}
}

// Application settings: given at init, replaced only by a set_app_settings
// that read the current version, and kept by snapshots.
func TestFSMAppSettings(t *testing.T) {
	m := NewFSM()
	if r := applyMeta(t, m, 1, command{Op: opSetSettings, Settings: []byte(`{"a":1}`)}); r.Refused() == nil {
		t.Error("settings accepted before init")
	}
	if r := applyMeta(t, m, 2, command{Op: opInit, ClusterID: "c1", Groups: 1, Replication: 1,
		Nodes: []NodeInfo{{ID: "a", PeerAddr: "1"}}, Settings: []byte(`{"a":1}`)}); r.Refused() != nil {
		t.Fatal(r.Refused())
	}
	if st, _ := m.State(); string(st.AppSettings) != `{"a":1}` || st.AppSettingsIndex != 2 {
		t.Fatalf("after init: %s at %d", st.AppSettings, st.AppSettingsIndex)
	}
	if r := applyMeta(t, m, 3, command{Op: opSetSettings, Settings: []byte(`{"a":2}`), ExpectIndex: 0}); r.Refused() == nil {
		t.Error("a set that read an older version was accepted")
	}
	if r := applyMeta(t, m, 4, command{Op: opSetSettings, Settings: []byte(`{"a":3}`), ExpectIndex: 2}); r.Refused() != nil || r.Index != 4 {
		t.Fatalf("set: %+v", r)
	}
	m2 := restoredMeta(t, m)
	if st, _ := m2.State(); string(st.AppSettings) != `{"a":3}` || st.AppSettingsIndex != 4 {
		t.Fatalf("restored: %s at %d", st.AppSettings, st.AppSettingsIndex)
	}
}
