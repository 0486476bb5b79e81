package multiraft_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
)

// valueResult is what valueApp's state machine returns. fromFSM does not
// survive EncodeResult/DecodeResult, so a proposer can tell whether it got
// the state machine's own value or a decoded copy.
type valueResult struct {
	index   uint64
	fromFSM bool
}

// valueApp is countApp with results that tell how they travelled.
type valueApp struct{ countApp }

type valueFSM struct{ countFSM }

func (valueApp) NewStateMachine(uint64) (multiraft.StateMachine, error) { return &valueFSM{}, nil }
func (valueApp) EncodeResult(r any) ([]byte, error) {
	v, ok := r.(*valueResult)
	if !ok {
		return nil, fmt.Errorf("result %T", r)
	}
	return binary.AppendUvarint(nil, v.index), nil
}
func (valueApp) DecodeResult(b []byte) (any, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, fmt.Errorf("bad result %x", b)
	}
	return &valueResult{index: v}, nil
}

func (f *valueFSM) Apply(l *raft.Log) any {
	f.countFSM.Apply(l)
	return &valueResult{index: l.Index, fromFSM: true}
}
func (f *valueFSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

// TestLocalProposalReturnsTheValue: a proposal that the leader's own node
// serves gets the state machine's result as it was returned, not encoded
// and decoded again; a forwarded one gets the decoded copy, equal in what
// the codec carries.
func TestLocalProposalReturnsTheValue(t *testing.T) {
	dir := t.TempDir()
	var hosts []*multiraft.Host
	var peers []multiraft.Peer
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		h, err := multiraft.Start(multiraft.Config{
			NodeID: id, DataDir: filepath.Join(dir, id), PeerAddr: "127.0.0.1:0", LogStore: logstore.KindBadger,
			Timing: testTiming(), App: valueApp{}, LeaseTTL: 2 * time.Second, Logger: logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hosts = append(hosts, h)
		peers = append(peers, multiraft.Peer{ID: id, Addr: h.PeerAddr()})
	}
	spec := multiraft.BootstrapSpec{ClusterID: "value", Nodes: peers, Groups: 1, Replication: 3}
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := h.Bootstrap(ctx, spec); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leader, follower *multiraft.Host
	for leader == nil || follower == nil {
		leader, follower = nil, nil
		for _, h := range hosts {
			st, err := h.Status(1)
			switch {
			case err == nil && st.State == raft.Leader.String():
				leader = h
			case follower == nil:
				follower = h
			}
		}
		if ctx.Err() != nil {
			t.Fatal("group 1 has no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := leader.Propose(ctx, 1, []byte("local"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.(*valueResult); !ok || !r.fromFSM || r.index == 0 {
		t.Errorf("proposal on the leader's node returned %#v, want the state machine's own *valueResult", got)
	}
	got, err = follower.Propose(ctx, 1, []byte("forwarded"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.(*valueResult); !ok || r.fromFSM || r.index == 0 {
		t.Errorf("forwarded proposal returned %#v, want a decoded *valueResult", got)
	}
}
