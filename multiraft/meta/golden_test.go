package meta

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// goldenCommands builds, with this package's constructors, the commands
// of testdata/commands.golden, which the code before this package existed
// wrote (raw lines are entries no constructor makes: bad input).
func goldenCommands() [][]byte {
	p, _ := InitialPlacement([]string{"a", "b", "c"}, 4, 3)
	next1 := append(slices.Clone(p[1]), "d")
	done1 := slices.DeleteFunc(slices.Clone(next1), func(n string) bool { return n == "a" })
	return [][]byte{
		Register(NodeInfo{ID: "a", PeerAddr: "10.0.0.1:7000"}),
		Init("c1", 4, 3, []NodeInfo{{ID: "a", PeerAddr: "10.0.0.1:7000", ClientAddr: "10.0.0.1:8080"}, {ID: "b", PeerAddr: "10.0.0.2:7000"}, {ID: "c", PeerAddr: "10.0.0.3:7000"}},
			p, []byte(`{"x":1}`)),
		Init("c2", 1, 1, nil, nil, nil),
		Register(NodeInfo{ID: "a", PeerAddr: "10.0.0.1:7000", ClientAddr: "10.0.0.1:8080"}),
		Register(NodeInfo{ID: "b", PeerAddr: "10.0.0.2:7000"}),
		Register(NodeInfo{ID: "a", PeerAddr: "10.0.0.1:7001", ClientAddr: "10.0.0.1:8081"}),
		SetState("b", NodeDecommissioning),
		SetState("zz", NodeActive),
		SetState("a", "bogus"),
		Register(NodeInfo{ID: "d", PeerAddr: "10.0.0.4:7000"}),
		BeginOp(1, GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "a", OwnerEpoch: 6}, 0),
		BeginOp(1, GroupOp{Kind: OpMove, From: "b", To: "d", Owner: "b", OwnerEpoch: 5}, 0),
		SetReplicas(1, 11, p[1], next1, false),
		SetReplicas(1, 11, p[1], next1, false),
		BeginOp(1, GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "b", OwnerEpoch: 5}, 11),
		SetReplicas(1, 15, next1, done1, true),
		BeginOp(2, GroupOp{Kind: OpRepair, Owner: "c"}, 0),
		EndOp(2, 17),
		EndOp(2, 17),
		ExpireLease("c", 99),
		ExpireLease("b", 5),
		RecordExpired("b", 6),
		SetAppSettings([]byte(`{"x":2}`), 2),
		SetAppSettings([]byte(`{"x":3}`), 2),
		RemoveNode("c"),
		SetReplicas(0, 0, nil, []string{"a"}, false),
		Register(NodeInfo{ID: "e", PeerAddr: "10.0.0.5:7000"}),
		RemoveNode("e"),
		RemoveNode("e"),
		command{Op: "frobnicate"}.encode(),
		[]byte(`{"v":2,"op":"init"}`),
		[]byte(`{garbage`),
		Register(NodeInfo{ID: "", PeerAddr: "x"}),
		BeginOp(3, GroupOp{Kind: "teleport", Owner: "a"}, 0),
		SetReplicas(3, 0, p[3], []string{"a", "zz"}, false),
		BeginOp(4, GroupOp{Kind: OpMove, From: "a", To: "d", Owner: "a", OwnerEpoch: 6}, 0),
	}
}

func goldenLines(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// Meta commands sit in raft logs, snapshots on disk and results cross
// between nodes of mixed versions: the bytes the code wrote before this
// package existed must be written, applied and restored the same.
func TestGoldenEncodingsAreKept(t *testing.T) {
	cmds := goldenLines(t, "commands.golden")
	results := goldenLines(t, "results.golden")
	snapshot, err := os.ReadFile("testdata/snapshot.golden")
	if err != nil {
		t.Fatal(err)
	}
	built := goldenCommands()
	if len(built) != len(cmds) || len(results) != len(cmds) {
		t.Fatalf("%d commands built, %d golden commands, %d golden results", len(built), len(cmds), len(results))
	}
	m := NewFSM()
	for i, c := range cmds {
		if !bytes.Equal(built[i], c) {
			t.Errorf("command %d encodes as\n%s\nnot\n%s", i+1, built[i], c)
		}
		res := m.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c})
		got, _ := json.Marshal(res)
		if !bytes.Equal(got, results[i]) {
			t.Errorf("command %d %s: result\n%s\nnot\n%s", i+1, c, got, results[i])
		}
		var back Result
		if err := json.Unmarshal(results[i], &back); err != nil {
			t.Fatalf("golden result %d: %v", i+1, err)
		}
		if again, _ := json.Marshal(&back); !bytes.Equal(again, results[i]) {
			t.Errorf("golden result %d decodes and encodes as %s", i+1, again)
		}
	}
	if got := snapshotBytes(t, m); !bytes.Equal(got, snapshot) {
		t.Errorf("snapshot after the golden commands:\n%s\nnot\n%s", got, snapshot)
	}
	restored := NewFSM()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshot))); err != nil {
		t.Fatal(err)
	}
	if got := snapshotBytes(t, restored); !bytes.Equal(got, snapshot) {
		t.Errorf("golden snapshot restores and snapshots as\n%s", got)
	}
	if st, _ := restored.State(); st.Index != uint64(len(cmds)) || st.Ops[4] == nil || st.Removed["e"] != 28 {
		t.Errorf("restored golden state: %+v", st)
	}
}

func snapshotBytes(t *testing.T, m *FSM) []byte {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}
