package serverapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/client"
	api "github.com/heraldhq/herald/client/serverapi"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/serverapi"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

// closeSeen is a close of a socket as its client saw it.
type closeSeen struct {
	code   uint16
	reason string
	at     time.Time
}

// watched is a Go client that records the closes the node sent it.
type watched struct {
	*client.Client
	closes chan closeSeen
}

// dialWatched connects a client to the node at url only.
func dialWatched(t *testing.T, ctx context.Context, url string, opts client.Config) *watched {
	t.Helper()
	w := &watched{closes: make(chan closeSeen, 16)}
	opts.URLs = []string{url}
	opts.OnState = func(ch client.StateChange) {
		if ch.State == client.Disconnected && ch.CloseCode != 0 {
			select {
			case w.closes <- closeSeen{code: ch.CloseCode, reason: ch.CloseReason, at: time.Now()}:
			default:
			}
		}
	}
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	w.Client = c
	return w
}

// waitClose returns the first close the client saw, within d.
func (w *watched) waitClose(t *testing.T, what string, d time.Duration) closeSeen {
	t.Helper()
	select {
	case cs := <-w.closes:
		return cs
	case <-time.After(d):
		t.Fatalf("%s: the socket was not closed within %v", what, d)
	}
	return closeSeen{}
}

// noClose checks that the client has not been closed.
func (w *watched) noClose(t *testing.T, what string) {
	t.Helper()
	select {
	case cs := <-w.closes:
		t.Fatalf("%s: closed with %d %q, want it open", what, cs.code, cs.reason)
	default:
	}
}

// wantNodes checks a user op's per-node counts, by node id.
func wantNodes(t *testing.T, what string, res *api.UserResult, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	total := 0
	for _, n := range res.Nodes {
		if n.Error != nil {
			t.Fatalf("%s: node %s failed: %v", what, n.Node, n.Error)
		}
		got[n.Node] = n.Sockets
		total += n.Sockets
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || res.Sockets != total {
		t.Fatalf("%s: per node %v (total %d), want %v (total %d)", what, got, res.Sockets, want, total)
	}
}

// A disconnect closes the user's sockets on every node with the code and
// reason given, leaves other users' alone, and its block refuses the
// user's auth on every node until it ends.
func TestDisconnectClosesEveryNodesSocketsAndBlocks(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 90*time.Second)
	var alice []*watched
	for _, i := range []int{0, 0, 1, 2} {
		alice = append(alice, dialWatched(t, ctx, c.URL(i), client.Config{User: "alice"}))
	}
	bob := dialWatched(t, ctx, c.URL(1), client.Config{User: "bob"})

	res, err := apiClient(t, c, 1).Disconnect(ctx, api.DisconnectRequest{User: "alice", Code: 4100,
		Reason: "banned for spam", BlockFor: 4})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes(t, "disconnect", res, map[string]int{"n1": 2, "n2": 1, "n3": 1})
	if res.BlockUntil == nil || time.Until(*res.BlockUntil) > 4*time.Second || time.Until(*res.BlockUntil) < 2*time.Second {
		t.Fatalf("block_until %v, want about 4s from now", res.BlockUntil)
	}
	for i, w := range alice {
		cs := w.waitClose(t, fmt.Sprintf("alice socket %d", i), 5*time.Second)
		if cs.code != 4100 || cs.reason != "banned for spam" {
			t.Fatalf("alice socket %d: closed with %d %q, want 4100 \"banned for spam\"", i, cs.code, cs.reason)
		}
	}
	if _, err := bob.Publish(ctx, "lobby", json.RawMessage(`"still here"`)); err != nil {
		t.Fatalf("bob's socket stopped working: %v", err)
	}
	bob.noClose(t, "bob")

	for i := range c.Len() {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := client.Dial(dctx, client.Config{URLs: []string{c.URL(i)}, User: "alice"})
		cancel()
		if !errors.Is(err, client.ErrForbidden) || !strings.Contains(err.Error(), "blocked") {
			t.Fatalf("auth on node %d while blocked: %v, want forbidden (blocked)", i+1, err)
		}
	}
	time.Sleep(time.Until(*res.BlockUntil) + 100*time.Millisecond)
	for i := range c.Len() {
		dialWatched(t, eventually.Within(t, 10*time.Second), c.URL(i), client.Config{User: "alice"})
	}
}

// Unsubscribe ends the user's subscriptions to the room on every node,
// and nothing else; leave removes the user from the room's members.
func TestUnsubscribeAndLeave(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 90*time.Second)
	srv := apiClient(t, c, 2)
	var lobby []*client.Subscription
	var other *client.Subscription
	var alice0 *watched
	for i := range c.Len() {
		w := dialWatched(t, ctx, c.URL(i), client.Config{User: "alice"})
		sub, err := w.Subscribe(ctx, "lobby", client.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lobby = append(lobby, sub)
		if i == 0 {
			alice0 = w
			if other, err = w.Subscribe(ctx, "other", client.SubscribeOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Join(ctx, "lobby", nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	bob := dialWatched(t, ctx, c.URL(1), client.Config{User: "bob"})
	bobLobby, err := bob.Subscribe(ctx, "lobby", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}

	res, err := srv.Unsubscribe(ctx, api.UnsubscribeRequest{User: "alice", Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes(t, "unsubscribe", res, map[string]int{"n1": 1, "n2": 1, "n3": 1})
	for i, sub := range lobby {
		for {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := sub.Next(sctx)
			cancel()
			if err == nil {
				continue // alice's own join, delivered before the notice
			}
			if !errors.Is(err, client.ErrUnsubscribed) {
				t.Fatalf("alice's lobby subscription on node %d: %v, want ErrUnsubscribed", i+1, err)
			}
			break
		}
	}
	for _, room := range []string{"lobby", "other"} {
		if _, err := srv.Publish(ctx, api.PublishRequest{Room: room, Data: json.RawMessage(`"after"`), Key: "after"}); err != nil {
			t.Fatal(err)
		}
	}
	for what, sub := range map[string]*client.Subscription{"alice's other room": other, "bob's lobby": bobLobby} {
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if string(ev.Data) == `"after"` {
				break
			}
		}
	}

	// Leave: alice is a member through her socket on node 1; the API on
	// node 3 removes her with a committed leave.
	lres, err := srv.Leave(ctx, api.LeaveRequest{User: "alice", Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := srv.Members(ctx, api.RoomRead{Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 0 || ms.Seq < lres.Seq || lres.Epoch == "" {
		t.Fatalf("after leave at seq %d: members %+v at seq %d, want none", lres.Seq, ms.Members, ms.Seq)
	}
	_, err = srv.Leave(ctx, api.LeaveRequest{User: "alice", Room: "lobby"})
	wantAPIError(t, "leave of a non-member", err, 404, "not_found")
	alice0.noClose(t, "alice on node 1")
}

// jwtFor signs a token for user, valid for every room until exp.
func jwtFor(t *testing.T, secret []byte, user string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "exp": exp.Unix(), "herald": map[string]any{"rooms": []string{"*"}},
	}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A refresh that cuts the expiry closes the user's sockets on every node
// at the new time; one that extends it keeps them working past their
// tokens' exp.
func TestRefreshCutsAndExtends(t *testing.T) {
	secret := []byte("refresh-test-secret-0123456789-abcdef")
	c := startClusterWith(t, testcluster.Options{Auth: &auth.Config{HMACSecret: secret}}, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 90*time.Second)
	srv := apiClient(t, c, 0)
	// Whole seconds: exp has no finer unit.
	short := time.Now().Truncate(time.Second).Add(4 * time.Second)
	var dave []*watched
	for i := range c.Len() {
		dave = append(dave, dialWatched(t, ctx, c.URL(i), client.Config{Token: jwtFor(t, secret, "dave", time.Now().Add(time.Hour))}))
	}
	alice := []*watched{
		dialWatched(t, ctx, c.URL(1), client.Config{Token: jwtFor(t, secret, "alice", short)}),
		dialWatched(t, ctx, c.URL(2), client.Config{Token: jwtFor(t, secret, "alice", short)}),
	}
	carol := dialWatched(t, ctx, c.URL(1), client.Config{Token: jwtFor(t, secret, "carol", short)})

	cut, err := srv.Refresh(ctx, api.RefreshRequest{User: "dave", ExpireIn: ptr[int64](1)})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes(t, "refresh dave", cut, map[string]int{"n1": 1, "n2": 1, "n3": 1})
	at := *cut.ExpireAt
	for i, w := range dave {
		cs := w.waitClose(t, fmt.Sprintf("dave on node %d", i+1), 10*time.Second)
		if cs.code != wsfront.CloseExpired {
			t.Fatalf("dave on node %d: closed with %d %q, want %d", i+1, cs.code, cs.reason, wsfront.CloseExpired)
		}
		// The clock is the same process's; the close cannot come early.
		if cs.at.Before(at) || cs.at.After(at.Add(5*time.Second)) {
			t.Fatalf("dave on node %d: closed at %v, want at %v (within 5s)", i+1, cs.at, at)
		}
	}

	ext, err := srv.Refresh(ctx, api.RefreshRequest{User: "alice", ExpireAt: ptr(time.Now().Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes(t, "refresh alice", ext, map[string]int{"n1": 0, "n2": 1, "n3": 1})
	time.Sleep(time.Until(short) + 500*time.Millisecond)
	for i, w := range alice {
		if _, err := w.Publish(ctx, "lobby", json.RawMessage(`"past exp"`)); err != nil {
			t.Fatalf("alice's socket %d past its token's exp, with a refreshed expiry: %v", i, err)
		}
		w.noClose(t, "alice")
	}
	// The control: carol's token expired at the same time, and no refresh
	// kept her socket's requests going.
	if _, err := carol.Publish(ctx, "lobby", json.RawMessage(`"past exp"`)); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("carol past her token's exp: %v, want unauthorized", err)
	}
}

// Bad user ops are refused with a message saying what is wrong; a node
// that cannot be reached is reported in the reply, the others act.
func TestUserOpRefusalsAndPartialFailure(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	base := c.HTTP(0) + serverapi.Prefix
	withKey := map[string]string{"X-API-Key": key}
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	far := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	for _, tt := range []struct {
		op, body string
		msg      string
	}{
		{"disconnect", `{}`, "user must be"},
		{"disconnect", `{"user":"a\u0001b"}`, "user must be"},
		{"disconnect", `{"user":"a","code":4000}`, "code must be 4100..4499"},
		{"disconnect", `{"user":"a","code":1000}`, "code must be"},
		{"disconnect", `{"user":"a","code":4500}`, "code must be"},
		{"disconnect", `{"user":"a","reason":"` + strings.Repeat("x", 124) + `"}`, "reason must be"},
		{"disconnect", `{"user":"a","block_for":86401}`, "block_for must be 0..86400"},
		{"disconnect", `{"user":"a","block_for":-1}`, "block_for must be"},
		{"disconnect", `{"user":"a","block_for":5,"block_until":"` + far + `"}`, "not both"},
		{"disconnect", `{"user":"a","block_until":"` + far + `"}`, "ahead"},
		{"disconnect", `{"user":"a","block_until":"` + past + `"}`, "not in the future"},
		{"disconnect", `{"user":"a","block_until":"tomorrow"}`, "not a valid request"},
		{"disconnect", `{"user":"a","blok_for":5}`, "blok_for"},
		{"unsubscribe", `{"user":"a"}`, "room"},
		{"unsubscribe", `{"room":"lobby"}`, "user must be"},
		{"leave", `{"user":"a"}`, "room"},
		{"refresh", `{"user":"a"}`, "needs expire_at"},
		{"refresh", `{"user":"a","expire_in":-5}`, "expire_in must be"},
		{"refresh", `{"user":"a","expire_at":"` + far + `"}`, "ahead"},
	} {
		status, e := rawPost(t, base+tt.op, withKey, tt.body)
		if status != 400 || e == nil || e.Code != "bad_request" || !strings.Contains(e.Message, tt.msg) {
			t.Errorf("%s %s: HTTP %d %+v, want 400 bad_request saying %q", tt.op, tt.body, status, e, tt.msg)
		}
	}

	ctx := eventually.Within(t, 60*time.Second)
	a := dialWatched(t, ctx, c.URL(1), client.Config{User: "alice"})
	c.Crash(2)
	res, err := apiClient(t, c, 0).Disconnect(ctx, api.DisconnectRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	failed := res.Failed()
	if len(failed) != 1 || failed[0].Node != "n3" || failed[0].Error.Code != "unavailable" || !failed[0].Error.Retryable || res.Sockets != 1 {
		t.Fatalf("disconnect with node 3 down: %+v, want n3 failed (unavailable) and 1 socket closed", res)
	}
	cs := a.waitClose(t, "alice on node 2", 5*time.Second)
	if cs.code != wsfront.CloseDisconnected || cs.reason != "disconnected by the server" {
		t.Fatalf("alice on node 2: closed with %d %q, want the default 4010", cs.code, cs.reason)
	}
}
