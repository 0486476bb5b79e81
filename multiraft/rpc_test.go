package multiraft

import (
	"errors"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/multiraft/meta"
)

func TestReplyCodecKeepsErrorKinds(t *testing.T) {
	for _, err := range []error{
		&NotLeaderError{Group: 7, LeaderID: "n2", LeaderAddr: "127.0.0.1:9"},
		&NotLeaderError{Group: 7},
		fmt.Errorf("%w: group 3", ErrUnknownOutcome),
		fmt.Errorf("%w: group 3", ErrUnavailable),
		fmt.Errorf("%w of group 3", ErrNoReplica),
		fmt.Errorf("%w: cas lost", meta.ErrConflict),
	} {
		_, got := decodeReply(errReply(err))
		if got == nil || got.Error() != err.Error() {
			t.Errorf("%v came back as %v", err, got)
		}
		for _, kind := range []error{ErrUnknownOutcome, ErrUnavailable, ErrNoReplica, meta.ErrConflict} {
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
