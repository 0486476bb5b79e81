package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
)

// In a room that keeps joins and leaves out of its history, a subscriber
// gets them as presence notices between the events they came among, and
// the events keep their gap-free seqs.
func TestPresenceOutOfHistory(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Namespaces: []fsm.Namespace{
		{Prefix: "game:", Config: fsm.RoomConfig{TransientPresence: true}, Mask: fsm.FieldTransientPresence},
	}})
	ctx := eventually.Within(t, 30*time.Second)
	reader := dial(t, "reader", c.URL(0))
	sub, err := reader.Subscribe(ctx, "game:1", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	alice := dial(t, "alice", c.URL(1))
	if seq, err := alice.Join(ctx, "game:1", map[string]string{"nick": "al"}); err != nil || seq != 0 {
		t.Fatalf("join: %d, %v", seq, err)
	}
	if _, err := alice.Publish(ctx, "game:1", "hi"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Leave(ctx, "game:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Publish(ctx, "game:1", "bye"); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind client.Kind
		typ  string
		seq  uint64
	}{{client.KindPresence, "join", 0}, {client.KindEvent, "message", 1}, {client.KindPresence, "leave", 1}, {client.KindEvent, "message", 2}}
	for i, w := range want {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.Kind != w.kind || ev.Type != w.typ || ev.Seq != w.seq || ev.Member != "alice" {
			t.Fatalf("event %d: %+v, want %v %s at %d", i, ev, w.kind, w.typ, w.seq)
		}
		if i == 0 && string(ev.Data) != `{"nick":"al"}` {
			t.Fatalf("join meta %s", ev.Data)
		}
	}
	// A subscription from the start reads history: the messages only.
	other := dial(t, "other", c.URL(2))
	late, err := other.Subscribe(ctx, "game:1", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if ev, err := late.Next(ctx); err != nil || ev.Kind != client.KindEvent || ev.Seq != seq {
			t.Fatalf("late subscriber: %+v, %v", ev, err)
		}
	}
	quiet, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ev, err := late.Next(quiet); err == nil {
		t.Fatalf("late subscriber got %+v", ev)
	}
}
