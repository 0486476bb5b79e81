package client_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
)

// A room of big events comes back in pages the node bounds in bytes, fewer
// events than asked for; History's paging (NextSeq while More) and a
// subscription resuming from seq 1 both get every event once, in order.
func TestBigEventsPageThrough(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	const room, events = "big", 100
	data := json.RawMessage(`"` + strings.Repeat("b", 64_000) + `"`)
	var wg sync.WaitGroup
	for w := range 4 {
		pub := dial(t, "writer", c.URLs()...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := eventually.Within(t, 60*time.Second)
			for k := w; k < events; k += 4 {
				if _, err := pub.Publish(ctx, room, data); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	reader := dial(t, "reader", c.URLs()...)
	p, err := reader.History(eventually.Within(t, 20*time.Second), room, 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) == 0 || len(p.Events) == events || !p.More() {
		t.Fatalf("first page has %d of %d events, More %v: want a short page", len(p.Events), events, p.More())
	}
	got := history(t, reader, room)
	if len(got) != events {
		t.Fatalf("paging read %d events, want %d", len(got), events)
	}
	sub, err := reader.Subscribe(eventually.Within(t, 20*time.Second), room, client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range collect(t, sub, events, 30*time.Second) {
		if ev.Seq != uint64(i+1) || got[i].Seq != uint64(i+1) {
			t.Fatalf("event %d: subscription seq %d, history seq %d", i, ev.Seq, got[i].Seq)
		}
	}
}
