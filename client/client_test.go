package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

// dial connects user to urls, in that order, and closes the client when
// the test ends.
func dial(t *testing.T, user string, urls ...string) *client.Client {
	t.Helper()
	return dialOpts(t, client.Config{URLs: urls, User: user})
}

func dialOpts(t *testing.T, opts client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial %v: %v", opts.URLs, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// order returns the cluster's URLs starting with node first.
func order(c *testcluster.Cluster, first int) []string {
	urls := c.URLs()
	return append(urls[first:], urls[:first]...)
}

// history reads all of room's events through c.
func history(t *testing.T, c *client.Client, room string) []client.Event {
	t.Helper()
	ctx := eventually.Within(t, 20*time.Second)
	var out []client.Event
	from := uint64(1)
	for {
		p, err := c.History(ctx, room, from, 1000)
		if err != nil {
			t.Fatalf("history of %s from %d: %v", room, from, err)
		}
		out = append(out, p.Events...)
		if !p.More() {
			return out
		}
		from = p.NextSeq()
	}
}

// collect takes n events from s, failing on a notice or after d.
func collect(t *testing.T, s *client.Subscription, n int, d time.Duration) []client.Event {
	t.Helper()
	ctx := eventually.Within(t, d)
	var out []client.Event
	for len(out) < n {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		if ev.Kind != client.KindEvent {
			t.Fatalf("unexpected notice %+v", ev)
		}
		out = append(out, ev)
	}
	return out
}

func TestPublishSubscribeHistory(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	alice := dial(t, "alice", c.URLs()...)
	ctx := eventually.Within(t, 20*time.Second)

	sub, err := alice.Subscribe(ctx, "lobby", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		res, err := alice.Publish(ctx, "lobby", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		if res.Seq != uint64(i+1) || res.Duplicate || res.Epoch == "" || res.Key == "" {
			t.Fatalf("publish %d: %+v", i, res)
		}
	}
	raw := json.RawMessage(`{"raw":true}`)
	if _, err := alice.Publish(ctx, "lobby", raw); err != nil {
		t.Fatal(err)
	}
	evs := collect(t, sub, 6, 10*time.Second)
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.Room != "lobby" || ev.Type != "message" || ev.Member != "alice" || ev.TS.IsZero() {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if string(evs[2].Data) != `{"n":2}` || string(evs[5].Data) != `{"raw":true}` {
		t.Fatalf("data: %s, %s", evs[2].Data, evs[5].Data)
	}
	if seq, epoch := sub.LastSeq(); seq != 6 || epoch != evs[0].Epoch {
		t.Fatalf("LastSeq = %d, %q", seq, epoch)
	}

	// Paging, two at a time, from another node.
	bob := dial(t, "bob", c.URL(2))
	var paged []uint64
	from := uint64(0)
	for {
		p, err := bob.History(ctx, "lobby", from, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > 2 || p.LastSeq != 6 {
			t.Fatalf("page: %+v", p)
		}
		for _, ev := range p.Events {
			paged = append(paged, ev.Seq)
		}
		if !p.More() {
			break
		}
		from = p.NextSeq()
	}
	if !slices.Equal(paged, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("paged seqs %v", paged)
	}
	if p, err := bob.History(ctx, "lobby", 0, 0, client.Stale()); err != nil || !p.Stale {
		t.Fatalf("stale history: %+v, %v", p, err)
	}
	if _, err := bob.History(ctx, "nowhere", 0, 0); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("history of a missing room: %v", err)
	}

	// A subscription from now sees only later events; a second one on the
	// same room and client is refused.
	live, err := bob.Subscribe(ctx, "lobby", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Subscribe(ctx, "lobby", client.SubscribeOptions{}); !errors.Is(err, client.ErrSubscribed) {
		t.Fatalf("second subscription: %v", err)
	}
	if _, err := alice.Publish(ctx, "lobby", "seven"); err != nil {
		t.Fatal(err)
	}
	if ev := collect(t, live, 1, 10*time.Second)[0]; ev.Seq != 7 || string(ev.Data) != `"seven"` {
		t.Fatalf("live event %+v", ev)
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	// The room can be subscribed again once the first is closed.
	again, err := bob.Subscribe(ctx, "lobby", client.SubscribeOptions{FromSeq: 7})
	if err != nil {
		t.Fatal(err)
	}
	if ev := collect(t, again, 1, 10*time.Second)[0]; ev.Seq != 7 {
		t.Fatalf("resubscribed event %+v", ev)
	}
}

func TestMembersJoinLeave(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	alice := dial(t, "alice", c.URL(0))
	bob := dial(t, "bob", c.URL(1))
	ctx := eventually.Within(t, 20*time.Second)

	seq, err := alice.Join(ctx, "team", map[string]string{"status": "here"})
	if err != nil || seq != 1 {
		t.Fatalf("join: %d, %v", seq, err)
	}
	if _, err := bob.Join(ctx, "team", nil); err != nil {
		t.Fatal(err)
	}
	ml, err := bob.Members(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 2 || ml.Seq != 2 || ml.Epoch == "" {
		t.Fatalf("members: %+v", ml)
	}
	for _, m := range ml.Members {
		switch m.Member {
		case "alice":
			if string(m.Meta) != `{"status":"here"}` || m.JoinedSeq != 1 {
				t.Fatalf("alice: %+v", m)
			}
		case "bob":
			if string(m.Meta) != "null" || m.JoinedSeq != 2 {
				t.Fatalf("bob: %+v", m)
			}
		default:
			t.Fatalf("member %+v", m)
		}
	}
	// Joining again updates the meta.
	if seq, err := alice.Join(ctx, "team", map[string]string{"status": "away"}); err != nil || seq != 3 {
		t.Fatalf("join again: %d, %v", seq, err)
	}
	seq, err = alice.Leave(ctx, "team")
	if err != nil || seq != 4 {
		t.Fatalf("leave: %d, %v", seq, err)
	}
	ml, err = alice.Members(ctx, "team", client.Stale())
	if err != nil {
		t.Fatal(err)
	}
	if !ml.Stale {
		t.Fatalf("stale read not marked stale: %+v", ml)
	}
	ml, err = alice.Members(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 1 || ml.Members[0].Member != "bob" {
		t.Fatalf("members after leave: %+v", ml)
	}
	if _, err := alice.Leave(ctx, "team"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("leave when not a member: %v", err)
	}
	if _, err := alice.Members(ctx, "nowhere"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("members of a missing room: %v", err)
	}
}

func TestConflictAndKeys(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	alice := dial(t, "alice", c.URLs()...)
	ctx := eventually.Within(t, 20*time.Second)

	if res, err := alice.Publish(ctx, "cas", "a", client.WithExpectSeq(0)); err != nil || res.Seq != 1 {
		t.Fatalf("first conditional publish: %+v, %v", res, err)
	}
	_, err := alice.Publish(ctx, "cas", "b", client.WithExpectSeq(0))
	var he *client.Error
	if !errors.Is(err, client.ErrConflict) || !errors.As(err, &he) || he.LastSeq != 1 || he.Retryable {
		t.Fatalf("stale conditional publish: %v (%+v)", err, he)
	}
	if errors.Is(err, client.ErrForbidden) {
		t.Fatal("a conflict matches ErrForbidden")
	}

	first, err := alice.Publish(ctx, "cas", "c", client.WithKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.Publish(ctx, "cas", "c", client.WithKey("k1"))
	if err != nil || !again.Duplicate || again.Seq != first.Seq || again.Key != "k1" {
		t.Fatalf("repeated key: %+v, %v (first %+v)", again, err, first)
	}
	// A conditional publish that succeeded gets its success back when
	// repeated, not a conflict with itself.
	cond, err := alice.Publish(ctx, "cas", "d", client.WithKey("k2"), client.WithExpectSeq(first.Seq))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := alice.Publish(ctx, "cas", "d", client.WithKey("k2"), client.WithExpectSeq(first.Seq)); err != nil || !r.Duplicate || r.Seq != cond.Seq {
		t.Fatalf("repeated conditional publish: %+v, %v", r, err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := alice.Publish(canceled, "cas", "e"); !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("publish with a canceled context: %v", err)
	}
	if _, err := alice.Publish(ctx, "", "x"); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("publish without a room: %v", err)
	}
	if _, err := alice.Publish(ctx, "cas", func() {}); err == nil {
		t.Fatal("publishing a func did not fail")
	}
}

func TestAuth(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	c := memcluster.Start(t, memcluster.Options{Auth: &auth.Config{HMACSecret: secret}})
	token := func(key []byte, sub string, grants map[string][]string) string {
		t.Helper()
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "herald": grants,
		}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := eventually.Within(t, 20*time.Second)

	alice := dialOpts(t, client.Config{URLs: c.URLs(),
		Token: token(secret, "alice", map[string][]string{"publish": {"lobby"}, "read": {"*"}})})
	if _, err := alice.Publish(ctx, "lobby", "hi"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Publish(ctx, "secret", "hi"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("publish without the right: %v", err)
	}
	if _, err := alice.Join(ctx, "lobby", nil); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("join without the right: %v", err)
	}
	if _, err := alice.History(ctx, "lobby", 0, 0); err != nil {
		t.Fatal(err)
	}

	reader := dialOpts(t, client.Config{URLs: c.URLs(),
		Token: token(secret, "reader", map[string][]string{"read": {"public-*"}})})
	if _, err := reader.Subscribe(ctx, "lobby", client.SubscribeOptions{}); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("subscribe without the right: %v", err)
	}
	if _, err := reader.Subscribe(ctx, "public-1", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}

	// Refused credentials end Dial at once instead of being retried.
	for name, opts := range map[string]client.Config{
		"forged token": {Token: token([]byte("another secret, 32 bytes or more"), "mallory", nil)},
		"bare user":    {User: "mallory"},
	} {
		opts.URLs = c.URLs()
		start := time.Now()
		cl, err := client.Dial(ctx, opts)
		if err == nil {
			_ = cl.Close()
			t.Fatalf("%s: dial succeeded", name)
		}
		if !errors.Is(err, client.ErrUnauthorized) || time.Since(start) > 5*time.Second {
			t.Fatalf("%s: %v after %v", name, err, time.Since(start))
		}
	}

	// A token source is asked at every connection.
	var asked atomic.Int32
	viaSource := dialOpts(t, client.Config{URLs: c.URLs(), TokenSource: func(context.Context) (string, error) {
		asked.Add(1)
		return token(secret, "carol", map[string][]string{"rooms": {"*"}}), nil
	}})
	if _, err := viaSource.Publish(ctx, "lobby", "from carol"); err != nil || asked.Load() != 1 {
		t.Fatalf("publish with a token source: %v (asked %d times)", err, asked.Load())
	}
}

// A client publishing through node 0 while it crashes and comes back:
// every acknowledged publish is in the room once, and nothing is in it
// twice.
func TestExactlyOncePublishAcrossCrash(t *testing.T) {
	// Publishes back to back, so that some are always in flight, and not
	// slowed by the rate limit.
	limits := wsfront.DefaultLimits()
	limits.PublishRate, limits.PublishBurst = 100000, 100000
	c := testcluster.Start(t, testcluster.Options{Limits: &limits})
	const workers, perWorker = 4, 100
	var states sync.Map
	retries := &countingHandler{msg: "herald: retrying publish", err: "herald: connection lost"}
	retries.showOnFailure(t)
	pub := dialOpts(t, client.Config{URLs: c.URLs(), User: "writer", Logger: slog.New(retries),
		OnState: func(ch client.StateChange) { states.Store(ch.URL+"/"+ch.State.String(), true) }})
	if pub.Node() != "n1" {
		t.Fatalf("connected to %q, not n1", pub.Node())
	}
	var (
		mu    sync.Mutex
		acked = make(map[string]uint64) // value -> seq
		done  atomic.Int32
		wg    sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				v := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := pub.Publish(ctx, "orders", v)
				cancel()
				if err != nil {
					t.Errorf("publish %s: %v", v, err)
					return
				}
				mu.Lock()
				acked[v] = res.Seq
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	// Crash the node the publisher is on, keep publishing through another,
	// bring the node back. Publishes commit in batches, so the crash can
	// fall when none is in flight: then it is done again, on the node
	// the publisher moved to.
	const total = workers * perWorker
	for cycle := 1; cycle <= 3 && retries.n.Load() == 0; cycle++ {
		eventually.True(t, 20*time.Second, "a fifth more publishes done", func() bool { return done.Load() >= int32(cycle*total/5) })
		node := 0
		if cycle > 1 {
			eventually.True(t, 20*time.Second, "the publisher connected", func() bool { return pub.Node() != "" })
			node = int(pub.Node()[1] - '1')
		}
		c.Crash(node)
		eventually.True(t, 20*time.Second, "a tenth more publishes done after the crash", func() bool { return done.Load() >= int32(cycle*total/5+total/10) })
		c.Restart(node)
		c.WaitReady()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if _, moved := states.Load(c.URL(1) + "/connected"); !moved {
		t.Fatal("the publisher never left node 0")
	}

	reader := dial(t, "reader", c.URL(2))
	seen := make(map[string]uint64)
	for i, ev := range history(t, reader, "orders") {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("history has seq %d at %d", ev.Seq, i)
		}
		var v string
		if err := json.Unmarshal(ev.Data, &v); err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[v]; dup {
			t.Fatalf("%s published twice: seqs %d and %d", v, prev, ev.Seq)
		}
		seen[v] = ev.Seq
	}
	if len(acked) != workers*perWorker {
		t.Fatalf("%d acknowledged publishes, want %d", len(acked), workers*perWorker)
	}
	for v, seq := range acked {
		if seen[v] != seq {
			t.Fatalf("%s acknowledged at seq %d, found at %d", v, seq, seen[v])
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("history has %d values, %d acknowledged", len(seen), len(acked))
	}
	if retries.n.Load() == 0 {
		t.Fatal("no publish was retried after the crash; the test proved nothing")
	}
}

// countingHandler counts the log records with one message and error,
// and keeps every record to show if the test fails.
type countingHandler struct {
	msg, err string
	n        atomic.Int32

	mu  sync.Mutex
	log []string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Time.Format("15:04:05.000000 ") + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		if e, ok := a.Value.Any().(error); ok && r.Message == h.msg && a.Key == "err" && e.Error() == h.err {
			h.n.Add(1)
		}
		return true
	})
	h.mu.Lock()
	h.log = append(h.log, line)
	h.mu.Unlock()
	return nil
}

// showOnFailure logs the records if t fails.
func (h *countingHandler) showOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, l := range h.log {
				t.Log(l)
			}
		}
	})
}

// A subscriber on node 0 while it crashes: it resumes on another node and
// gets every seq once, in order.
func TestSubscribeResumesAcrossCrash(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	const n = 150
	reconnected := make(chan string, 10)
	subc := dialOpts(t, client.Config{URLs: c.URLs(), User: "reader", OnState: func(ch client.StateChange) {
		if ch.State == client.Connected {
			reconnected <- ch.Node
		}
	}})
	if node := <-reconnected; node != "n1" {
		t.Fatalf("subscriber on %s, not n1", node)
	}
	pub := dial(t, "writer", order(c, 1)...)
	ctx := eventually.Within(t, 30*time.Second)
	sub, err := subc.Subscribe(ctx, "feed", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}

	pubErr := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := pub.Publish(ctx, "feed", i); err != nil {
				pubErr <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		pubErr <- nil
	}()
	got := collect(t, sub, n/3, 20*time.Second)
	c.Crash(0)
	got = append(got, collect(t, sub, n-len(got), 25*time.Second)...)
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	for i, ev := range got {
		var v int
		if err := json.Unmarshal(ev.Data, &v); err != nil || ev.Seq != uint64(i+1) || v != i {
			t.Fatalf("event %d: seq %d data %s", i, ev.Seq, ev.Data)
		}
	}
	select {
	case node := <-reconnected:
		if node == "n1" {
			t.Fatalf("reconnected to the crashed node")
		}
	default:
		t.Fatal("the subscriber never reconnected")
	}
	// Nothing more, in particular no repeat.
	quiet, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if ev, err := sub.Next(quiet); err == nil {
		t.Fatalf("extra event %+v", ev)
	}
}

// A node stopping gracefully closes its sockets with 1001; the client
// moves to another node and its subscription and membership follow.
func TestResumeAfterGoingAway(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	codes := make(chan uint16, 10)
	alice := dialOpts(t, client.Config{URLs: c.URLs(), User: "alice", OnState: func(ch client.StateChange) {
		if ch.State == client.Disconnected && ch.CloseCode != 0 {
			codes <- ch.CloseCode
		}
	}})
	bob := dial(t, "bob", c.URL(2))
	ctx := eventually.Within(t, 30*time.Second)
	sub, err := alice.Subscribe(ctx, "room", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Join(ctx, "room", "alice's meta"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := bob.Publish(ctx, "room", i); err != nil {
			t.Fatal(err)
		}
	}
	collect(t, sub, 4, 10*time.Second) // the join and three messages
	c.Stop(0)
	select {
	case code := <-codes:
		if code != 1001 {
			t.Fatalf("close code %d", code)
		}
	case <-ctx.Done():
		t.Fatal("no close code seen")
	}
	for i := 3; i < 6; i++ {
		if _, err := bob.Publish(ctx, "room", i); err != nil {
			t.Fatal(err)
		}
	}
	// The re-join is one more join event; the old socket's leave may come
	// before or after it (see the report on leave-on-close).
	var msgs []uint64
	for len(msgs) < 3 {
		ev := collect(t, sub, 1, 10*time.Second)[0]
		if ev.Type == "message" {
			var v int
			_ = json.Unmarshal(ev.Data, &v)
			msgs = append(msgs, uint64(v))
		}
	}
	if !slices.Equal(msgs, []uint64{3, 4, 5}) {
		t.Fatalf("messages after the move: %v", msgs)
	}
	if alice.Node() == "n1" || alice.Node() == "" {
		t.Fatalf("alice on %q", alice.Node())
	}
}

// The client re-joins its rooms on a new socket: after the node it joined
// through crashes, the member is back, with its meta, and stays after the
// crashed node returns and expires what it held.
func TestRejoinAfterCrash(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	alice := dial(t, "alice", c.URLs()...)
	bob := dial(t, "bob", c.URL(2))
	ctx := eventually.Within(t, 30*time.Second)
	if _, err := alice.Join(ctx, "presence", map[string]int{"v": 1}); err != nil {
		t.Fatal(err)
	}
	oldEpoch := c.Node(1).Host().Cluster().Nodes["n1"].Epoch
	c.Crash(0)
	eventually.True(t, 20*time.Second, "alice on another node", func() bool { n := alice.Node(); return n != "" && n != "n1" })
	hasAlice := func() bool {
		ml, err := bob.Members(ctx, "presence")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ml.Members {
			if m.Member == "alice" && string(m.Meta) == `{"v":1}` {
				return true
			}
		}
		return false
	}
	eventually.True(t, 10*time.Second, "alice a member again", hasAlice)
	c.Restart(0)
	c.WaitReady()
	// The restarted node expires the members its old incarnation held;
	// alice is held by another node now.
	eventually.True(t, 20*time.Second, "the members of n1's old incarnation expired", func() bool {
		n := c.Node(1).Host().Cluster().Nodes["n1"]
		return n != nil && n.Epoch > oldEpoch && !n.LeaseExpired && n.ExpiredBefore >= n.Epoch
	})
	if !hasAlice() {
		t.Fatal("alice lost her membership after node 0 came back")
	}
	if seq, err := alice.Leave(ctx, "presence"); err != nil || seq == 0 {
		t.Fatalf("leave: %d, %v", seq, err)
	}
	if hasAlice() {
		t.Fatal("alice still a member after Leave")
	}
}

// A subscriber slower than the publisher: its buffer overflows, and it
// still gets every seq once, in order.
func TestSlowSubscriber(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	cl := dial(t, "alice", c.URLs()...)
	ctx := eventually.Within(t, 30*time.Second)
	sub, err := cl.Subscribe(ctx, "busy", client.SubscribeOptions{FromSeq: 1, Buffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		if _, err := cl.Publish(ctx, "busy", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		ev := collect(t, sub, 1, 10*time.Second)[0]
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		if i%10 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A node refusing publishes over its rate: Publish waits as told and
// retries.
func TestRateLimitedPublishWaits(t *testing.T) {
	limits := wsfront.DefaultLimits()
	limits.PublishRate, limits.PublishBurst = 20, 2
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &limits})
	cl := dial(t, "alice", c.URL(0))
	ctx := eventually.Within(t, 20*time.Second)
	start := time.Now()
	for i := range 12 {
		if res, err := cl.Publish(ctx, "r", i); err != nil || res.Seq != uint64(i+1) || res.Duplicate {
			t.Fatalf("publish %d: %+v, %v", i, res, err)
		}
	}
	// Two at once, then one per 50ms.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("12 publishes at 20/s took only %v", d)
	}
}

// propose commits an fsm command no client op makes (room deletion,
// retention), as an operator's tool would.
func propose(t *testing.T, p rooms.Proposer, cmd fsm.Command) {
	t.Helper()
	res, err := p.Propose(eventually.Within(t, 10*time.Second), cmd)
	if err != nil {
		t.Fatalf("propose %v: %v", cmd.Op, err)
	}
	if res.Err != nil {
		t.Fatalf("propose %v: %v", cmd.Op, res.Err)
	}
}

// Notices arrive in line with the events: the end of an incarnation, the
// events of the next one from seq 1, trimmed history, and a resume into
// an incarnation that replaced the one the application stored.
func TestSubscriptionNotices(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	cl := dial(t, "alice", c.URLs()...)
	ctx := eventually.Within(t, 20*time.Second)
	next := func(s *client.Subscription) client.Event {
		t.Helper()
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}

	sub, err := cl.Subscribe(ctx, "notes", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cl.Publish(ctx, "notes", i); err != nil {
			t.Fatal(err)
		}
	}
	first := collect(t, sub, 3, 10*time.Second)
	propose(t, c.Backend(2), fsm.Command{Op: fsm.OpRoomDelete, Room: "notes"})
	if ev := next(sub); ev.Kind != client.KindRoomDeleted || ev.Epoch != first[0].Epoch || ev.Seq != 3 {
		t.Fatalf("after the deletion: %+v", ev)
	}
	if _, err := cl.Publish(ctx, "notes", "again"); err != nil {
		t.Fatal(err)
	}
	again := next(sub)
	if again.Kind != client.KindEvent || again.Seq != 1 || again.Epoch == first[0].Epoch || string(again.Data) != `"again"` {
		t.Fatalf("first event of the new incarnation: %+v", again)
	}
	seq, epoch := sub.LastSeq()
	if seq != 1 || epoch != again.Epoch {
		t.Fatalf("LastSeq = %d, %q", seq, epoch)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}

	// While no one listens, the room is deleted and used again: resuming
	// from the stored position says so, then delivers the new incarnation.
	propose(t, c.Backend(2), fsm.Command{Op: fsm.OpRoomDelete, Room: "notes"})
	third, err := cl.Publish(ctx, "notes", "third")
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := cl.Subscribe(ctx, "notes", client.SubscribeOptions{FromSeq: seq + 1, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(resumed); ev.Kind != client.KindEpochChanged || ev.Epoch != third.Epoch || ev.Seq != 1 {
		t.Fatalf("resume into a new incarnation: %+v", ev)
	}
	if ev := next(resumed); ev.Kind != client.KindEvent || ev.Seq != 1 || ev.Epoch != third.Epoch {
		t.Fatalf("after epoch_changed: %+v", ev)
	}

	// A room keeping 5 events: a subscription from seq 1 learns that 1..5
	// are gone, then gets 6..10.
	propose(t, c.Backend(2), fsm.Command{Op: fsm.OpRoomConfig, Room: "trim",
		Config: fsm.RoomConfig{HistoryMaxCount: 5}, ConfigMask: fsm.FieldHistoryMaxCount})
	for i := range 10 {
		if _, err := cl.Publish(ctx, "trim", i); err != nil {
			t.Fatal(err)
		}
	}
	p, err := cl.History(ctx, "trim", 1, 0)
	if err != nil || !p.Truncated || p.FirstSeq != 6 || len(p.Events) != 5 {
		t.Fatalf("trimmed history: %+v, %v", p, err)
	}
	trimmed, err := cl.Subscribe(ctx, "trim", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(trimmed); ev.Kind != client.KindTruncated || ev.Seq != 6 {
		t.Fatalf("subscription below the history: %+v", ev)
	}
	if seq, _ := trimmed.LastSeq(); seq != 5 {
		t.Fatalf("LastSeq after the truncated notice: %d", seq)
	}
	for i, ev := range collect(t, trimmed, 5, 10*time.Second) {
		if ev.Seq != uint64(6+i) {
			t.Fatalf("trimmed room event %d: %+v", i, ev)
		}
	}
}

func TestDialSkipsDeadNode(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ws://" + l.Addr().String() + "/ws"
	_ = l.Close()

	var failed, dials atomic.Int32
	cl := dialOpts(t, client.Config{URLs: []string{dead, c.URL(1)}, User: "alice",
		OnState: func(ch client.StateChange) {
			if ch.State == client.Disconnected && ch.URL == dead && ch.Err != nil {
				failed.Add(1)
			}
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	if cl.Node() != "n2" || failed.Load() != 1 || dials.Load() != 2 {
		t.Fatalf("connected to %q after %d failures and %d dials", cl.Node(), failed.Load(), dials.Load())
	}
	if _, err := cl.Publish(eventually.Within(t, 10*time.Second), "r", 1); err != nil {
		t.Fatal(err)
	}

	// With no node to be had, Dial keeps trying until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := client.Dial(ctx, client.Config{URLs: []string{dead}, User: "alice"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial of a dead node: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dial took %v to give up", d)
	}
}

func TestBackoff(t *testing.T) {
	for _, j := range []client.Jitter{client.FullJitter, client.EqualJitter, client.NoJitter} {
		b := client.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: j}
		for attempt := range 40 {
			bound := min(200*time.Millisecond, 10*time.Millisecond<<min(attempt, 20))
			for range 20 {
				d := b.Delay(attempt)
				if d < 10*time.Millisecond || d > bound {
					t.Fatalf("jitter %d attempt %d: delay %v outside [10ms, %v]", j, attempt, d, bound)
				}
				if j == client.NoJitter && d != bound {
					t.Fatalf("no jitter: %v, want %v", d, bound)
				}
				if j == client.EqualJitter && d < bound/2 {
					t.Fatalf("equal jitter: %v below half of %v", d, bound)
				}
			}
		}
	}
	if d := (client.Backoff{}).Delay(100); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("default backoff: %v", d)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	cl := dial(t, "alice", c.URL(0))
	ctx := eventually.Within(t, 10*time.Second)
	sub, err := cl.Subscribe(ctx, "r", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan error, 1)
	go func() {
		_, err := sub.Next(ctx)
		next <- err
	}()
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-next; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	select {
	case <-sub.Done():
	default:
		t.Fatal("subscription not done")
	}
	if _, err := cl.Publish(ctx, "r", 1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if _, err := cl.History(ctx, "r", 0, 0); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("history after Close: %v", err)
	}
	// No goroutine of the client outlives Close.
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if leaked := clientGoroutines(); leaked != "" {
		t.Fatalf("goroutines left after Close:\n%s", leaked)
	}
}

// clientGoroutines returns the stacks of running goroutines that belong to
// package client.
func clientGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "heraldhq/herald/client.") && !strings.Contains(g, "client_test.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
