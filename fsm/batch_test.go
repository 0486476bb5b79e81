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
