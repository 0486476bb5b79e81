package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
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

// initialized is an FSM holding a three-node cluster of four groups, with
// a registered node and a move in progress on group 1.
func initialized(t *testing.T) *FSM {
	t.Helper()
	m := NewFSM()
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 4, 3)
	for i, c := range [][]byte{
		Init("c1", 4, 3, []NodeInfo{{ID: "a", PeerAddr: "1"}, {ID: "b", PeerAddr: "2"}, {ID: "c", PeerAddr: "3"}, {ID: "d", PeerAddr: "4"}}, p, []byte(`{"a":1}`)),
		Register(NodeInfo{ID: "a", PeerAddr: "1"}),
		BeginOp(1, GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "a", OwnerEpoch: 2}, 0),
	} {
		if r := m.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c}).(*Result); r.Refused() != nil {
			t.Fatal(r.Refused())
		}
	}
	return m
}

// stateJSON is the state without its applied index, which every entry
// moves, refused or not.
func stateJSON(m *FSM) string {
	st, _ := m.State()
	st.Index = 0
	b, _ := json.Marshal(st)
	return string(b)
}

// Entries come from the log, which any node of any version may have
// written: an entry this code cannot use is refused with a reason, changes
// nothing, and never panics.
func TestApplyRefusesBadEntriesAndChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name, entry, why string
	}{
		{"not json", `{garbage`, "undecodable meta command"},
		{"empty", ``, "undecodable meta command"},
		{"json null", `null`, "version 0"},
		{"an array", `[1,2]`, "undecodable meta command"},
		{"a string", `"init"`, "undecodable meta command"},
		{"no version", `{"op":"register","node":{"id":"x","peer_addr":"1"}}`, "version 0"},
		{"a newer version", `{"v":2,"op":"register","node":{"id":"x","peer_addr":"1"}}`, "version 2"},
		{"unknown op", `{"v":1,"op":"frobnicate"}`, "unknown meta op"},
		{"no op", `{"v":1}`, "unknown meta op"},
		{"group too large for a number", `{"v":1,"op":"end_op","group":1e30}`, "undecodable meta command"},
		{"negative group", `{"v":1,"op":"end_op","group":-1}`, "undecodable meta command"},
		{"node of the wrong type", `{"v":1,"op":"register","node":"x"}`, "undecodable meta command"},
		{"placement keyed by a name", `{"v":1,"op":"init","cluster_id":"c","groups":1,"replication":1,"placement":{"x":["a"]}}`, "undecodable meta command"},
		{"second init", string(Init("c2", 1, 1, nil, nil, nil)), "already initialized"},
		{"register without a node", `{"v":1,"op":"register"}`, "needs a node id"},
		{"register without an address", string(Register(NodeInfo{ID: "x"})), "needs a node id"},
		{"state of an unknown node", string(SetState("zz", NodeActive)), "not in the cluster"},
		{"unknown state", string(SetState("a", "sleeping")), "unknown node state"},
		{"replicas of the meta group", string(SetReplicas(Group, 0, nil, []string{"a"}, false)), "not a data group"},
		{"replicas of a group beyond the last", string(SetReplicas(5, 0, nil, []string{"a"}, false)), "not a data group"},
		{"replicas outside the running move", string(SetReplicas(1, 0, []string{"a", "b", "c"}, []string{"a"}, false)), "in progress"},
		{"replicas of an ended move", string(SetReplicas(2, 7, []string{"b", "c", "a"}, []string{"a"}, false)), "no longer in progress"},
		{"replicas expected wrong", string(SetReplicas(2, 0, []string{"a"}, []string{"a"}, false)), "not [a]"},
		{"replicas on an unknown node", string(SetReplicas(2, 0, []string{"b", "c", "a"}, []string{"a", "zz"}, false)), "not in the cluster"},
		{"begin without a record", `{"v":1,"op":"begin_op","group":2}`, "needs a kind and an owner"},
		{"begin of an unknown kind", string(BeginOp(2, GroupOp{Kind: "teleport", Owner: "a"}, 0)), "needs a kind and an owner"},
		{"begin owned by an unknown node", string(BeginOp(2, GroupOp{Kind: OpRepair, Owner: "zz"}, 0)), "not in the cluster"},
		{"begin on a held group", string(BeginOp(1, GroupOp{Kind: OpRepair, Owner: "b"}, 0)), "in progress"},
		{"takeover of a record that ended", string(BeginOp(2, GroupOp{Kind: OpRepair, Owner: "b"}, 9)), "has ended"},
		{"end of another record", string(EndOp(1, 9)), "no longer in progress"},
		{"lease of an old epoch", string(ExpireLease("a", 1)), "not at epoch 1"},
		{"lease of an unknown node", string(ExpireLease("zz", 2)), "not at epoch 2"},
		{"expiry of an unknown node", string(RecordExpired("zz", 2)), "not in the cluster"},
		{"removal of an unknown node", string(RemoveNode("zz")), "not in the cluster"},
		{"removal of a node with replicas", string(RemoveNode("a")), "still holds replicas"},
		{"settings read at an old version", string(SetAppSettings([]byte(`{}`), 0)), "read them again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := initialized(t)
			before := stateJSON(m)
			r, ok := m.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte(tc.entry)}).(*Result)
			if !ok || !errors.Is(r.Refused(), ErrConflict) || !strings.Contains(r.Err, tc.why) {
				t.Fatalf("result %+v, want a refusal saying %q", r, tc.why)
			}
			if after := stateJSON(m); after != before {
				t.Errorf("a refused entry changed the state:\n%s\n%s", before, after)
			}
			if m.AppliedIndex() != 10 {
				t.Errorf("applied index %d after a refused entry, want 10", m.AppliedIndex())
			}
		})
	}
	// Entries that are not commands (raft's own) are skipped.
	m := initialized(t)
	before := stateJSON(m)
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration} {
		if r := m.Apply(&raft.Log{Index: 10, Type: typ, Data: []byte(`{garbage`)}); r != nil {
			t.Errorf("log type %v returned %v", typ, r)
		}
	}
	if stateJSON(m) != before || m.AppliedIndex() != 3 {
		t.Error("a non-command entry changed the state")
	}
}

// Snapshots are read from disk and from peers: a bad one is an error, and
// the state stays as it was.
func TestRestoreRefusesBadSnapshots(t *testing.T) {
	for _, tc := range []struct{ name, snap string }{
		{"not json", "not json"},
		{"truncated", `{"cluster_id":"c1","groups":4`},
		{"wrong type", `{"groups":"many"}`},
		{"replicas keyed by name", `{"replicas":{"x":["a"]}}`},
		{"an array", `[]`},
		// Every reader of the state dereferences its records; a null one
		// took the node down (Clone).
		{"a node without its record", `{"cluster_id":"c1","groups":2,"nodes":{"n1":null}}`},
		{"an operation without its record", `{"cluster_id":"c1","groups":2,"ops":{"1":null}}`},
		{"more groups than a cluster may have", `{"cluster_id":"c1","groups":65537}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := initialized(t)
			before := stateJSON(m)
			if err := m.Restore(io.NopCloser(strings.NewReader(tc.snap))); err == nil {
				t.Fatal("restored")
			}
			if stateJSON(m) != before {
				t.Error("a refused snapshot changed the state")
			}
		})
	}
	// Maps a snapshot leaves out come back empty: an old or minimal
	// snapshot restores into a state every rule can read.
	m := NewFSM()
	if err := m.Restore(io.NopCloser(strings.NewReader(`{"cluster_id":"c1","groups":2,"nodes":null}`))); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.State(); st.Nodes == nil || st.Replicas == nil || !st.Initialized() {
		t.Fatalf("restored: %+v", st)
	}
	// Nor can a cluster begin with more groups than a state may hold.
	m = NewFSM()
	r := m.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: Init("c1", MaxGroups+1, 1, nil, nil, nil)}).(*Result)
	if !strings.Contains(r.Err, "at most") {
		t.Fatalf("init of %d groups: %+v, want a refusal", MaxGroups+1, r)
	}
}

// No entry may panic the state machine; a refused one changes nothing but
// the applied index, and every result survives its trip between nodes.
func FuzzApply(f *testing.F) {
	for _, c := range goldenCommands() {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, entry []byte) {
		m := initialized(t)
		before := stateJSON(m)
		r := m.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: entry}).(*Result)
		if r.Err != "" && stateJSON(m) != before {
			t.Fatalf("refused (%s) yet changed the state", r.Err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Result
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("result %s does not decode: %v", b, err)
		}
		if again, _ := json.Marshal(&back); !bytes.Equal(again, b) {
			t.Fatalf("result %s came back as %s", b, again)
		}
	})
}
