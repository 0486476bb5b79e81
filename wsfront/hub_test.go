package wsfront

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/rooms"
)

// endedFeeds opens streams that end at once having carried nothing, as a
// leader does that refuses a stream after it opened (its replica damaged
// or being restored). It counts the opens. With no rooms subscribed,
// nothing else of the Backend is called.
type endedFeeds struct {
	Backend
	opens atomic.Int64
}

func (b *endedFeeds) GroupEvents(context.Context, uint64) (rooms.Feed, error) {
	b.opens.Add(1)
	return endedFeed{}, nil
}

type endedFeed struct{}

func (endedFeed) Recv() (fsm.Event, error) { return fsm.Event{}, io.EOF }
func (endedFeed) Close()                   {}

// A feed whose streams open and end at once backs off as one that does
// not open: it reopened them in a tight loop, from every node with
// subscribers to the group.
func TestFeedThatEndsAtOnceBacksOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	be := &endedFeeds{}
	h := newHub(ctx, be, slog.New(slog.DiscardHandler), time.Second)
	gf := &groupFeed{group: 1, cancel: cancel, rooms: map[string]*roomSubs{}}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.run(ctx, gf)
	}()
	time.Sleep(time.Second)
	cancel()
	h.wait()
	// Backing off from 50 ms, doubling, a second holds about five.
	if n := be.opens.Load(); n > 8 {
		t.Fatalf("%d streams opened in a second, want a handful", n)
	}
}
