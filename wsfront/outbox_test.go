package wsfront

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"
)

// outboxPair is a server socket whose frames go through a session's
// outbox, and a gws client reading them, over loopback TCP.
type outboxPair struct {
	sess   *session
	frames chan string
	closed chan error
}

type outboxClient struct {
	gws.BuiltinEventHandler
	frames chan string
	closed chan error
}

func (c *outboxClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c.frames <- m.Data.String()
}

func (c *outboxClient) OnClose(_ *gws.Conn, err error) { c.closed <- err }

func newOutboxPair(t *testing.T) *outboxPair {
	t.Helper()
	conns := make(chan *gws.Conn, 1)
	up := gws.NewUpgrader(&gws.BuiltinEventHandler{}, &gws.ServerOption{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		conns <- conn
		conn.ReadLoop()
	}))
	t.Cleanup(srv.Close)
	cl := &outboxClient{frames: make(chan string, 1<<16), closed: make(chan error, 1)}
	client, _, err := gws.NewClient(cl, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(srv.URL, "http")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.NetConn().Close() })
	go client.ReadLoop()
	var conn *gws.Conn
	select {
	case conn = <-conns:
	case <-time.After(5 * time.Second):
		t.Fatal("no server socket")
	}
	return &outboxPair{sess: &session{conn: conn}, frames: cl.frames, closed: cl.closed}
}

func (p *outboxPair) next(t *testing.T) string {
	t.Helper()
	select {
	case f := <-p.frames:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame")
		return ""
	}
}

// Frames queued from many goroutines reach the client whole and, for each
// goroutine, in order, whether built once for every socket (wire) or for
// this one, across all three header sizes.
func TestOutboxDeliversFramesInOrder(t *testing.T) {
	p := newOutboxPair(t)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 200_000}
	const producers, rounds = 4, 40
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				body := fmt.Sprintf("%d %d ", g, i)
				body += strings.Repeat("y", max(0, sizes[i%len(sizes)]-len(body)))
				f := outFrame{b: []byte(body)}
				if i%2 == 0 {
					f = outFrame{b: wireFrame(len(body), func(b []byte) []byte { return append(b, body...) }), wire: true}
				}
				p.sess.queuedFrames.Add(1)
				p.sess.queuedBytes.Add(int64(len(f.b)))
				if !p.sess.enqueue(f) {
					t.Error("enqueue refused on an open socket")
				}
			}
		}()
	}
	wg.Wait()
	next := make([]int, producers)
	for range producers * rounds {
		f := p.next(t)
		var g, i int
		if _, err := fmt.Sscanf(f, "%d %d ", &g, &i); err != nil {
			t.Fatalf("frame %.40q: %v", f, err)
		}
		if i != next[g] {
			t.Fatalf("producer %d: frame %d arrived when %d was due", g, i, next[g])
		}
		if want := max(len(fmt.Sprintf("%d %d ", g, i)), sizes[i%len(sizes)]); len(f) != want {
			t.Fatalf("frame %d of producer %d has %d bytes, want %d", i, g, len(f), want)
		}
		next[g]++
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.sess.queuedFrames.Load() != 0 || p.sess.queuedBytes.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queue still counts %d frames, %d bytes after every frame arrived",
				p.sess.queuedFrames.Load(), p.sess.queuedBytes.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A payload that is not UTF-8 would make the client fail the connection
// (a text frame must be UTF-8): the frame goes out with its bad bytes
// replaced, built once whichever way it is queued.
func TestOutboxRepairsInvalidUTF8(t *testing.T) {
	p := newOutboxPair(t)
	bad := []byte(`{"data":"a` + "\xff\xfe" + `b"}`)
	wire := wireFrame(len(bad), func(b []byte) []byte { return append(b, bad...) })
	for _, f := range []outFrame{{b: wire, wire: true}, {b: validPayload(bad)}} {
		if !p.sess.enqueue(f) {
			t.Fatal("enqueue refused")
		}
		got := p.next(t)
		if !utf8.ValidString(got) || got != `{"data":"a`+"\uFFFD"+`b"}` {
			t.Fatalf("got %q", got)
		}
	}
}

// A close asked for while frames are queued goes out after them, and
// nothing is queued after it.
func TestOutboxCloseFollowsQueuedFrames(t *testing.T) {
	p := newOutboxPair(t)
	const n = 2000
	payload := bytes.Repeat([]byte("z"), 1000)
	for range n {
		p.sess.enqueue(outFrame{b: payload})
	}
	p.sess.requestClose(4008, "slow")
	if p.sess.enqueue(outFrame{b: payload}) {
		t.Fatal("a frame was queued after the close")
	}
	for i := range n {
		if f := p.next(t); len(f) != len(payload) {
			t.Fatalf("frame %d has %d bytes", i, len(f))
		}
	}
	select {
	case err := <-p.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 4008 {
			t.Fatalf("closed with %v, want 4008", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("socket not closed")
	}
	select {
	case f := <-p.frames:
		t.Fatalf("frame %.20q after the close", f)
	default:
	}
}

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	writes int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes++
	return c.Conn.Write(b)
}

// On a connection that cannot writev (TLS), a batch is joined and written
// with one call, so that no ping from gws lands between its frames.
func TestBatchJoinedOnOtherConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conn := &countingConn{Conn: a}
	ev := wireFrame(5, func(b []byte) []byte { return append(b, "event"...) })
	big := bytes.Repeat([]byte("r"), 300)
	batch := []outFrame{{b: ev, wire: true}, {b: []byte("reply")}, {b: big}, {b: ev, wire: true}}
	var want []byte
	for _, f := range batch {
		if f.wire {
			want = append(want, f.b...)
		} else {
			want = append(appendHeader(want, len(f.b)), f.b...)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(want))
		_, err := io.ReadFull(b, buf)
		if err != nil {
			buf = nil
		}
		got <- buf
	}()
	var w batchWriter
	if err := w.write(conn, batch); err != nil {
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("wire bytes differ:\n got %q\nwant %q", g, want)
	}
	if conn.writes != 1 {
		t.Fatalf("%d writes for one batch, want 1", conn.writes)
	}
	// The header of each length class, as RFC 6455 has it.
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if h := appendHeader(nil, tc.n); !bytes.Equal(h, tc.want) {
			t.Errorf("header of %d bytes: % x, want % x", tc.n, h, tc.want)
		}
	}
}
