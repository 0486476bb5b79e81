package jepsen

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func logOp(client int, call, ret int64, in logInput, out logOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func TestLogModel(t *testing.T) {
	const never = 1000
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"concurrent appends in either order", []porcupine.Operation{
			logOp(0, 0, 10, logInput{key: "a"}, logOutput{seq: 2}),
			logOp(1, 0, 10, logInput{key: "b"}, logOutput{seq: 1}),
			logOp(2, 11, 12, logInput{read: true, from: 1, keys: []string{"b", "a"}}, logOutput{last: 2}),
		}, true},
		{"a read that misses a completed append", []porcupine.Operation{
			logOp(0, 0, 1, logInput{key: "a"}, logOutput{seq: 1}),
			logOp(1, 2, 3, logInput{read: true, from: 1}, logOutput{last: 0}),
		}, false},
		{"an unknown append that took effect late", []porcupine.Operation{
			logOp(0, 0, never, logInput{key: "a"}, logOutput{unknown: true}),
			logOp(1, 5, 6, logInput{read: true, from: 1}, logOutput{last: 0}),
			logOp(1, 7, 8, logInput{read: true, from: 1, keys: []string{"a"}}, logOutput{last: 1}),
		}, true},
		{"an unknown append that never did", []porcupine.Operation{
			logOp(0, 0, never, logInput{key: "a"}, logOutput{unknown: true}),
			logOp(1, 5, 6, logInput{key: "b"}, logOutput{seq: 1}),
			logOp(1, 7, 8, logInput{read: true, from: 1, keys: []string{"b"}}, logOutput{last: 1}),
		}, true},
		{"a conditional append that wins and one that conflicts", []porcupine.Operation{
			logOp(0, 0, 10, logInput{key: "a", expect: u64(0)}, logOutput{seq: 1}),
			logOp(1, 0, 10, logInput{key: "b", expect: u64(0)}, logOutput{conflict: true, last: 1}),
		}, true},
		{"two conditional appends that both win", []porcupine.Operation{
			logOp(0, 0, 10, logInput{key: "a", expect: u64(0)}, logOutput{seq: 1}),
			logOp(1, 0, 10, logInput{key: "b", expect: u64(0)}, logOutput{seq: 2}),
		}, false},
		{"a conflict that names the wrong last seq", []porcupine.Operation{
			logOp(0, 0, 1, logInput{key: "a"}, logOutput{seq: 1}),
			logOp(1, 2, 3, logInput{key: "b", expect: u64(0)}, logOutput{conflict: true, last: 2}),
		}, false},
		{"an unknown conditional append that could not apply", []porcupine.Operation{
			logOp(0, 0, 1, logInput{key: "a"}, logOutput{seq: 1}),
			logOp(1, 2, never, logInput{key: "b", expect: u64(0)}, logOutput{unknown: true}),
			logOp(0, 3, 4, logInput{read: true, from: 1, keys: []string{"a"}}, logOutput{last: 1}),
		}, true},
		{"a tail read", []porcupine.Operation{
			logOp(0, 0, 1, logInput{key: "a"}, logOutput{seq: 1}),
			logOp(0, 2, 3, logInput{key: "b"}, logOutput{seq: 2}),
			logOp(1, 4, 5, logInput{read: true, from: 2, keys: []string{"b"}}, logOutput{last: 2}),
			logOp(1, 6, 7, logInput{read: true, from: 2, keys: []string{"a"}}, logOutput{last: 2}),
		}, false},
	}
	for _, tc := range cases {
		got := porcupine.CheckOperationsTimeout(logModel, tc.ops, 5*time.Second)
		if (got == porcupine.Ok) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, got, tc.ok)
		}
	}
}

func setOp(call, ret int64, in setInput, out setOutput) porcupine.Operation {
	return porcupine.Operation{Input: in, Call: call, Output: out, Return: ret}
}

func TestSetModel(t *testing.T) {
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"join then list", []porcupine.Operation{
			setOp(0, 1, setInput{op: FJoin, member: "u1"}, setOutput{}),
			setOp(2, 3, setInput{op: FMembers}, setOutput{members: "u1"}),
		}, true},
		{"a list that misses a join", []porcupine.Operation{
			setOp(0, 1, setInput{op: FJoin, member: "u1"}, setOutput{}),
			setOp(2, 3, setInput{op: FMembers}, setOutput{members: ""}),
		}, false},
		{"a leave of a member refused as not a member", []porcupine.Operation{
			setOp(0, 1, setInput{op: FJoin, member: "u1"}, setOutput{}),
			setOp(2, 3, setInput{op: FLeave, member: "u1"}, setOutput{notMember: true}),
		}, false},
		{"a successful leave of a non-member", []porcupine.Operation{
			setOp(0, 1, setInput{op: FLeave, member: "u1"}, setOutput{}),
		}, false},
	}
	for _, tc := range cases {
		got := porcupine.CheckOperationsTimeout(setModel, tc.ops, 5*time.Second)
		if (got == porcupine.Ok) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, got, tc.ok)
		}
	}
}

// An illegal room gets porcupine's visualization.
func TestLinearWritesVisualization(t *testing.T) {
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 3, Node: "n3", F: FRead, Room: "r", FromSeq: 1, Type: TypeOK, Events: msgs(1, "a", "b"), LastSeq: 2})
	})
	dir := t.TempDir()
	res := CheckLinear(h, 10*time.Second, dir)
	var html string
	for _, v := range res.Rooms {
		if v.Room == "r" {
			html = v.HTML
		} else if v.HTML != "" {
			t.Errorf("room %s: visualization of a legal room", v.Room)
		}
	}
	if html == "" {
		t.Fatalf("no visualization: %+v", res)
	}
	if fi, err := os.Stat(filepath.Join(dir, html)); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization %s: %v", html, err)
	}
}
