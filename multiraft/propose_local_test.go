package multiraft_test

import (
	"context"
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
