package wsfront_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront"
)

// fillRoom publishes n events of size bytes of data each to room through
// node i, from several sockets at once (each stays under its publish
// rate), and returns once all are committed.
func fillRoom(t *testing.T, c *testcluster.Cluster, i int, room string, n, size int) {
	t.Helper()
	data := `"` + strings.Repeat("h", size-2) + `"`
	const writers = 4
	var wg sync.WaitGroup
	for w := range writers {
		pub := wstest.Login(t, c.URL(i), fmt.Sprintf("filler%d", w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < n; k += writers {
				// The key makes a retry after a lost outcome harmless;
				// 64 KB entries can cost a loaded machine an election.
				for attempt := 0; ; attempt++ {
					r := pub.Call("publish", wstest.Obj{"room": room, "data": json.RawMessage(data), "key": fmt.Sprint(k)})
					if r["ok"] == true {
						break
					}
					if e, _ := r["error"].(map[string]any); e["retryable"] != true || attempt == 20 {
						t.Errorf("publish %d: %v", k, r)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// leaderships maps each group to the node that leads it, as the leaders
// themselves report.
func leaderships(c *testcluster.Cluster) map[uint64]string {
	out := make(map[uint64]string)
	for i := range c.Len() {
		h := c.Node(i).Host()
		for _, g := range h.LocalGroups() {
			if st, err := h.Status(g); err == nil && st.State == "Leader" {
				out[g] = h.NodeID()
			}
		}
	}
	return out
}

// The attack of issue 17: a room of 1,000 events of 64 KB, one socket
// pipelining 32 history requests for 1,000 events each and reading
// nothing. Before pages were bounded, each request built a 16 MiB answer
// from a 64 MB read (the node went from 1.3 to 5.2 GB and lost its
// leaderships). Now the node holds at most the socket's queue bound of
// read bytes (asserted on the node's own count), the test process's heap
// grows by at most 256 MiB while three whole nodes run in it, every node
// keeps every leadership it had, and the refused requests are answered
// rate_limited, not with a close.
func TestHistoryFloodFromOneSocketIsBounded(t *testing.T) {
	// Raft's production timing: the test's 300 ms timeouts are tuned for
	// fast failovers, and a machine shared by many test processes, under
	// the race detector, misses them without any attack.
	timing := multiraft.DefaultTiming()
	c := testcluster.Start(t, testcluster.Options{Timing: &timing})
	lim := wsfront.DefaultLimits()
	const (
		room     = "archive"
		events   = 1000
		size     = 64_000
		requests = 32
		// Heap the attack may add to the whole test process (three
		// nodes); before the fix it added gigabytes.
		maxHeapGrowth = 256 << 20
	)
	// Attack the meta group's leader, as in the report.
	target := 0
	for i := range c.Len() {
		if st, err := c.Node(i).Host().Status(0); err == nil && st.State == "Leader" {
			target = i
		}
	}
	fillRoom(t, c, target, room, events, size)
	// One page of 1,000 events still has to fit in the socket's budget:
	// the read count may pass the queue bound only by the last event
	// admitted into it.
	maxInFlight := int64(lim.MaxQueueBytes + size + 1024)

	// Writing 64 MB can cost a loaded machine an election or a compaction
	// stall; the attack starts from a cluster whose leaders held still
	// for a second. The baseline is the heap's peak over that second: the
	// three nodes' own garbage comes and goes with GC cycles either way
	// (a forced GC here would stop the world long enough to cost the
	// nodes their leaderships).
	var ms runtime.MemStats
	var baseHeap uint64
	before := leaderships(c)
	for stable := time.Now(); time.Since(stable) < time.Second; time.Sleep(20 * time.Millisecond) {
		if now := leaderships(c); fmt.Sprint(now) != fmt.Sprint(before) || len(now) != int(c.Node(0).Host().Cluster().Groups)+1 {
			before, stable, baseHeap = now, time.Now(), 0
		}
		runtime.ReadMemStats(&ms)
		baseHeap = max(baseHeap, ms.HeapAlloc)
	}

	attacker := wstest.DialRawBuffer(t, c.HTTP(target), 0)
	attacker.Send(t, `{"id":"auth","op":"auth","user":"mallory"}`)
	for k := range requests {
		attacker.Send(t, fmt.Sprintf(`{"id":%d,"op":"history","room":%q,"from_seq":1,"limit":1000}`, k, room))
	}

	front := c.Node(target).Front()
	var peakHeap uint64
	var peakInFlight int64
	lost := map[uint64]string{}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		peakInFlight = max(peakInFlight, front.ReadBytesInFlight())
		now := leaderships(c)
		for g, id := range before {
			if now[g] != id && lost[g] == "" {
				lost[g] = fmt.Sprintf("group %d: led by %s before, by %q during the attack", g, id, now[g])
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	growth := int64(peakHeap) - int64(baseHeap)
	t.Logf("heap %d MiB before, peak %d MiB during (growth %d MiB, bound %d MiB); read bytes in flight peak %d KiB (bound %d KiB)",
		baseHeap>>20, peakHeap>>20, growth>>20, maxHeapGrowth>>20, peakInFlight>>10, maxInFlight>>10)
	if growth > maxHeapGrowth {
		t.Errorf("heap grew by %d MiB, over the bound of %d MiB", growth>>20, maxHeapGrowth>>20)
	}
	if peakInFlight > maxInFlight {
		t.Errorf("node held %d bytes of history reads, over the bound of %d", peakInFlight, maxInFlight)
	}
	for _, l := range lost {
		t.Error("leadership lost: " + l)
	}

	// The client reads at last: every request was answered, each with a
	// page or rate_limited, and the socket was never closed.
	okPages, limited := 0, 0
	for range requests + 1 {
		f, err := attacker.ReadText(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d pages and %d refusals: %v", okPages, limited, err)
		}
		switch {
		case f["id"] == "auth":
		case f["ok"] == true:
			okPages++
			evs, _ := f["events"].([]any)
			if len(evs) == 0 || len(evs) == events || f["more"] != true {
				t.Errorf("page of %d events (more: %v); want a byte-bounded page with more", len(evs), f["more"])
			}
		case wstest.ErrCode(f) == "rate_limited" && wstest.Num(f["retry_after_ms"]) > 0:
			limited++
		default:
			t.Fatalf("unexpected reply %v", f)
		}
	}
	t.Logf("%d pages served, %d requests refused with rate_limited", okPages, limited)
	if okPages == 0 || limited == 0 {
		t.Errorf("%d pages and %d refusals; want both", okPages, limited)
	}
	_ = attacker.Conn.Close()
	eventually.True(t, 10*time.Second, "read budget released after the socket closed", func() bool { return front.ReadBytesInFlight() == 0 })
}

// A page over the socket's queue bound used to close the socket with 4008,
// so a client asking again never got through. Now the page stops at
// max_page_bytes, says more follow, and paging on from the last seq reads
// every event, also when the node without a replica of the room forwards
// the read.
func TestLargeHistoryPagesAnswerAndPageThrough(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 2, Replication: 1})
	const room, events, size = "big-pages", 100, 64_000
	// The node without the room's only replica must forward the read.
	reader := 0
	for i := range c.Len() {
		h := c.Node(i).Host()
		mine := false
		for _, lg := range h.LocalGroups() {
			if lg == h.GroupForKey(room) {
				mine = true
			}
		}
		if !mine {
			reader = i
		}
	}
	fillRoom(t, c, reader, room, events, size)
	lim := wsfront.DefaultLimits()
	for _, consistency := range []string{"linearizable", "stale"} {
		t.Run(consistency, func(t *testing.T) {
			cl := wstest.Login(t, c.URL(reader), "reader")
			var got []uint64
			from := uint64(1)
			for pages := 0; ; pages++ {
				if pages > events {
					t.Fatal("paging does not end")
				}
				r := cl.Call("history", wstest.Obj{"room": room, "from_seq": from, "limit": 1000, "consistency": consistency})
				if r["ok"] != true {
					t.Fatalf("history from %d: %v", from, r)
				}
				evs, _ := r["events"].([]any)
				if len(evs) == 0 {
					t.Fatalf("empty page from %d: %v", from, r["last_seq"])
				}
				if n := len(evs) * size; n > lim.MaxPageBytes {
					t.Fatalf("page of %d events carries %d bytes of data, over max_page_bytes %d", len(evs), n, lim.MaxPageBytes)
				}
				for _, e := range evs {
					got = append(got, wstest.Num(e.(map[string]any)["seq"]))
				}
				last := got[len(got)-1]
				if more := r["more"] == true; more != (last < wstest.Num(r["last_seq"])) {
					t.Fatalf("more = %v with last event %d of %v", more, last, r["last_seq"])
				}
				if r["more"] != true {
					break
				}
				from = last + 1
			}
			if len(got) != events {
				t.Fatalf("paged through %d events, want %d", len(got), events)
			}
			for k, s := range got {
				if s != uint64(k+1) {
					t.Fatalf("event %d has seq %d", k, s)
				}
			}
		})
	}
}

// Many sockets together cannot take more of the node than its read budget:
// with room for two pages, the third of several sockets that do not read
// is refused with rate_limited, and gets its page once the others read.
func TestNodeReadBudgetIsSharedBySockets(t *testing.T) {
	lim := wsfront.DefaultLimits()
	// Pages bigger than loopback's socket buffers (4 MiB at most here),
	// so a page sent to a socket that does not read stays in the node.
	lim.MaxQueueBytes = 32 << 20
	lim.MaxPageBytes = 8 << 20
	lim.MaxReadBytes = 16 << 20
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	const room, events, size, sockets = "shared", 300, 64_000, 5
	fillRoom(t, c, 0, room, events, size)

	front := c.Node(0).Front()
	conns := make([]*wstest.RawConn, sockets)
	for k := range conns {
		conns[k] = wstest.DialRawBuffer(t, c.HTTP(0), 0)
		conns[k].Send(t, `{"id":"auth","op":"auth","user":"reader"}`)
		conns[k].Send(t, fmt.Sprintf(`{"id":1,"op":"history","room":%q,"from_seq":1,"limit":1000}`, room))
	}
	var peak int64
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, front.ReadBytesInFlight())
	}
	if bound := int64(lim.MaxReadBytes + size + 1024); peak > bound {
		t.Errorf("node held %d bytes of history reads, over its budget of %d", peak, bound)
	}
	okPages, limited := 0, 0
	var refused []*wstest.RawConn
	for k, cn := range conns {
		for {
			f, err := cn.ReadText(20 * time.Second)
			if err != nil {
				t.Fatalf("socket %d: %v", k, err)
			}
			if f["id"] == "auth" {
				continue
			}
			switch {
			case f["ok"] == true:
				okPages++
			case wstest.ErrCode(f) == "rate_limited" && wstest.Num(f["retry_after_ms"]) > 0:
				limited++
				refused = append(refused, cn)
			default:
				t.Fatalf("unexpected reply %v", f)
			}
			break
		}
	}
	t.Logf("peak read bytes in flight %d MiB; %d pages served, %d refused", peak>>20, okPages, limited)
	if okPages > lim.MaxReadBytes/lim.MaxPageBytes || limited == 0 {
		t.Errorf("%d pages served and %d refused; want at most %d served", okPages, limited, lim.MaxReadBytes/lim.MaxPageBytes)
	}
	// Everyone read their replies: a refused socket asking again gets its
	// page.
	for _, cn := range refused {
		cn.Send(t, fmt.Sprintf(`{"id":2,"op":"history","room":%q,"from_seq":1,"limit":1000}`, room))
		f, err := cn.ReadText(20 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f["ok"] != true {
			t.Errorf("retry after the budget freed: %v", f)
		}
	}
}

// A subscribe is never refused for the read budget: with the socket's
// budget taken by history pages it has not read, a subscribe from seq 1 is
// answered at once and its events follow, in order, from byte-bounded
// pages read as the socket drains.
func TestSubscribeCatchUpWaitsForTheReadBudget(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	const room, events, size = "resume", 100, 64_000
	fillRoom(t, c, 0, room, events, size)
	front := c.Node(0).Front()
	lim := wsfront.DefaultLimits()

	cn := wstest.DialRawBuffer(t, c.HTTP(0), 0)
	cn.Send(t, `{"id":"auth","op":"auth","user":"reader"}`)
	const pages = 6
	for k := range pages {
		cn.Send(t, fmt.Sprintf(`{"id":%d,"op":"history","room":%q,"from_seq":1,"limit":1000}`, k, room))
	}
	cn.Send(t, fmt.Sprintf(`{"id":"sub","op":"subscribe","room":%q,"from_seq":1}`, room))
	var peak int64
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, front.ReadBytesInFlight())
	}
	if bound := int64(lim.MaxQueueBytes + size + 1024); peak > bound {
		t.Errorf("node held %d bytes of history reads for one socket, over its queue bound %d", peak, bound)
	}
	next := uint64(1)
	answered, subscribed := 0, false
	for next <= events || answered < pages {
		f, err := cn.ReadText(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d replies and %d events: %v", answered, next-1, err)
		}
		switch {
		case f["id"] == "auth":
		case f["id"] == "sub":
			if f["ok"] != true {
				t.Fatalf("subscribe: %v", f)
			}
			subscribed = true
		case f["ev"] == "event":
			if !subscribed {
				t.Fatalf("event %v before the subscribe's reply", f["seq"])
			}
			if wstest.Num(f["seq"]) != next {
				t.Fatalf("event %v, want seq %d", f["seq"], next)
			}
			next++
		case f["ok"] == true || wstest.ErrCode(f) == "rate_limited":
			answered++
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	t.Logf("peak read bytes in flight %d KiB; %d history replies", peak>>10, answered)
}
