package wsfront_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/memcluster"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

func TestPublishKeyAndExpectSeq(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	a := wstest.Login(t, c.URL(0), "alice")
	r := a.MustOK(a.Call("publish", wstest.Obj{"room": "r", "data": "one", "key": "k1"}))
	if wstest.Num(r["seq"]) != 1 || r["duplicate"] != false || r["epoch"] == "" {
		t.Fatalf("first publish: %v", r)
	}
	epoch := r["epoch"]
	// The same key from another socket on another node is the same publish.
	b := wstest.Login(t, c.URL(1), "alice")
	r = b.MustOK(b.Call("publish", wstest.Obj{"room": "r", "data": "one", "key": "k1"}))
	if wstest.Num(r["seq"]) != 1 || r["duplicate"] != true || r["epoch"] != epoch {
		t.Fatalf("repeated key: %v", r)
	}
	r = b.MustOK(b.Call("publish", wstest.Obj{"room": "r", "data": "two", "expect_seq": 1}))
	if wstest.Num(r["seq"]) != 2 {
		t.Fatalf("expect_seq 1: %v", r)
	}
	r = a.Call("publish", wstest.Obj{"room": "r", "data": "three", "expect_seq": 1})
	if wstest.ErrCode(r) != "conflict" || wstest.Num(r["last_seq"]) != 2 || r["error"].(wstest.Obj)["retryable"] != false {
		t.Fatalf("stale expect_seq: %v", r)
	}
	// A retried conditional publish that succeeded sees its success.
	r = a.MustOK(a.Call("publish", wstest.Obj{"room": "r", "data": "three", "expect_seq": 2, "key": "k3"}))
	r2 := a.MustOK(a.Call("publish", wstest.Obj{"room": "r", "data": "three", "expect_seq": 2, "key": "k3"}))
	if wstest.Num(r["seq"]) != 3 || wstest.Num(r2["seq"]) != 3 || r2["duplicate"] != true {
		t.Fatalf("retried conditional publish: %v then %v", r, r2)
	}
	h := a.MustOK(a.Call("history", wstest.Obj{"room": "r"}))
	if evs := h["events"].([]any); len(evs) != 3 || wstest.Num(h["last_seq"]) != 3 || wstest.Num(h["first_seq"]) != 1 {
		t.Fatalf("history: %v", h)
	}
}

// A publish whose socket dies before the reply is retried with its key on
// another node and lands once.
func TestPublishRetriedAfterDroppedConnection(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	a := wstest.Login(t, c.URL(0), "alice")
	a.SendRaw([]byte(`{"id":1,"op":"publish","room":"drop","data":{"v":1},"key":"once"}`))
	_ = a.Conn.NetConn().Close() // no reply will be read
	b := wstest.Login(t, c.URL(2), "alice")
	var r wstest.Obj
	for range 50 {
		r = b.Call("publish", wstest.Obj{"room": "drop", "data": wstest.Obj{"v": 1}, "key": "once"})
		if r["ok"] == true {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.MustOK(r)
	h := b.MustOK(b.Call("history", wstest.Obj{"room": "drop"}))
	if evs := h["events"].([]any); len(evs) != 1 || wstest.Num(r["seq"]) != 1 {
		t.Fatalf("the publish landed %d times (reply %v)", len(evs), r)
	}
}

func TestMembersJoinLeaveAndSocketClose(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	watcher := wstest.Login(t, c.URL(2), "watcher")
	watcher.MustOK(watcher.Call("subscribe", wstest.Obj{"room": "m"}))
	a := wstest.Login(t, c.URL(0), "alice")
	b := wstest.Login(t, c.URL(1), "bob")
	r := a.MustOK(a.Call("join", wstest.Obj{"room": "m", "meta": wstest.Obj{"status": "here"}}))
	if wstest.Num(r["seq"]) != 1 {
		t.Fatalf("join: %v", r)
	}
	b.MustOK(b.Call("join", wstest.Obj{"room": "m"}))
	m := watcher.MustOK(watcher.Call("members", wstest.Obj{"room": "m"}))
	ms := m["members"].([]any)
	if len(ms) != 2 || wstest.Num(m["seq"]) != 2 {
		t.Fatalf("members: %v", m)
	}
	alice := ms[0].(wstest.Obj)
	if alice["member"] != "alice" || alice["meta"].(wstest.Obj)["status"] != "here" || wstest.Num(alice["joined_seq"]) != 1 {
		t.Fatalf("alice: %v", alice)
	}
	b.MustOK(b.Call("leave", wstest.Obj{"room": "m"}))
	if r := b.Call("leave", wstest.Obj{"room": "m"}); wstest.ErrCode(r) != "not_found" {
		t.Fatalf("second leave: %v", r)
	}
	// Closing alice's socket leaves her rooms.
	_ = a.Conn.WriteClose(1000, nil)
	evs := watcher.Events(4, 10*time.Second)
	want := []string{"join alice", "join bob", "leave bob", "leave alice"}
	for i, ev := range evs {
		if got := ev["type"].(string) + " " + ev["member"].(string); got != want[i] || wstest.Num(ev["seq"]) != uint64(i+1) {
			t.Fatalf("event %d: %v, want %s", i, ev, want[i])
		}
	}
	if evs[0]["data"].(wstest.Obj)["status"] != "here" {
		t.Fatalf("join event carries no meta: %v", evs[0])
	}
	m = watcher.MustOK(watcher.Call("members", wstest.Obj{"room": "m", "consistency": "stale"}))
	if m["stale"] != true {
		t.Fatalf("stale read not marked: %v", m)
	}
	if r := watcher.Call("members", wstest.Obj{"room": "nowhere"}); wstest.ErrCode(r) != "not_found" {
		t.Fatalf("members of a missing room: %v", r)
	}
}

// The limits of the tests of oversized input: small, so that what exceeds
// them is quick to send.
const smallFrame, smallData = 1024, 512

// dialSmallLimits opens a socket, not yet authenticated, to a one-node
// cluster that takes frames of at most smallFrame bytes with data of at
// most smallData.
func dialSmallLimits(t *testing.T) *wstest.Client {
	lim := wsfront.DefaultLimits()
	lim.MaxFrame, lim.MaxData = smallFrame, smallData
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &lim})
	return wstest.Dial(t, c.URL(0))
}

// Every kind of bad input gets a clear error and leaves the socket usable.
func TestBadInputKeepsSocketUsable(t *testing.T) {
	s := dialSmallLimits(t)
	expect := func(raw string, code string) {
		t.Helper()
		s.SendRaw([]byte(raw))
		f, err := s.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if f["ok"] != false || wstest.ErrCode(f) != code {
			t.Fatalf("%s: got %v, want %s", raw, f, code)
		}
	}
	expect(`{"id":1,"op":"publish","room":"r","data":1}`, "unauthorized")
	expect(`{"id":2,"op":"auth"}`, "bad_request")
	expect(`{"id":3,"op":"auth","token":"not.a.jwt"}`, "unauthorized")
	s.MustOK(s.Call("auth", wstest.Obj{"user": "alice"}))
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
	if err := s.Conn.WriteMessage(gws.OpcodeBinary, []byte(`{"id":17,"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	f, err := s.Read(5 * time.Second)
	if err != nil || wstest.ErrCode(f) != "bad_request" {
		t.Fatalf("binary frame: %v %v", f, err)
	}
	// Still usable.
	if r := s.Call("ping", nil); r["pong"] != true {
		t.Fatalf("ping after bad input: %v", r)
	}
	s.MustOK(s.Call("publish", wstest.Obj{"room": "r", "data": wstest.Obj{"fine": true}}))
	// A frame beyond four times the limit closes the socket with 1009.
	s.SendRaw([]byte(`{"id":18,"op":"ping","pad":"` + strings.Repeat("x", 5000) + `"}`))
	if code := s.CloseCode(5 * time.Second); code != 1009 {
		t.Fatalf("huge frame closed with %d, want 1009", code)
	}
}

// A frame over max_frame is answered too_large with its own id, wherever
// the id sits in it, so the client's request fails at once instead of
// waiting for a reply it cannot recognise; the socket stays usable. The
// auth reply tells the client the limits, so it need not send such frames.
func TestOversizedFrameAnsweredWithItsID(t *testing.T) {
	s := dialSmallLimits(t)
	r := s.MustOK(s.Call("auth", wstest.Obj{"user": "alice"}))
	limits, _ := r["limits"].(wstest.Obj)
	if wstest.Num(limits["max_frame"]) != smallFrame || wstest.Num(limits["max_data"]) != smallData {
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
		s.SendRaw([]byte(tt.frame))
		f, err := s.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("%.60s…: %v", tt.frame, err)
		}
		if wstest.ErrCode(f) != "too_large" || f["id"] != tt.wantID || f["error"].(wstest.Obj)["retryable"] != false {
			t.Fatalf("%.60s…: got %v, want too_large with id %v", tt.frame, f, tt.wantID)
		}
	}
	if r := s.Call("ping", nil); r["pong"] != true {
		t.Fatalf("ping after oversized frames: %v", r)
	}
}

func TestLimitsOnRoomsAndRate(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.MaxRooms = 2
	lim.PublishRate = 1
	lim.PublishBurst = 3
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &lim})
	s := wstest.Login(t, c.URL(0), "alice")
	s.MustOK(s.Call("subscribe", wstest.Obj{"room": "a"}))
	s.MustOK(s.Call("join", wstest.Obj{"room": "b"}))
	if r := s.Call("subscribe", wstest.Obj{"room": "c"}); wstest.ErrCode(r) != "limit_exceeded" {
		t.Fatalf("third room: %v", r)
	}
	s.MustOK(s.Call("subscribe", wstest.Obj{"room": "a", "from_seq": 1})) // re-subscribing is no new room
	s.MustOK(s.Call("unsubscribe", wstest.Obj{"room": "a"}))
	s.MustOK(s.Call("subscribe", wstest.Obj{"room": "c"}))
	for range 3 {
		s.MustOK(s.Call("publish", wstest.Obj{"room": "b", "data": 1}))
	}
	r := s.Call("publish", wstest.Obj{"room": "b", "data": 1})
	if wstest.ErrCode(r) != "rate_limited" || r["error"].(wstest.Obj)["retryable"] != true || wstest.Num(r["retry_after_ms"]) == 0 {
		t.Fatalf("over the rate: %v", r)
	}
}

func TestTokensAndPermissions(t *testing.T) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c := memcluster.Start(t, memcluster.Options{Auth: &auth.Config{HMACSecret: secret}})
	token := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := wstest.Dial(t, c.URL(0))
	if r := s.Call("auth", wstest.Obj{"user": "alice"}); wstest.ErrCode(r) != "unauthorized" {
		t.Fatalf("insecure auth on a secure node: %v", r)
	}
	expired := token(jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})
	if r := s.Call("auth", wstest.Obj{"token": expired}); wstest.ErrCode(r) != "unauthorized" {
		t.Fatalf("expired token: %v", r)
	}
	wrong, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString([]byte(strings.Repeat("k", 32)))
	if r := s.Call("auth", wstest.Obj{"token": wrong}); wstest.ErrCode(r) != "unauthorized" {
		t.Fatalf("token with the wrong key: %v", r)
	}
	good := token(jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"herald": wstest.Obj{"join": []string{"team-*"}, "publish": []string{"team-red"}, "read": []string{"*"}}})
	r := s.MustOK(s.Call("auth", wstest.Obj{"token": good}))
	if r["user"] != "alice" || r["expires"] == nil || r["node"] != "n1" {
		t.Fatalf("auth reply: %v", r)
	}
	s.MustOK(s.Call("publish", wstest.Obj{"room": "team-red", "data": 1}))
	if r := s.Call("publish", wstest.Obj{"room": "team-blue", "data": 1}); wstest.ErrCode(r) != "forbidden" {
		t.Fatalf("publish without permission: %v", r)
	}
	s.MustOK(s.Call("join", wstest.Obj{"room": "team-blue"}))
	if r := s.Call("join", wstest.Obj{"room": "lobby"}); wstest.ErrCode(r) != "forbidden" {
		t.Fatalf("join without permission: %v", r)
	}
	// Reading needs read permission, not membership.
	s.MustOK(s.Call("history", wstest.Obj{"room": "team-red"}))
	s.MustOK(s.Call("subscribe", wstest.Obj{"room": "anything"}))
	other := token(jwt.MapClaims{"sub": "mallory", "herald": wstest.Obj{"rooms": []string{"*"}}})
	if r := s.Call("auth", wstest.Obj{"token": other}); wstest.ErrCode(r) != "unauthorized" {
		t.Fatalf("switching user on a socket: %v", r)
	}
	// A token that grants nothing may still authenticate, but not read.
	n := wstest.Dial(t, c.URL(1))
	n.MustOK(n.Call("auth", wstest.Obj{"token": token(jwt.MapClaims{"sub": "nobody"})}))
	if r := n.Call("history", wstest.Obj{"room": "team-red"}); wstest.ErrCode(r) != "forbidden" {
		t.Fatalf("read without permission: %v", r)
	}
}

// A token a little past its exp, inside the leeway, passes auth and then
// works for requests too, instead of "token expired" on each of them.
func TestTokenInLeewayWorksAfterAuth(t *testing.T) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Auth: &auth.Config{HMACSecret: secret, Leeway: 30 * time.Second}})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice",
		"exp": time.Now().Add(-10 * time.Second).Unix(), "herald": wstest.Obj{"rooms": []string{"*"}}}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := wstest.Dial(t, c.URL(0))
	s.MustOK(s.Call("auth", wstest.Obj{"token": tok}))
	s.MustOK(s.Call("publish", wstest.Obj{"room": "r", "data": 1}))
	s.MustOK(s.Call("history", wstest.Obj{"room": "r"}))
}

// A graceful close tells sockets 1001, and the node's joins are left.
func TestGracefulCloseSaysGoingAway(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	a := wstest.Login(t, c.URL(0), "alice")
	a.MustOK(a.Call("join", wstest.Obj{"room": "g"}))
	w := wstest.Login(t, c.URL(1), "watcher")
	c.Stop(0)
	if code := a.CloseCode(15 * time.Second); code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
	m := w.MustOK(w.Call("members", wstest.Obj{"room": "g"}))
	if ms := m["members"].([]any); len(ms) != 0 {
		t.Fatalf("members after the node stopped: %v", m)
	}
}

// A node that crashes leaves its sockets' members to its lease expiry.
func TestCrashedNodesMembersExpire(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{LeaseTTL: 2 * time.Second})
	a := wstest.Login(t, c.URL(0), "alice")
	a.MustOK(a.Call("join", wstest.Obj{"room": "x"}))
	w := wstest.Login(t, c.URL(1), "watcher")
	c.Crash(0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := w.Call("members", wstest.Obj{"room": "x"})
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
	c := memcluster.Start(t, memcluster.Options{})
	room := "short"
	setHistoryLimit(t, c.Backend(0), room, 5)
	a := wstest.Login(t, c.URL(0), "alice")
	for i := range 12 {
		a.MustOK(a.Call("publish", wstest.Obj{"room": room, "data": i}))
	}
	h := a.MustOK(a.Call("history", wstest.Obj{"room": room, "from_seq": 1}))
	if h["truncated"] != true || wstest.Num(h["first_seq"]) != 8 || len(h["events"].([]any)) != 5 {
		t.Fatalf("history below the kept window: %v", h)
	}
	s := wstest.Login(t, c.URL(1), "bob")
	r := s.MustOK(s.Call("subscribe", wstest.Obj{"room": room, "from_seq": 2, "epoch": h["epoch"]}))
	if r["truncated"] != true || wstest.Num(r["first_seq"]) != 8 || wstest.Num(r["last_seq"]) != 12 {
		t.Fatalf("subscribe below the kept window: %v", r)
	}
	evs := s.Events(5, 10*time.Second)
	if wstest.Num(evs[0]["seq"]) != 8 || wstest.Num(evs[4]["seq"]) != 12 {
		t.Fatalf("events after truncation: %v", evs)
	}
	// An old epoch: the room was deleted and made again since.
	r = s.MustOK(s.Call("subscribe", wstest.Obj{"room": room, "from_seq": 3, "epoch": "1"}))
	if r["epoch_changed"] != true || r["epoch"] != h["epoch"] {
		t.Fatalf("subscribe with another epoch: %v", r)
	}
}

// setHistoryLimit configures a room through the state machine's room_config
// command (an operator action, not a client one).
func setHistoryLimit(t *testing.T, p rooms.Proposer, room string, n uint64) {
	t.Helper()
	cmd := fsm.Command{Op: fsm.OpRoomConfig, Room: room, Config: fsm.RoomConfig{HistoryMaxCount: n}, ConfigMask: fsm.FieldHistoryMaxCount}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Propose(ctx, cmd)
	if err != nil || res.Err != nil {
		t.Fatalf("room_config: %v %v", err, res)
	}
}

func TestAuthAndIdleTimeouts(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.AuthTimeout = 500 * time.Millisecond
	lim.IdleTimeout = 1500 * time.Millisecond
	lim.PingInterval = 300 * time.Millisecond
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &lim})
	silent := wstest.Dial(t, c.URL(0))
	if code := silent.CloseCode(5 * time.Second); code != 4001 {
		t.Fatalf("unauthenticated socket closed with %d, want 4001", code)
	}
	// The test client answers the node's pings, so an authenticated socket
	// that sends nothing stays open past the idle timeout...
	alive := wstest.Login(t, c.URL(0), "alice")
	time.Sleep(2 * lim.IdleTimeout)
	alive.MustOK(alive.Call("ping", nil))
	// ...while one that answers nothing is closed as idle.
	mute := wstest.DialRaw(t, c.HTTP(0))
	mute.Send(t, `{"id":1,"op":"auth","user":"bob"}`)
	if code, ok := mute.CloseCode(); !ok || code != 4002 {
		t.Fatalf("mute socket closed with %d (close frame seen: %v), want 4002", code, ok)
	}
}

// A client that stops reading while the node writes to it is closed after
// the idle timeout, though its own requests keep it from being idle: its
// writer stayed blocked, holding its queued bytes, for as long as it
// pinged.
func TestClientThatStopsReadingIsClosed(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.IdleTimeout = 1500 * time.Millisecond
	lim.PingInterval = 300 * time.Millisecond
	lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &lim})
	pub := wstest.Login(t, c.URL(0), "alice")
	stuck := wstest.DialRaw(t, c.HTTP(0))
	stuck.Send(t, `{"id":1,"op":"auth","user":"bob"}`)
	stuck.Send(t, `{"id":2,"op":"subscribe","room":"stuck"}`)
	// About 5 MB: more than the kernel's buffers take (up to 4 MiB on
	// loopback), so the writer blocks with less queued than the bound
	// that closes a slow consumer.
	data := strings.Repeat("x", 16<<10)
	for range 320 {
		pub.MustOK(pub.Call("publish", wstest.Obj{"room": "stuck", "data": data}))
	}
	deadline := time.Now().Add(8 * lim.IdleTimeout)
	for id := 3; ; id++ {
		if time.Now().After(deadline) {
			t.Fatalf("a client that reads nothing still connected after %v", 8*lim.IdleTimeout)
		}
		// A closed connection answers with a reset, and a write fails.
		if _, err := stuck.Conn.Write(maskedText(fmt.Sprintf(`{"id":%d,"op":"ping"}`, id))); err != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// maskedText is a client's text frame of a short payload.
func maskedText(s string) []byte {
	f := []byte{0x81, 0x80 | byte(len(s)), 0, 0, 0, 0}
	return append(f, s...)
}

// A request that announces a body and never sends it is cut off after the
// idle timeout, on any route and without a login: net/http reads what a
// handler left unread before it answers, and nothing else bounds that read.
// (TestAuthAndIdleTimeouts shows that sockets are not cut off with it.)
func TestRequestBodyThatNeverComes(t *testing.T) {
	lim := wsfront.DefaultLimits()
	lim.IdleTimeout = 1500 * time.Millisecond
	lim.PingInterval = 300 * time.Millisecond
	c := memcluster.Start(t, memcluster.Options{Nodes: 1, Limits: &lim})
	addr := strings.TrimPrefix(c.HTTP(0), "http://")
	for _, path := range []string{"/healthz", "/nowhere"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := conn.SetReadDeadline(start.Add(4 * lim.IdleTimeout)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("%s with a body that never comes: connection still open after %v (%v)", path, time.Since(start), err)
		}
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
	open := wstest.Login(t, c.URL(0), "alice")
	c.Node(0).Front().Drain()
	resp, err = http.Get(c.HTTP(0) + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz of a draining node: %d", resp.StatusCode)
	}
	if _, err := wstest.TryDial(t, c.URL(0)); err == nil {
		t.Fatal("a draining node accepted a new socket")
	}
	open.MustOK(open.Call("publish", wstest.Obj{"room": "r", "data": 1}))
}

// A socket's close undoes its own join only: a member who joined again
// from another socket (a reconnect) stays.
func TestCloseLeavesOnlyItsOwnJoin(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{})
	w := wstest.Login(t, c.URL(2), "watcher")
	renewed := reconnectAndCloseOld(t, c.Front(0), c.URL(0), c.URL(1), "alice", "presence")
	m := w.MustOK(w.Call("members", wstest.Obj{"room": "presence"}))
	if ms := m["members"].([]any); len(ms) != 1 || ms[0].(wstest.Obj)["meta"].(wstest.Obj)["v"] != 2.0 {
		t.Fatalf("members after the old socket closed: %v", m)
	}
	_ = renewed.Conn.WriteClose(1000, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = w.MustOK(w.Call("members", wstest.Obj{"room": "presence"}))
		if len(m["members"].([]any)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still a member after her last socket closed: %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reconnectAndCloseOld joins user to room from a socket on oldURL, then
// again from a socket on newURL with meta {"v": 2}, as a client that
// reconnected does, and closes the first socket. It returns the second
// once front, the first socket's, has handled the close: a session goes
// once its socket's leaves have run, and then the close has done all it
// will.
func reconnectAndCloseOld(t *testing.T, front *wsfront.Server, oldURL, newURL, user, room string) *wstest.Client {
	t.Helper()
	old := wstest.Login(t, oldURL, user)
	old.MustOK(old.Call("join", wstest.Obj{"room": room}))
	renewed := wstest.Login(t, newURL, user)
	renewed.MustOK(renewed.Call("join", wstest.Obj{"room": room, "meta": wstest.Obj{"v": 2}}))
	open := front.Sessions()
	_ = old.Conn.WriteClose(1000, nil)
	eventually.True(t, 10*time.Second, "the old socket's close is handled", func() bool { return front.Sessions() < open })
	return renewed
}

// subscribe then unsubscribe, sent back to back, leave no subscription.
func TestUnsubscribeRightAfterSubscribe(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	s := wstest.Login(t, c.URL(0), "alice")
	s.SendRaw([]byte(`{"id":"s","op":"subscribe","room":"quick"}`))
	s.SendRaw([]byte(`{"id":"u","op":"unsubscribe","room":"quick"}`))
	s.MustOK(s.ReplyTo("u", 10*time.Second))
	s.MustOK(s.ReplyTo("s", 10*time.Second))
	s.MustOK(s.Call("publish", wstest.Obj{"room": "quick", "data": 1}))
	s.Quiet(300 * time.Millisecond)
}

// In insecure mode only pages from loopback origins may open sockets.
func TestInsecureModeRefusesForeignOrigins(t *testing.T) {
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
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
	c := memcluster.Start(t, memcluster.Options{Nodes: 1})
	room := "bytes"
	sub := wstest.Login(t, c.URL(0), "alice")
	sub.MustOK(sub.Call("subscribe", wstest.Obj{"room": room}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, data := range []string{`{"s":"a` + "\xff" + `b"}`, `"after"`} {
		cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: "server", Data: []byte(data)}
		if res, err := c.Backend(0).Propose(ctx, cmd); err != nil || res.Err != nil {
			t.Fatalf("publish: %v %v", err, res)
		}
	}
	check := func(evs []wstest.Obj) {
		t.Helper()
		if d, _ := evs[0]["data"].(map[string]any); d["s"] != "a\uFFFDb" {
			t.Fatalf("first event's data: %v", evs[0]["data"])
		}
		if evs[1]["data"] != "after" {
			t.Fatalf("second event's data: %v", evs[1]["data"])
		}
	}
	check(sub.Events(2, 10*time.Second))
	late := wstest.Login(t, c.URL(0), "bob")
	late.MustOK(late.Call("subscribe", wstest.Obj{"room": room, "from_seq": 1}))
	check(late.Events(2, 10*time.Second))
}
