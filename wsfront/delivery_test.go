package wsfront_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/wsfront"
)

// A subscriber whose node crashes resumes on another node from its last
// seq: no gap, no duplicate, while publishing never stopped.
func TestResumeAfterNodeCrash(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	room := "resume"
	pub := login(t, c.URL(2), "writer")
	const total = 120
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range total {
			key := fmt.Sprintf("m%d", k)
			for {
				r := pub.call("publish", obj{"room": room, "data": k, "key": key})
				if r["ok"] == true {
					break
				}
				if r["error"].(obj)["retryable"] != true {
					t.Errorf("publish %d: %v", k, r)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	sub := login(t, c.URL(0), "reader")
	sub.mustOK(sub.call("subscribe", obj{"room": room, "from_seq": 1}))
	got := sub.events(30, 20*time.Second)
	c.Crash(0)
	// Drain whatever arrived before the socket died.
	for {
		f, err := sub.next(time.Second)
		if err != nil {
			break
		}
		if f["ev"] == "event" {
			got = append(got, f)
		}
	}
	last := got[len(got)-1]
	sub2 := login(t, c.URL(1), "reader")
	r := sub2.mustOK(sub2.call("subscribe", obj{"room": room, "from_seq": num(last["seq"]) + 1, "epoch": last["epoch"]}))
	if r["truncated"] == true || r["epoch_changed"] == true {
		t.Fatalf("resume: %v", r)
	}
	wg.Wait()
	got = append(got, sub2.events(total-len(got), 30*time.Second)...)
	for i, ev := range got {
		if num(ev["seq"]) != uint64(i+1) || num(ev["data"]) != uint64(i) {
			t.Fatalf("event %d: %v", i, ev)
		}
	}
	sub2.quiet(200 * time.Millisecond)
}

// Subscribers on a node whose groups' leaders move keep an unbroken
// sequence: the node's feeds reopen from the new leaders and fill gaps.
func TestDeliveryAcrossLeaderChanges(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Groups: 2})
	room := "moving"
	sub := login(t, c.URL(0), "reader")
	sub.mustOK(sub.call("subscribe", obj{"room": room}))
	pub := login(t, c.URL(1), "writer")
	g := c.Node(0).Host().GroupForKey(room)
	const total = 60
	for k := range total {
		if k%15 == 5 {
			// Hand the group's leadership to the next node.
			h := c.Node(0).Host()
			id, _ := h.Leader(g)
			to := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}[id]
			if to != "" {
				ctx, cancel := contextWithTimeout(10 * time.Second)
				if err := h.TransferLeader(ctx, g, to); err != nil {
					t.Logf("transfer to %s: %v", to, err)
				}
				cancel()
			}
		}
		for {
			r := pub.call("publish", obj{"room": room, "data": k, "key": fmt.Sprint(k)})
			if r["ok"] == true {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	evs := sub.events(total, 30*time.Second)
	for i, ev := range evs {
		if num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %v", i, ev["seq"])
		}
	}
	sub.quiet(200 * time.Millisecond)
}

// A socket that stops reading is closed when its queue fills; a new socket
// resumes from seq 1 and gets every event.
func TestSlowConsumerClosedAndResumes(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxQueueFrames = 32
	lim.MaxQueueBytes = 128 << 10
	lim.PublishRate = 10000
	lim.PublishBurst = 10000
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	room := "firehose"
	slow := dialRaw(t, c.HTTP(0))
	slow.send(t, `{"id":1,"op":"auth","user":"slow"}`)
	slow.send(t, `{"id":2,"op":"subscribe","room":"`+room+`","from_seq":1}`)
	time.Sleep(200 * time.Millisecond) // let the subscription register
	front := c.Node(0).Front()
	pub := login(t, c.URL(0), "writer")
	payload := strings.Repeat("x", 8<<10)
	published := 0
	for published < 2000 && front.Sessions() == 2 {
		pub.mustOK(pub.call("publish", obj{"room": room, "data": payload}))
		published++
	}
	if front.Sessions() != 1 {
		t.Fatalf("the slow socket was not closed after %d events of 8 KiB", published)
	}
	if code, ok := slow.closeCode(); ok && code != 4008 {
		t.Fatalf("slow consumer closed with %d, want 4008", code)
	}
	again := login(t, c.URL(0), "slow")
	again.mustOK(again.call("subscribe", obj{"room": room, "from_seq": 1}))
	evs := again.events(published, 30*time.Second)
	for i, ev := range evs {
		if num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d has seq %v", i, ev["seq"])
		}
	}
}

// rawConn is a websocket client that reads only when told to, to play a
// consumer that falls behind.
type rawConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, base string) *rawConn {
	t.Helper()
	// A small receive buffer makes the socket fall behind sooner.
	return dialRawBuffer(t, base, 4096)
}

// dialRawBuffer is dialRaw with the given receive buffer (0: the
// system's). A tiny buffer also makes reading megabytes later crawl (the
// peer's window opens by a few KB per delayed ACK), so a test that reads
// big frames after not reading keeps the system's.
func dialRawBuffer(t *testing.T, base string, readBuffer int) *rawConn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if tc, ok := conn.(*net.TCPConn); ok && readBuffer > 0 {
		_ = tc.SetReadBuffer(readBuffer)
	}
	keyBytes := make([]byte, 16)
	_, _ = rand.Read(keyBytes)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(keyBytes))
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &rawConn{conn: conn, r: r}
}

// send writes one masked text frame, as clients must.
func (c *rawConn) send(t *testing.T, text string) {
	t.Helper()
	frame := []byte{0x81}
	n := len(text)
	switch {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n < 1<<16:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	mask := []byte{1, 2, 3, 4}
	frame = append(frame, mask...)
	for i := range n {
		frame = append(frame, text[i]^mask[i%4])
	}
	if _, err := c.conn.Write(frame); err != nil {
		t.Fatal(err)
	}
}

// closeCode reads frames until the server's close frame and returns its
// code; ok is false if the connection ended without one (the close frame
// could not be written to a socket this far behind).
func (c *rawConn) closeCode() (uint16, bool) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return 0, false
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return 0, false
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return 0, false
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return 0, false
		}
		if hdr[0]&0x0f == 0x8 && n >= 2 {
			return binary.BigEndian.Uint16(payload), true
		}
	}
}

// A large room on one node gives every socket every event once and in
// order, with events handed on in batches and frames shared by all
// sockets, while sockets subscribe and leave during the publishing.
func TestLargeRoomEveryEventOnceInOrder(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	lim.MaxSocketsPerIP = 0
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
	pub := login(t, c.URL(0), "writer")
	for k := 1; k <= total; k++ {
		pub.mustOK(pub.call("publish", obj{"room": room, "data": k}))
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
