package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// A batch larger than one badger transaction holds is committed in parts
// cut at entry boundaries, with the same outcome as entry by entry. Each
// expire_node entry here removes 1,000 members (2,000 writes), and the
// batch has enough of them to pass badger's per-transaction entry limit.
func TestLargeBatchIsCommittedInParts(t *testing.T) {
	whole := newReplica(t, 1)
	single := newReplica(t, 1)
	nodes := int(whole.f.db.MaxBatchCount()/(2*MaxExpireLimit)) + 2
	m := newLogMaker()
	var joins []*raft.Log
	for n := range nodes {
		for i := range MaxExpireLimit {
			joins = append(joins, m.entry(Command{Op: OpJoin, Room: fmt.Sprint("r", i%10), Member: fmt.Sprint("m", n, "-", i),
				Ephemeral: true, NodeID: fmt.Sprint("n", n), NodeEpoch: 1}))
		}
	}
	for len(joins) > 0 {
		k := min(64, len(joins))
		whole.applyBatch(joins[:k])
		single.applyBatch(joins[:k])
		joins = joins[k:]
	}
	var expires []*raft.Log
	for n := range nodes {
		expires = append(expires, m.entry(Command{Op: OpExpireNode, NodeID: fmt.Sprint("n", n), NodeEpoch: 2}))
	}
	for _, res := range whole.applyBatch(expires) {
		if res.Err != nil || res.Removed != MaxExpireLimit {
			t.Fatalf("expire: removed %d, %v", res.Removed, res.Err)
		}
	}
	for _, l := range expires {
		single.applyBatch([]*raft.Log{l})
	}
	if whole.digest() != single.digest() {
		t.Fatal("a batch committed in parts differs from entry-by-entry apply")
	}
	if got, want := whole.f.AppliedIndex(), expires[len(expires)-1].Index; got != want {
		t.Fatalf("applied index %d, want %d", got, want)
	}
}

// A commit leaves a room record as it was when only the room's last seq
// and key ordinal moved. A restart, a snapshot and the reads must still
// see the room where it is: its last seq, its live keys, its history.
func TestRoomTailSurvivesRestartAndSnapshot(t *testing.T) {
	r := newReplica(t, 1)
	straight := newReplica(t, 1)
	m := newLogMaker()
	var logs []*raft.Log
	for i := range 40 {
		c := Command{Op: OpPublish, Room: fmt.Sprint("r", i%3), Member: "a", Data: []byte{byte(i)}}
		if i%2 == 0 {
			c.Key = fmt.Sprint("k", i)
		}
		logs = append(logs, m.entry(c))
	}
	for _, l := range logs {
		r.applyBatch([]*raft.Log{l})
	}
	straight.applyBatch(logs)
	r.restart()
	if r.digest() != straight.digest() {
		t.Fatal("digest after restart differs from one batch")
	}
	info, err := r.f.Room("r1")
	if err != nil || info.LastSeq != 13 {
		t.Fatalf("room r1 after restart: %+v, %v", info, err)
	}
	h, err := r.f.History("r1", 0, 0)
	if err != nil || h.LastSeq != 13 || len(h.Events) != 13 {
		t.Fatalf("history of r1 after restart: last %d, %d events, %v", h.LastSeq, len(h.Events), err)
	}
	// k38 was r2's last keyed publish; a retry must still be a duplicate,
	// and a new key must take the next ordinal, not reuse one.
	res := r.applyBatch([]*raft.Log{
		m.entry(Command{Op: OpPublish, Room: "r2", Member: "a", Key: "k38"}),
		m.entry(Command{Op: OpPublish, Room: "r2", Member: "a", Key: "new"}),
	})
	if !res[0].Duplicate || res[0].Seq != 13 || res[1].Duplicate || res[1].Seq != 14 {
		t.Fatalf("after restart: %s, %s", fmtResult(res[0]), fmtResult(res[1]))
	}
	copied := newReplica(t, 2)
	snapshotInto(t, r.f, copied.f)
	if copied.digest() != r.digest() {
		t.Fatal("restored snapshot differs")
	}
}
