package client_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/wsfront"
)

// A publish bigger than the node's max_frame fails with too_large at once,
// even with a context that never ends, and costs no reconnection: the
// client learns the limit at auth and refuses to send such a frame, which
// past 4 × max_frame would make the node close the socket (and a client
// that resent it on the next socket would loop).
func TestOversizedPublishFailsPromptly(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	var disconnects atomic.Int32
	cl := dialOpts(t, client.Config{URLs: c.URLs(), User: "alice", OnState: func(s client.StateChange) {
		if s.State == client.Disconnected {
			disconnects.Add(1)
		}
	}})
	maxFrame := wsfront.DefaultLimits().MaxFrame
	for _, size := range []int{maxFrame, 2 * maxFrame, 5 * maxFrame} {
		done := make(chan error, 1)
		go func() {
			_, err := cl.Publish(context.Background(), "r", strings.Repeat("x", size))
			done <- err
		}()
		select {
		case err := <-done:
			var he *client.Error
			if !errors.As(err, &he) || he.Code != client.CodeTooLarge || he.Retryable {
				t.Fatalf("publish of %d bytes: %v, want too_large", size, err)
			}
			if !strings.Contains(he.Message, "max_frame") {
				t.Errorf("publish of %d bytes: the error does not name the limit: %v", size, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("publish of %d bytes still waiting after 10s (%d disconnects)", size, disconnects.Load())
		}
	}
	if n := disconnects.Load(); n != 0 {
		t.Fatalf("the socket was lost %d times", n)
	}
	if res, err := cl.Publish(eventually.Within(t, 10*time.Second), "r", "small"); err != nil || res.Seq != 1 {
		t.Fatalf("publish after the refusals: %+v, %v", res, err)
	}
}
