package wsfront_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

func TestPublishKeyAndExpectSeq(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	a := login(t, c.URL(0), "alice")
	r := a.mustOK(a.call("publish", obj{"room": "r", "data": "one", "key": "k1"}))
	if num(r["seq"]) != 1 || r["duplicate"] != false || r["epoch"] == "" {
		t.Fatalf("first publish: %v", r)
	}
	epoch := r["epoch"]
	// The same key from another socket on another node is the same publish.
	b := login(t, c.URL(1), "alice")
	r = b.mustOK(b.call("publish", obj{"room": "r", "data": "one", "key": "k1"}))
	if num(r["seq"]) != 1 || r["duplicate"] != true || r["epoch"] != epoch {
		t.Fatalf("repeated key: %v", r)
	}
	r = b.mustOK(b.call("publish", obj{"room": "r", "data": "two", "expect_seq": 1}))
	if num(r["seq"]) != 2 {
		t.Fatalf("expect_seq 1: %v", r)
	}
	r = a.call("publish", obj{"room": "r", "data": "three", "expect_seq": 1})
	if errCode(r) != "conflict" || num(r["last_seq"]) != 2 || r["error"].(obj)["retryable"] != false {
		t.Fatalf("stale expect_seq: %v", r)
	}
	// A retried conditional publish that succeeded sees its success.
	r = a.mustOK(a.call("publish", obj{"room": "r", "data": "three", "expect_seq": 2, "key": "k3"}))
	r2 := a.mustOK(a.call("publish", obj{"room": "r", "data": "three", "expect_seq": 2, "key": "k3"}))
	if num(r["seq"]) != 3 || num(r2["seq"]) != 3 || r2["duplicate"] != true {
		t.Fatalf("retried conditional publish: %v then %v", r, r2)
	}
	h := a.mustOK(a.call("history", obj{"room": "r"}))
	if evs := h["events"].([]any); len(evs) != 3 || num(h["last_seq"]) != 3 || num(h["first_seq"]) != 1 {
		t.Fatalf("history: %v", h)
	}
}

// A publish whose socket dies before the reply is retried with its key on
// another node and lands once.
func TestPublishRetriedAfterDroppedConnection(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	a := login(t, c.URL(0), "alice")
	a.sendRaw([]byte(`{"id":1,"op":"publish","room":"drop","data":{"v":1},"key":"once"}`))
	_ = a.conn.NetConn().Close() // no reply will be read
	b := login(t, c.URL(2), "alice")
	var r obj
	for range 50 {
		r = b.call("publish", obj{"room": "drop", "data": obj{"v": 1}, "key": "once"})
		if r["ok"] == true {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.mustOK(r)
	h := b.mustOK(b.call("history", obj{"room": "drop"}))
	if evs := h["events"].([]any); len(evs) != 1 || num(r["seq"]) != 1 {
		t.Fatalf("the publish landed %d times (reply %v)", len(evs), r)
	}
}

func TestMembersJoinLeaveAndSocketClose(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	watcher := login(t, c.URL(2), "watcher")
	watcher.mustOK(watcher.call("subscribe", obj{"room": "m"}))
	a := login(t, c.URL(0), "alice")
	b := login(t, c.URL(1), "bob")
	r := a.mustOK(a.call("join", obj{"room": "m", "meta": obj{"status": "here"}}))
	if num(r["seq"]) != 1 {
		t.Fatalf("join: %v", r)
	}
	b.mustOK(b.call("join", obj{"room": "m"}))
	m := watcher.mustOK(watcher.call("members", obj{"room": "m"}))
	ms := m["members"].([]any)
	if len(ms) != 2 || num(m["seq"]) != 2 {
		t.Fatalf("members: %v", m)
	}
	alice := ms[0].(obj)
	if alice["member"] != "alice" || alice["meta"].(obj)["status"] != "here" || num(alice["joined_seq"]) != 1 {
		t.Fatalf("alice: %v", alice)
	}
	b.mustOK(b.call("leave", obj{"room": "m"}))
	if r := b.call("leave", obj{"room": "m"}); errCode(r) != "not_found" {
		t.Fatalf("second leave: %v", r)
	}
	// Closing alice's socket leaves her rooms.
	_ = a.conn.WriteClose(1000, nil)
	evs := watcher.events(4, 10*time.Second)
	want := []string{"join alice", "join bob", "leave bob", "leave alice"}
	for i, ev := range evs {
		if got := ev["type"].(string) + " " + ev["member"].(string); got != want[i] || num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d: %v, want %s", i, ev, want[i])
		}
	}
	if evs[0]["data"].(obj)["status"] != "here" {
		t.Fatalf("join event carries no meta: %v", evs[0])
	}
	m = watcher.mustOK(watcher.call("members", obj{"room": "m", "consistency": "stale"}))
	if m["stale"] != true {
		t.Fatalf("stale read not marked: %v", m)
	}
	if r := watcher.call("members", obj{"room": "nowhere"}); errCode(r) != "not_found" {
		t.Fatalf("members of a missing room: %v", r)
	}
}

// Every kind of bad input gets a clear error and leaves the socket usable.
func TestBadInputKeepsSocketUsable(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxFrame = 1024
	lim.MaxData = 512
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	s := dialWS(t, c.URL(0))
	expect := func(raw string, code string) {
		t.Helper()
		s.sendRaw([]byte(raw))
		f, err := s.read(time.After(5 * time.Second))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if f["ok"] != false || errCode(f) != code {
			t.Fatalf("%s: got %v, want %s", raw, f, code)
		}
	}
	expect(`{"id":1,"op":"publish","room":"r","data":1}`, "unauthorized")
	expect(`{"id":2,"op":"auth"}`, "bad_request")
	expect(`{"id":3,"op":"auth","token":"not.a.jwt"}`, "unauthorized")
	s.mustOK(s.call("auth", obj{"user": "alice"}))
	expect(`not json`, "bad_request")
	expect(`{"id":4,"op":`, "bad_request")
	expect(`[1,2]`, "bad_request")
	expect(`{"id":5}`, "bad_request")
	expect(`{"id":6,"op":"dance"}`, "bad_request")
	expect(`{"id":7,"op":"publish","room":5,"data":1}`, "bad_request")
	expect(`{"id":8,"op":"publish","room":"r"}`, "bad_request")
	expect(`{"id":9,"op":"publish","room":"","data":1}`, "bad_request")
	expect(`{"id":10,"op":"publish","room":"a\u0001b","data":1}`, "bad_request")
	expect(`{"id":10,"op":"publish","room":"a\u007fb","data":1}`, "bad_request")
	expect(`{"id":10,"op":"join","room":"a\u0085b"}`, "bad_request")
	expect(`{"id":10,"op":"subscribe","room":"a\u0080"}`, "bad_request")
	expect(`{"id":10,"op":"publish","room":"\u009fb","data":1}`, "bad_request")
	expect(`{"id":11,"op":"history","room":"r","from_seq":-1}`, "bad_request")
	expect(`{"id":12,"op":"history","room":"r","limit":5000}`, "bad_request")
	expect(`{"id":13,"op":"history","room":"r","consistency":"eventual"}`, "bad_request")
	expect(`{"id":14,"op":"subscribe","room":"r","epoch":"x"}`, "bad_request")
	expect(`{"id":{"a":1},"op":"ping"}`, "bad_request")
	expect(`{"id":15,"op":"publish","room":"`+strings.Repeat("x", 1100)+`","data":1}`, "too_large")
	expect(`{"id":16,"op":"publish","room":"r","data":"`+strings.Repeat("x", 600)+`"}`, "too_large")
	if err := s.conn.WriteMessage(gws.OpcodeBinary, []byte(`{"id":17,"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	f, err := s.read(time.After(5 * time.Second))
	if err != nil || errCode(f) != "bad_request" {
		t.Fatalf("binary frame: %v %v", f, err)
	}
	// Still usable.
	if r := s.call("ping", nil); r["pong"] != true {
		t.Fatalf("ping after bad input: %v", r)
	}
	s.mustOK(s.call("publish", obj{"room": "r", "data": obj{"fine": true}}))
	// A frame beyond four times the limit closes the socket with 1009.
	s.sendRaw([]byte(`{"id":18,"op":"ping","pad":"` + strings.Repeat("x", 5000) + `"}`))
	if code := s.closeCode(5 * time.Second); code != 1009 {
		t.Fatalf("huge frame closed with %d, want 1009", code)
	}
}

// A frame over max_frame is answered too_large with its own id, wherever
// the id sits in it, so the client's request fails at once instead of
// waiting for a reply it cannot recognise; the socket stays usable. The
// auth reply tells the client the limits, so it need not send such frames.
func TestOversizedFrameAnsweredWithItsID(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxFrame = 1024
	lim.MaxData = 512
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	s := dialWS(t, c.URL(0))
	r := s.mustOK(s.call("auth", obj{"user": "alice"}))
	limits, _ := r["limits"].(obj)
	if num(limits["max_frame"]) != 1024 || num(limits["max_data"]) != 512 {
		t.Fatalf("auth reply has no limits: %v", r)
	}
	pad := strings.Repeat("x", 2000) // between max_frame and 4 × max_frame
	for _, tt := range []struct {
		frame  string
		wantID any
	}{
		{`{"id":21,"op":"publish","room":"r","data":"` + pad + `"}`, 21.0},
		{`{"op":"publish","room":"r","data":{"text":"` + pad + `","id":5},"key":"k","id":"late"}`, "late"},
		{`{"op":"publish","room":"r","data":{"id":22,"text":"` + pad + `"}}`, nil},
		{`{"id":23,"op":"join","room":"r","meta":[` + strings.Repeat(`{"a":"]\"}"},`, 200) + `1]}`, 23.0},
	} {
		s.sendRaw([]byte(tt.frame))
		f, err := s.read(time.After(5 * time.Second))
		if err != nil {
			t.Fatalf("%.60s…: %v", tt.frame, err)
		}
		if errCode(f) != "too_large" || f["id"] != tt.wantID || f["error"].(obj)["retryable"] != false {
			t.Fatalf("%.60s…: got %v, want too_large with id %v", tt.frame, f, tt.wantID)
		}
	}
	if r := s.call("ping", nil); r["pong"] != true {
		t.Fatalf("ping after oversized frames: %v", r)
	}
}

func TestLimitsOnRoomsAndRate(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxRooms = 2
	lim.PublishRate = 1
	lim.PublishBurst = 3
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	s := login(t, c.URL(0), "alice")
	s.mustOK(s.call("subscribe", obj{"room": "a"}))
	s.mustOK(s.call("join", obj{"room": "b"}))
	if r := s.call("subscribe", obj{"room": "c"}); errCode(r) != "limit_exceeded" {
		t.Fatalf("third room: %v", r)
	}
	s.mustOK(s.call("subscribe", obj{"room": "a", "from_seq": 1})) // re-subscribing is no new room
	s.mustOK(s.call("unsubscribe", obj{"room": "a"}))
	s.mustOK(s.call("subscribe", obj{"room": "c"}))
	for range 3 {
		s.mustOK(s.call("publish", obj{"room": "b", "data": 1}))
	}
	r := s.call("publish", obj{"room": "b", "data": 1})
	if errCode(r) != "rate_limited" || r["error"].(obj)["retryable"] != true || num(r["retry_after_ms"]) == 0 {
		t.Fatalf("over the rate: %v", r)
	}
}

func TestTokensAndPermissions(t *testing.T) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c := testcluster.Start(t, testcluster.Options{Auth: &auth.Config{HMACSecret: secret}})
	token := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := dialWS(t, c.URL(0))
	if r := s.call("auth", obj{"user": "alice"}); errCode(r) != "unauthorized" {
		t.Fatalf("insecure auth on a secure node: %v", r)
	}
	expired := token(jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})
	if r := s.call("auth", obj{"token": expired}); errCode(r) != "unauthorized" {
		t.Fatalf("expired token: %v", r)
	}
	wrong, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString([]byte(strings.Repeat("k", 32)))
	if r := s.call("auth", obj{"token": wrong}); errCode(r) != "unauthorized" {
		t.Fatalf("token with the wrong key: %v", r)
	}
	good := token(jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"herald": obj{"join": []string{"team-*"}, "publish": []string{"team-red"}, "read": []string{"*"}}})
	r := s.mustOK(s.call("auth", obj{"token": good}))
	if r["user"] != "alice" || r["expires"] == nil || r["node"] != "n1" {
		t.Fatalf("auth reply: %v", r)
	}
	s.mustOK(s.call("publish", obj{"room": "team-red", "data": 1}))
	if r := s.call("publish", obj{"room": "team-blue", "data": 1}); errCode(r) != "forbidden" {
		t.Fatalf("publish without permission: %v", r)
	}
	s.mustOK(s.call("join", obj{"room": "team-blue"}))
	if r := s.call("join", obj{"room": "lobby"}); errCode(r) != "forbidden" {
		t.Fatalf("join without permission: %v", r)
	}
	// Reading needs read permission, not membership.
	s.mustOK(s.call("history", obj{"room": "team-red"}))
	s.mustOK(s.call("subscribe", obj{"room": "anything"}))
	other := token(jwt.MapClaims{"sub": "mallory", "herald": obj{"rooms": []string{"*"}}})
	if r := s.call("auth", obj{"token": other}); errCode(r) != "unauthorized" {
		t.Fatalf("switching user on a socket: %v", r)
	}
	// A token that grants nothing may still authenticate, but not read.
	n := dialWS(t, c.URL(1))
	n.mustOK(n.call("auth", obj{"token": token(jwt.MapClaims{"sub": "nobody"})}))
	if r := n.call("history", obj{"room": "team-red"}); errCode(r) != "forbidden" {
		t.Fatalf("read without permission: %v", r)
	}
}

// A token a little past its exp, inside the leeway, passes auth and then
// works for requests too, instead of "token expired" on each of them.
func TestTokenInLeewayWorksAfterAuth(t *testing.T) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Auth: &auth.Config{HMACSecret: secret, Leeway: 30 * time.Second}})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice",
		"exp": time.Now().Add(-10 * time.Second).Unix(), "herald": obj{"rooms": []string{"*"}}}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := dialWS(t, c.URL(0))
	s.mustOK(s.call("auth", obj{"token": tok}))
	s.mustOK(s.call("publish", obj{"room": "r", "data": 1}))
	s.mustOK(s.call("history", obj{"room": "r"}))
}

// A graceful close tells sockets 1001, and the node's joins are left.
func TestGracefulCloseSaysGoingAway(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	a := login(t, c.URL(0), "alice")
	a.mustOK(a.call("join", obj{"room": "g"}))
	w := login(t, c.URL(1), "watcher")
	c.Stop(0)
	if code := a.closeCode(15 * time.Second); code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
	m := w.mustOK(w.call("members", obj{"room": "g"}))
	if ms := m["members"].([]any); len(ms) != 0 {
		t.Fatalf("members after the node stopped: %v", m)
	}
}

// A node that crashes leaves its sockets' members to its lease expiry.
func TestCrashedNodesMembersExpire(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{LeaseTTL: 2 * time.Second})
	a := login(t, c.URL(0), "alice")
	a.mustOK(a.call("join", obj{"room": "x"}))
	w := login(t, c.URL(1), "watcher")
	c.Crash(0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := w.call("members", obj{"room": "x"})
		if m["ok"] == true && len(m["members"].([]any)) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still a member 30s after her node crashed: %v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestHistoryTruncated(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	room := "short"
	setHistoryLimit(t, c, room, 5)
	a := login(t, c.URL(0), "alice")
	for i := range 12 {
		a.mustOK(a.call("publish", obj{"room": room, "data": i}))
	}
	h := a.mustOK(a.call("history", obj{"room": room, "from_seq": 1}))
	if h["truncated"] != true || num(h["first_seq"]) != 8 || len(h["events"].([]any)) != 5 {
		t.Fatalf("history below the kept window: %v", h)
	}
	s := login(t, c.URL(1), "bob")
	r := s.mustOK(s.call("subscribe", obj{"room": room, "from_seq": 2, "epoch": h["epoch"]}))
	if r["truncated"] != true || num(r["first_seq"]) != 8 || num(r["last_seq"]) != 12 {
		t.Fatalf("subscribe below the kept window: %v", r)
	}
	evs := s.events(5, 10*time.Second)
	if num(evs[0]["seq"]) != 8 || num(evs[4]["seq"]) != 12 {
		t.Fatalf("events after truncation: %v", evs)
	}
	// An old epoch: the room was deleted and made again since.
	r = s.mustOK(s.call("subscribe", obj{"room": room, "from_seq": 3, "epoch": "1"}))
	if r["epoch_changed"] != true || r["epoch"] != h["epoch"] {
		t.Fatalf("subscribe with another epoch: %v", r)
	}
}

// setHistoryLimit configures a room through the state machine's room_config
// command (an operator action, not a client one).
func setHistoryLimit(t *testing.T, c *testcluster.Cluster, room string, n uint64) {
	t.Helper()
	h := c.Node(0).Host()
	cmd := fsm.Command{Op: fsm.OpRoomConfig, Room: room, Config: fsm.RoomConfig{HistoryMaxCount: n}, ConfigMask: fsm.FieldHistoryMaxCount}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Propose(ctx, h.GroupForKey(room), cmd.Encode())
	if err != nil || out.(*fsm.Result).Err != nil {
		t.Fatalf("room_config: %v %v", err, out)
	}
}

func TestAuthAndIdleTimeouts(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.AuthTimeout = 500 * time.Millisecond
	lim.IdleTimeout = 1500 * time.Millisecond
	lim.PingInterval = 300 * time.Millisecond
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Limits: &lim})
	silent := dialWS(t, c.URL(0))
	if code := silent.closeCode(5 * time.Second); code != 4001 {
		t.Fatalf("unauthenticated socket closed with %d, want 4001", code)
	}
	// The test client answers the node's pings, so an authenticated socket
	// that sends nothing stays open past the idle timeout...
	alive := login(t, c.URL(0), "alice")
	time.Sleep(2 * lim.IdleTimeout)
	alive.mustOK(alive.call("ping", nil))
	// ...while one that answers nothing is closed as idle.
	mute := dialRaw(t, c.HTTP(0))
	mute.send(t, `{"id":1,"op":"auth","user":"bob"}`)
	if code, ok := mute.closeCode(); !ok || code != 4002 {
		t.Fatalf("mute socket closed with %d (close frame seen: %v), want 4002", code, ok)
	}
}

func TestHTTPEndpointsAndSubprotocol(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(c.HTTP(0) + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ok":true`) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	// No sub-protocol offered: served herald.v1 anyway.
	conn, _, err := gws.NewClient(new(gws.BuiltinEventHandler), &gws.ClientOption{Addr: c.URL(0)})
	if err != nil {
		t.Fatalf("dial without a sub-protocol: %v", err)
	}
	_ = conn.NetConn().Close()
	// Only other protocols offered: refused.
	_, resp, err := gws.NewClient(new(gws.BuiltinEventHandler), &gws.ClientOption{Addr: c.URL(0),
		RequestHeader: http.Header{"Sec-WebSocket-Protocol": []string{"mqtt, wamp"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial with foreign sub-protocols: %v %v", resp, err)
	}
	// A draining node is not ready and takes no new sockets, but its
	// open ones keep working.
	open := login(t, c.URL(0), "alice")
	c.Node(0).Front().Drain()
	resp, err = http.Get(c.HTTP(0) + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz of a draining node: %d", resp.StatusCode)
	}
	if _, err := tryDial(t, c.URL(0)); err == nil {
		t.Fatal("a draining node accepted a new socket")
	}
	open.mustOK(open.call("publish", obj{"room": "r", "data": 1}))
}

// A socket's close undoes its own join only: a member who joined again
// from another socket (a reconnect) stays.
func TestCloseLeavesOnlyItsOwnJoin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	w := login(t, c.URL(2), "watcher")
	old := login(t, c.URL(0), "alice")
	old.mustOK(old.call("join", obj{"room": "presence"}))
	renewed := login(t, c.URL(1), "alice")
	renewed.mustOK(renewed.call("join", obj{"room": "presence", "meta": obj{"v": 2}}))
	_ = old.conn.WriteClose(1000, nil)
	time.Sleep(500 * time.Millisecond) // the old socket's close has been handled
	m := w.mustOK(w.call("members", obj{"room": "presence"}))
	if ms := m["members"].([]any); len(ms) != 1 || ms[0].(obj)["meta"].(obj)["v"] != 2.0 {
		t.Fatalf("members after the old socket closed: %v", m)
	}
	_ = renewed.conn.WriteClose(1000, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = w.mustOK(w.call("members", obj{"room": "presence"}))
		if len(m["members"].([]any)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still a member after her last socket closed: %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// subscribe then unsubscribe, sent back to back, leave no subscription.
func TestUnsubscribeRightAfterSubscribe(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	s := login(t, c.URL(0), "alice")
	s.sendRaw([]byte(`{"id":"s","op":"subscribe","room":"quick"}`))
	s.sendRaw([]byte(`{"id":"u","op":"unsubscribe","room":"quick"}`))
	s.mustOK(s.replyTo("u", 10*time.Second))
	s.mustOK(s.replyTo("s", 10*time.Second))
	s.mustOK(s.call("publish", obj{"room": "quick", "data": 1}))
	s.quiet(300 * time.Millisecond)
}

// In insecure mode only pages from loopback origins may open sockets.
func TestInsecureModeRefusesForeignOrigins(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	dial := func(origin string) error {
		conn, _, err := gws.NewClient(new(gws.BuiltinEventHandler), &gws.ClientOption{Addr: c.URL(0),
			RequestHeader: http.Header{"Origin": []string{origin}, "Sec-WebSocket-Protocol": []string{"herald.v1"}}})
		if err == nil {
			_ = conn.NetConn().Close()
		}
		return err
	}
	for _, ok := range []string{"http://127.0.0.1:7071", "http://localhost:8080", "http://[::1]:7071"} {
		if err := dial(ok); err != nil {
			t.Errorf("origin %s refused: %v", ok, err)
		}
	}
	if err := dial("https://evil.example"); err == nil {
		t.Error("a foreign origin opened a socket on an insecure node")
	}
}

// Data stored by another kind of client can hold bytes that are not UTF-8
// inside a JSON string (JSON validity does not check them). A text frame
// must be UTF-8, so the event goes out with those bytes replaced, live and
// from history, and the subscriber's socket stays open (gws used to refuse
// the frame and close the socket).
func TestEventWithInvalidUTF8Delivered(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	room := "bytes"
	sub := login(t, c.URL(0), "alice")
	sub.mustOK(sub.call("subscribe", obj{"room": room}))
	h := c.Node(0).Host()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, data := range []string{`{"s":"a` + "\xff" + `b"}`, `"after"`} {
		cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: "server", Data: []byte(data)}
		if out, err := h.Propose(ctx, h.GroupForKey(room), cmd.Encode()); err != nil || out.(*fsm.Result).Err != nil {
			t.Fatalf("publish: %v %v", err, out)
		}
	}
	check := func(evs []obj) {
		t.Helper()
		if d, _ := evs[0]["data"].(map[string]any); d["s"] != "a\uFFFDb" {
			t.Fatalf("first event's data: %v", evs[0]["data"])
		}
		if evs[1]["data"] != "after" {
			t.Fatalf("second event's data: %v", evs[1]["data"])
		}
	}
	check(sub.events(2, 10*time.Second))
	late := login(t, c.URL(0), "bob")
	late.mustOK(late.call("subscribe", obj{"room": room, "from_seq": 1}))
	check(late.events(2, 10*time.Second))
}
