package serverapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	api "github.com/heraldhq/herald/client/serverapi"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/serverapi"
)

const key = "test-key-0123456789"

// startCluster starts a 3-node cluster with the server API on every node.
func startCluster(t *testing.T, opts serverapi.Config) *testcluster.Cluster {
	t.Helper()
	return startClusterWith(t, testcluster.Options{}, opts)
}

func startClusterWith(t *testing.T, copts testcluster.Options, opts serverapi.Config) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, copts)
	for i := range c.Len() {
		opts.Sockets = c.Node(i).Front()
		h, err := serverapi.Handler(c.Node(i).Rooms(), opts)
		if err != nil {
			t.Fatal(err)
		}
		c.Node(i).Front().Handle(serverapi.Prefix, h)
	}
	return c
}

func apiClient(t *testing.T, c *testcluster.Cluster, nodes ...int) *api.Client {
	t.Helper()
	var urls []string
	for _, i := range nodes {
		urls = append(urls, c.HTTP(i))
	}
	cl, err := api.New(key, urls...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func wantAPIError(t *testing.T, what string, err error, status int, code string) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: error %v, want HTTP %d %s", what, err, status, code)
	}
	if ae.Status != status || ae.Code != code || ae.Message == "" {
		t.Fatalf("%s: HTTP %d %s %q, want HTTP %d %s with a message", what, ae.Status, ae.Code, ae.Message, status, code)
	}
	return ae
}

// A socket subscriber sees the API's publishes in one order with the
// sockets' publishes, and the API reads what both wrote.
func TestPublishSeenBySocketsInOrder(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 60*time.Second)
	srv := apiClient(t, c, 0)

	sock, err := client.Dial(ctx, client.Config{URLs: []string{c.URL(1)}, User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	sub, err := sock.Subscribe(ctx, "lobby", client.SubscribeOptions{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sock.Join(ctx, "lobby", map[string]string{"mood": "ok"}); err != nil {
		t.Fatal(err)
	}
	// Publishes alternate between the API (through node 1) and the socket
	// (through node 2), each after the last was acknowledged: seq order
	// must be this order.
	var want []string
	for i := range 10 {
		text := fmt.Sprintf("m%d", i)
		want = append(want, text)
		data := json.RawMessage(fmt.Sprintf(`{"text": %q}`, text))
		if i%2 == 0 {
			res, err := srv.Publish(ctx, api.PublishRequest{Room: "lobby", Data: data, Key: "k-" + text})
			if err != nil {
				t.Fatalf("api publish %d: %v", i, err)
			}
			if res.Seq != uint64(i+2) || res.Duplicate || res.Epoch == "" {
				t.Fatalf("api publish %d: %+v, want seq %d", i, res, i+2)
			}
		} else if _, err := sock.Publish(ctx, "lobby", data); err != nil {
			t.Fatalf("socket publish %d: %v", i, err)
		}
	}
	var got []string
	for len(got) < len(want)+1 {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("subscription: %v (got %v)", err, got)
		}
		if ev.Type == "join" {
			continue
		}
		var d struct{ Text string }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatalf("event data %s: %v", ev.Data, err)
		}
		got = append(got, d.Text)
		if len(got) == len(want) {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("subscriber saw %v, want %v", got, want)
	}

	h, err := srv.History(ctx, api.HistoryRequest{Room: "lobby", Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != 5 || h.Events[0].Seq != 1 || h.Events[0].Type != "join" || h.Events[0].Member != "alice" ||
		h.Events[1].Member != serverapi.DefaultMember || !h.More || h.LastSeq != 11 || h.Stale {
		t.Fatalf("history page: %+v", h)
	}
	if string(h.Events[1].Data) != `{"text":"m0"}` {
		t.Fatalf("history stored the API's data as %s, want it compacted", h.Events[1].Data)
	}
	stale, err := srv.History(ctx, api.HistoryRequest{Room: "lobby", FromSeq: ptr(uint64(11)), Consistency: api.Stale})
	if err != nil || !stale.Stale {
		t.Fatalf("stale history: %+v, %v", stale, err)
	}
	ms, err := srv.Members(ctx, api.RoomRead{Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 1 || ms.Members[0].Member != "alice" || string(ms.Members[0].Meta) != `{"mood":"ok"}` || ms.Seq != 11 {
		t.Fatalf("members: %+v", ms)
	}
	ps, err := srv.PresenceStats(ctx, api.RoomRead{Room: "lobby"})
	if err != nil || ps.Members != 1 || ps.SocketMembers != 1 {
		t.Fatalf("presence stats: %+v, %v", ps, err)
	}
	rooms, err := srv.Rooms(ctx, api.RoomsRequest{Prefix: "lob"})
	if err != nil || len(rooms.Rooms) != 1 || rooms.Rooms[0].Room != "lobby" || rooms.Rooms[0].MemberCount != 1 || rooms.Rooms[0].LastSeq != 11 || rooms.Next != "" {
		t.Fatalf("rooms: %+v, %v", rooms, err)
	}
	info, err := srv.Info(ctx)
	if err != nil || info.Node != "n1" || len(info.Nodes) != 3 || info.Nodes[1].ClientURL != c.HTTP(1) || info.Nodes[1].WebsocketURL != c.URL(1) {
		t.Fatalf("info: %+v, %v", info, err)
	}
	// A member named by as publishes in a members-only room only if joined;
	// the socket's user has.
	if _, err := srv.Publish(ctx, api.PublishRequest{Room: "lobby", Data: json.RawMessage(`1`), As: "alice", ExpectSeq: ptr(uint64(11))}); err != nil {
		t.Fatalf("publish as alice at seq 11: %v", err)
	}
	_, err = srv.Publish(ctx, api.PublishRequest{Room: "lobby", Data: json.RawMessage(`2`), ExpectSeq: ptr(uint64(11))})
	if ae := wantAPIError(t, "stale expect_seq", err, http.StatusConflict, "conflict"); ae.LastSeq != 12 || ae.Retryable {
		t.Fatalf("conflict: %+v, want last_seq 12, not retryable", ae)
	}
	_, err = srv.History(ctx, api.HistoryRequest{Room: "nowhere"})
	wantAPIError(t, "history of a room that does not exist", err, http.StatusNotFound, "not_found")
}

func ptr[T any](v T) *T { return &v }

// Publishes with keys in flight while the room's leader crashes, retried
// by the client on the other nodes with the same keys, are each applied
// exactly once.
func TestKeyedPublishOnceAcrossCrash(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 90*time.Second)
	const room = "orders"
	g := c.Node(0).Host().GroupForKey(room)
	leaderID, _ := c.Node(0).Host().Leader(g)
	leader := -1
	for i := range c.Len() {
		if c.Node(i).Host().NodeID() == leaderID {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("group %d has no leader (%q)", g, leaderID)
	}
	others := []int{(leader + 1) % 3, (leader + 2) % 3}
	// The client starts at the leader's node and moves on when it fails.
	cl := apiClient(t, c, leader, others[0], others[1])
	first, err := cl.Publish(ctx, api.PublishRequest{Room: room, Data: json.RawMessage(`{"i":-1}`), Key: "order--1"})
	if err != nil {
		t.Fatal(err)
	}

	const n = 30
	seqs := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond)
			res, err := cl.Publish(ctx, api.PublishRequest{Room: room, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), Key: fmt.Sprintf("order-%d", i)})
			errs[i] = err
			if err == nil {
				seqs[i] = res.Seq
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	c.Crash(leader)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The first publish, repeated on a survivor, is a duplicate.
	again, err := apiClient(t, c, others[0]).Publish(ctx, api.PublishRequest{Room: room, Data: json.RawMessage(`{"i":-1}`), Key: "order--1"})
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("repeat of the first publish: %+v, %v; want duplicate of seq %d", again, err, first.Seq)
	}
	h, err := apiClient(t, c, others[1]).History(ctx, api.HistoryRequest{Room: room, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	seqOf := map[int]uint64{}
	for _, ev := range h.Events {
		var d struct{ I int }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		count[d.I]++
		seqOf[d.I] = ev.Seq
	}
	for i := -1; i < n; i++ {
		if count[i] != 1 {
			t.Fatalf("message %d is in history %d times, want once (history %d events)", i, count[i], len(h.Events))
		}
		if i >= 0 && seqOf[i] != seqs[i] {
			t.Fatalf("message %d: publish answered seq %d, history has it at %d", i, seqs[i], seqOf[i])
		}
	}
	if len(h.Events) != n+1 {
		t.Fatalf("history has %d events, want %d", len(h.Events), n+1)
	}
}

// rawPost sends body with the given headers and returns the status and
// the decoded error.
func rawPost(t *testing.T, url string, headers map[string]string, body string) (int, *api.Error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env api.ErrorReply
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &env); err != nil || env.Error == nil || env.Error.Message == "" {
			t.Fatalf("POST %s: HTTP %d with body %q, want a JSON error", url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, env.Error
}

func TestRefusals(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{"old-key-0123456789", key}, MaxData: 1000})
	base := c.HTTP(2) + serverapi.Prefix
	withKey := map[string]string{"X-API-Key": key}
	for _, tt := range []struct {
		name    string
		op      string
		headers map[string]string
		body    string
		status  int
		code    string
		msg     string
	}{
		{"no key", "publish", nil, `{"room":"a","data":1}`, 401, "unauthorized", "needs an API key"},
		{"wrong key", "publish", map[string]string{"X-API-Key": "nope-nope-nope-nope"}, `{"room":"a","data":1}`, 401, "unauthorized", "not one of"},
		{"bad header", "publish", map[string]string{"Authorization": "Basic abc"}, `{}`, 401, "unauthorized", "apikey <key>"},
		{"not JSON", "publish", withKey, `{"room":`, 400, "bad_request", "not a valid request"},
		{"unknown field", "publish", withKey, `{"room":"a","data":1,"expect_sq":3}`, 400, "bad_request", "expect_sq"},
		{"wrong type", "publish", withKey, `{"room":"a","data":1,"expect_seq":"3"}`, 400, "bad_request", "expect_seq"},
		{"no room", "publish", withKey, `{"data":1}`, 400, "bad_request", "missing room"},
		{"bad room", "publish", withKey, "{\"room\":\"a\\u0001\",\"data\":1}", 400, "bad_request", "control character"},
		{"no data", "publish", withKey, `{"room":"a"}`, 400, "bad_request", "data is required"},
		{"long key", "publish", withKey, `{"room":"a","data":1,"key":"` + strings.Repeat("k", 300) + `"}`, 400, "bad_request", "at most 256"},
		{"data too large", "publish", withKey, `{"room":"a","data":"` + strings.Repeat("x", 1200) + `"}`, 413, "too_large", "max_data"},
		{"body too large", "publish", withKey, `{"room":"a","data":"` + strings.Repeat("x", 200<<10) + `"}`, 413, "too_large", "at most"},
		{"bad consistency", "history", withKey, `{"room":"a","consistency":"eventual"}`, 400, "bad_request", "consistency"},
		{"bad limit", "rooms", withKey, `{"limit":5000}`, 400, "bad_request", "limit"},
		{"broadcast repeats", "broadcast", withKey, `{"rooms":["a","b","a"],"data":1}`, 400, "bad_request", "rooms[2] repeats rooms[0]"},
		{"broadcast none", "broadcast", withKey, `{"rooms":[],"data":1}`, 400, "bad_request", "1..100"},
		{"unknown op", "subscribe", withKey, `{}`, 404, "not_found", "publish, broadcast"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, e := rawPost(t, base+tt.op, tt.headers, tt.body)
			if status != tt.status || e == nil || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) || e.Retryable {
				t.Fatalf("HTTP %d %+v, want %d %s mentioning %q, not retryable", status, e, tt.status, tt.code, tt.msg)
			}
		})
	}
	// Either key of a rotation works, in either header form.
	for _, h := range []map[string]string{{"X-API-Key": "old-key-0123456789"}, {"Authorization": "apikey " + key}, {"Authorization": "Bearer " + key}} {
		if status, e := rawPost(t, base+"info", h, ``); status != 200 {
			t.Fatalf("info with %v: HTTP %d %+v", h, status, e)
		}
	}
	get, err := http.NewRequest(http.MethodGet, base+"publish", nil)
	if err != nil {
		t.Fatal(err)
	}
	get.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET publish: HTTP %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if _, err := serverapi.Handler(c.Node(0).Rooms(), serverapi.Config{Keys: []string{"short"}}); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("a short key: %v, want refused", err)
	}
}

// A node without keys refuses everything, but in development takes
// loopback requests without a key.
func TestNoKeys(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	closed, err := serverapi.Handler(c.Node(0).Rooms(), serverapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c.Node(0).Front().Handle(serverapi.Prefix, closed)
	dev, err := serverapi.Handler(c.Node(1).Rooms(), serverapi.Config{AllowLoopback: true, Keys: []string{key}, Sockets: c.Node(1).Front()})
	if err != nil {
		t.Fatal(err)
	}
	c.Node(1).Front().Handle(serverapi.Prefix, dev)
	status, e := rawPost(t, c.HTTP(0)+serverapi.Prefix+"info", nil, `{}`)
	if status != http.StatusForbidden || e.Code != "forbidden" || !strings.Contains(e.Message, "no API key configured") {
		t.Fatalf("no keys configured: HTTP %d %+v", status, e)
	}
	if status, e := rawPost(t, c.HTTP(1)+serverapi.Prefix+"publish", nil, `{"room":"dev","data":{"a":1}}`); status != 200 {
		t.Fatalf("dev mode from loopback without a key: HTTP %d %+v", status, e)
	}
	if status, e := rawPost(t, c.HTTP(1)+serverapi.Prefix+"info", map[string]string{"X-API-Key": "wrong-wrong-wrong-wrong"}, `{}`); status != 401 {
		t.Fatalf("dev mode with a wrong key: HTTP %d %+v, want 401", status, e)
	}
}

// A broadcast publishes to every room once, a repeat with its key
// appends nowhere, and the room listing pages through every room.
func TestBroadcastAndRoomListing(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	ctx := eventually.Within(t, 60*time.Second)
	cl := apiClient(t, c, 1)
	var rooms []string
	for i := range 25 {
		rooms = append(rooms, fmt.Sprintf("team/%02d", i))
	}
	if _, err := cl.Publish(ctx, api.PublishRequest{Room: "team/03", Data: json.RawMessage(`"before"`), Key: "before"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Publish(ctx, api.PublishRequest{Room: "teams", Data: json.RawMessage(`"not listed under team/"`), Key: "teams"}); err != nil {
		t.Fatal(err)
	}
	req := api.BroadcastRequest{Rooms: rooms, Data: json.RawMessage(`{"alert":"fire drill"}`), Key: "drill-1"}
	for round, dup := range []bool{false, true} {
		res, err := cl.Broadcast(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Results) != len(rooms) {
			t.Fatalf("round %d: %d results for %d rooms", round, len(res.Results), len(rooms))
		}
		for i, r := range res.Results {
			wantSeq := uint64(1)
			if r.Room == "team/03" {
				wantSeq = 2
			}
			if r.Room != rooms[i] || r.Error != nil || r.Seq != wantSeq || r.Duplicate != dup {
				t.Fatalf("round %d: result %d: %+v, want room %s seq %d duplicate %v", round, i, r, rooms[i], wantSeq, dup)
			}
		}
	}
	var listed []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("listing does not end: %v", listed)
		}
		page, err := cl.Rooms(ctx, api.RoomsRequest{Prefix: "team/", After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Rooms) > 7 {
			t.Fatalf("a page of %d rooms, limit 7", len(page.Rooms))
		}
		for _, r := range page.Rooms {
			listed = append(listed, r.Room)
			if r.LastSeq == 0 || r.Epoch == "" {
				t.Fatalf("room %+v", r)
			}
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if !slices.Equal(listed, rooms) {
		t.Fatalf("listed %v, want %v", listed, rooms)
	}
}

func TestOpenAPIListsEveryOp(t *testing.T) {
	c := startCluster(t, serverapi.Config{Keys: []string{key}})
	resp, err := http.Get(c.HTTP(0) + serverapi.Prefix + "openapi.json") // no key: it is public
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	for _, op := range api.Ops {
		if doc.Paths[serverapi.Prefix+op]["post"] == nil {
			t.Errorf("the description has no POST %s%s", serverapi.Prefix, op)
		}
	}
	if len(doc.Paths) != len(api.Ops)+1 {
		t.Errorf("the description has %d paths, want the %d ops and itself", len(doc.Paths), len(api.Ops))
	}
}

func TestParseKeys(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a", "a"},
		{" a , b ,,c ", "a|b|c"},
		{"# keys\nnew-key\n\nold-key, older\n  # retired\n", "new-key|old-key|older"},
		{"", ""},
	} {
		if got := strings.Join(serverapi.ParseKeys(tt.in), "|"); got != tt.want {
			t.Errorf("ParseKeys(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
