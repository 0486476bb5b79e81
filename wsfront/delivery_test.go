package wsfront_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/wsfront"
)

// A subscriber whose node crashes resumes on another node from its last
// seq: no gap, no duplicate, while publishing never stopped.
func TestResumeAfterNodeCrash(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	room := "resume"
	pub := wstest.Login(t, c.URL(2), "writer")
	const total = 120
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range total {
			key := fmt.Sprintf("m%d", k)
			for {
				r := pub.Call("publish", wstest.Obj{"room": room, "data": k, "key": key})
				if r["ok"] == true {
					break
				}
				if r["error"].(wstest.Obj)["retryable"] != true {
					t.Errorf("publish %d: %v", k, r)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	sub := wstest.Login(t, c.URL(0), "reader")
	sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": room, "from_seq": 1}))
	got := sub.Events(30, 20*time.Second)
	c.Crash(0)
	// Drain whatever arrived before the socket died.
	for {
		f, err := sub.Next(time.Second)
		if err != nil {
			break
		}
		if f["ev"] == "event" {
			got = append(got, f)
		}
	}
	last := got[len(got)-1]
	sub2 := wstest.Login(t, c.URL(1), "reader")
	r := sub2.MustOK(sub2.Call("subscribe", wstest.Obj{"room": room, "from_seq": wstest.Num(last["seq"]) + 1, "epoch": last["epoch"]}))
	if r["truncated"] == true || r["epoch_changed"] == true {
		t.Fatalf("resume: %v", r)
	}
	wg.Wait()
	got = append(got, sub2.Events(total-len(got), 30*time.Second)...)
	for i, ev := range got {
		if wstest.Num(ev["seq"]) != uint64(i+1) || wstest.Num(ev["data"]) != uint64(i) {
			t.Fatalf("event %d: %v", i, ev)
		}
	}
	sub2.Quiet(200 * time.Millisecond)
}

// Subscribers on a node whose groups' leaders move keep an unbroken
// sequence: the node's feeds reopen from the new leaders and fill gaps.
func TestDeliveryAcrossLeaderChanges(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Groups: 2})
	room := "moving"
	sub := wstest.Login(t, c.URL(0), "reader")
	sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": room}))
	pub := wstest.Login(t, c.URL(1), "writer")
	g := c.Node(0).Host().GroupForKey(room)
	const total = 60
	for k := range total {
		if k%15 == 5 {
			// Hand the group's leadership to the next node.
			h := c.Node(0).Host()
			id, _ := h.Leader(g)
			to := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}[id]
			if to != "" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := h.TransferLeader(ctx, g, to); err != nil {
					t.Logf("transfer to %s: %v", to, err)
				}
				cancel()
			}
		}
		for {
			r := pub.Call("publish", wstest.Obj{"room": room, "data": k, "key": fmt.Sprint(k)})
			if r["ok"] == true {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	evs := sub.Events(total, 30*time.Second)
	for i, ev := range evs {
		if wstest.Num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %v", i, ev["seq"])
		}
	}
	sub.Quiet(200 * time.Millisecond)
}

// A socket that stops reading is closed when its queue fills; a new socket
// resumes from seq 1 and gets every event.
func TestSlowConsumerClosedAndResumes(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: testcluster.SlowConsumerLimits()})
	room := "firehose"
	slow := wstest.DialRaw(t, c.HTTP(0))
	slow.Send(t, `{"id":1,"op":"auth","user":"slow"}`)
	slow.Send(t, `{"id":2,"op":"subscribe","room":"`+room+`","from_seq":1}`)
	time.Sleep(200 * time.Millisecond) // let the subscription register
	front := c.Node(0).Front()
	pub := wstest.Login(t, c.URL(0), "writer")
	payload := strings.Repeat("x", 8<<10)
	published := 0
	for published < 2000 && front.Sessions() == 2 {
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": room, "data": payload}))
		published++
	}
	if front.Sessions() != 1 {
		t.Fatalf("the slow socket was not closed after %d events of 8 KiB", published)
	}
	if code, ok := slow.CloseCode(); ok && code != 4008 {
		t.Fatalf("slow consumer closed with %d, want 4008", code)
	}
	again := wstest.Login(t, c.URL(0), "slow")
	again.MustOK(again.Call("subscribe", wstest.Obj{"room": room, "from_seq": 1}))
	evs := again.Events(published, 30*time.Second)
	for i, ev := range evs {
		if wstest.Num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %v", i, ev["seq"])
		}
	}
}

// A large room on one node gives every socket every event once and in
// order, with events handed on in batches and frames shared by all
// sockets, while sockets subscribe and leave during the publishing.
func TestLargeRoomEveryEventOnceInOrder(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	lim.MaxSocketsPerIP = wsfront.NoLimit
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	const subs, total = 600, 200
	room := "crowd"
	type tally struct {
		mu   sync.Mutex
		next uint64 // seq due next
		bad  string
	}
	dial := func(i int, from uint64) (*benchConn, *tally) {
		tl := &tally{next: from}
		s := dialBench(t, c.URL(0), func(frame []byte, _ time.Time) {
			var ev struct {
				Ev  string `json:"ev"`
				Seq uint64 `json:"seq"`
			}
			tl.mu.Lock()
			defer tl.mu.Unlock()
			if err := json.Unmarshal(frame, &ev); err != nil || ev.Ev != "event" {
				tl.bad = fmt.Sprintf("frame %q: %v", frame, err)
			} else if ev.Seq != tl.next && tl.bad == "" {
				tl.bad = fmt.Sprintf("seq %d when %d was due", ev.Seq, tl.next)
			}
			tl.next = ev.Seq + 1
		})
		s.do(t, fmt.Sprintf(`{"id":1,"op":"auth","user":"s%d"}`, i))
		s.do(t, fmt.Sprintf(`{"id":2,"op":"subscribe","room":"%s","from_seq":%d}`, room, from))
		return s, tl
	}
	conns := make([]*benchConn, subs)
	tallies := make([]*tally, subs)
	for i := range subs {
		conns[i], tallies[i] = dial(i, 1)
	}
	defer func() {
		for _, s := range conns {
			s.close()
		}
	}()
	pub := wstest.Login(t, c.URL(0), "writer")
	for k := 1; k <= total; k++ {
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": room, "data": k}))
		if k%20 == 0 {
			// One socket leaves and a new one resumes from where the
			// first stood: the room's list changes under the feed.
			i := k / 20
			tallies[i].mu.Lock()
			from := tallies[i].next
			tallies[i].mu.Unlock()
			conns[i].close()
			conns[i], tallies[i] = dial(subs+i, from)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for i, tl := range tallies {
		for {
			tl.mu.Lock()
			next, bad := tl.next, tl.bad
			tl.mu.Unlock()
			if bad != "" {
				t.Fatalf("socket %d: %s", i, bad)
			}
			if next == total+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("socket %d has events up to seq %d of %d", i, next-1, total)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
