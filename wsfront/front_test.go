package wsfront_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
)

// Publishers on three nodes into one room: every subscriber, on every node,
// sees the same events in the same order, seqs contiguous from 1.
func TestOneOrderForEverySubscriber(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	const perPublisher = 30
	room := "lobby"
	var subs []*wstest.Client
	for i := range c.Len() {
		for range 2 {
			s := wstest.Login(t, c.URL(i), fmt.Sprintf("reader%d", i))
			r := s.MustOK(s.Call("subscribe", wstest.Obj{"room": room}))
			if wstest.Num(r["last_seq"]) != 0 || r["epoch"] != "" {
				t.Fatalf("subscribe to a new room: %v", r)
			}
			subs = append(subs, s)
		}
	}
	var wg sync.WaitGroup
	for i := range c.Len() {
		pub := wstest.Login(t, c.URL(i), fmt.Sprintf("writer%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perPublisher {
				r := pub.Call("publish", wstest.Obj{"room": room, "data": wstest.Obj{"n": k}})
				if r["ok"] != true {
					t.Errorf("publish: %v", r)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := perPublisher * c.Len()
	var first []wstest.Obj
	for si, s := range subs {
		evs := s.Events(total, 30*time.Second)
		for k, ev := range evs {
			if wstest.Num(ev["seq"]) != uint64(k+1) {
				t.Fatalf("subscriber %d: event %d has seq %v", si, k, ev["seq"])
			}
			if ev["type"] != "message" || ev["room"] != room || ev["epoch"] == "" {
				t.Fatalf("subscriber %d: bad event %v", si, ev)
			}
		}
		if first == nil {
			first = evs
			continue
		}
		for k := range evs {
			if fmt.Sprint(evs[k]) != fmt.Sprint(first[k]) {
				t.Fatalf("subscriber %d disagrees at seq %d: %v vs %v", si, k+1, evs[k], first[k])
			}
		}
		s.Quiet(100 * time.Millisecond)
	}
}
