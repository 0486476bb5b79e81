package multiraft_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
	"github.com/heraldhq/herald/multiraft/logstore"
)

// decodedApp is kvtest's application whose decoded results say so: a
// result that reached the proposer through EncodeResult and DecodeResult
// is a decoded, one handed over as the state machine returned it is a
// *kvtest.Result.
type decodedApp struct{ *kvtest.App }

type decoded struct{ *kvtest.Result }

func (a decodedApp) DecodeResult(b []byte) (any, error) {
	r, err := a.App.DecodeResult(b)
	if err != nil {
		return nil, err
	}
	return decoded{r.(*kvtest.Result)}, nil
}

// TestLocalProposalReturnsTheValue: a proposal that the leader's own node
// serves gets the state machine's result as it was returned, not encoded
// and decoded again; a forwarded one gets the decoded copy, equal in what
// the codec carries.
func TestLocalProposalReturnsTheValue(t *testing.T) {
	hosts := bootstrapHosts(t, 1, func() multiraft.Config {
		return multiraft.Config{LogStore: logstore.KindBadger, Timing: testTiming(), App: decodedApp{&kvtest.App{}}, LeaseTTL: 2 * time.Second, Logger: logger(t)}
	})
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
	got, err := leader.Propose(ctx, 1, kvtest.Append("k", "local"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.(*kvtest.Result); !ok || r.Index == 0 || r.Seq != 1 {
		t.Errorf("proposal on the leader's node returned %#v, want the state machine's own *kvtest.Result", got)
	}
	got, err = follower.Propose(ctx, 1, kvtest.Append("k", "forwarded"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.(decoded); !ok || r.Index == 0 || r.Seq != 2 {
		t.Errorf("forwarded proposal returned %#v, want a decoded *kvtest.Result", got)
	}
}

// stallingApp is kvtest's application whose state machines wait before
// applying while the test holds them: a state store whose disk stopped.
type stallingApp struct {
	*kvtest.App
	held *atomic.Pointer[chan struct{}] // applies wait until it is closed; nil: they run
}

func (a stallingApp) NewStateMachine(group uint64) (multiraft.StateMachine, error) {
	sm, err := a.App.NewStateMachine(group)
	if err != nil {
		return nil, err
	}
	return stallingMachine{StateMachine: sm, held: a.held}, nil
}

type stallingMachine struct {
	multiraft.StateMachine
	held *atomic.Pointer[chan struct{}]
}

func (m stallingMachine) ApplyBatch(logs []*raft.Log) []any {
	if ch := m.held.Load(); ch != nil {
		<-*ch
	}
	return m.StateMachine.ApplyBatch(logs)
}

// A proposal whose entry the leader's state machine does not apply in time
// returns at the caller's deadline with an unknown outcome: raft resolves
// its future only after the apply, and the leader keeps its lease all the
// while, so the proposer (and, for a forwarded one, a call slot of its
// peer) waited for as long as the stall lasted. Once the machines apply
// again, the stalled entries commit and free their append slots.
func TestProposalStopsWaitingForAStalledApply(t *testing.T) {
	app := stallingApp{App: &kvtest.App{}, held: new(atomic.Pointer[chan struct{}])}
	hosts := bootstrapHosts(t, 1, func() multiraft.Config {
		return multiraft.Config{LogStore: logstore.KindBadger, Timing: testTiming(), App: app, LeaseTTL: 2 * time.Second, Logger: logger(t)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := hosts[0].Propose(ctx, 1, kvtest.Append("k", "before")); err != nil {
		t.Fatal(err)
	}
	stall := make(chan struct{})
	app.held.Store(&stall)
	released := false
	release := func() {
		if !released {
			released = true
			app.held.Store(nil)
			close(stall)
		}
	}
	defer release() // before the hosts stop: they wait for entries in flight
	for _, h := range hosts {
		done := make(chan error, 1)
		go func() {
			pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer pcancel()
			_, err := h.Propose(pctx, 1, kvtest.Append("k", "stalled through "+h.NodeID()))
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, multiraft.ErrUnknownOutcome) {
				t.Fatalf("proposal through %s while applies stall: err = %v, want an unknown outcome", h.NodeID(), err)
			}
		case <-time.After(3 * time.Second):
			release()
			<-done
			t.Fatalf("proposal through %s still waiting 3s into the stall; its deadline was 500ms", h.NodeID())
		}
	}
	release()
	res, err := hosts[0].Propose(ctx, 1, kvtest.Append("k", "after"))
	if err != nil {
		t.Fatal(err)
	}
	// The three stalled proposals committed once applies ran again.
	if r := res.(*kvtest.Result); r.Seq != 5 {
		t.Fatalf("the proposal after the stall got seq %d, want 5 (1 before, 3 stalled, then it)", r.Seq)
	}
}
