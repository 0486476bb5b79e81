package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront/auth"
)

const token = "t"

// startCluster starts a test cluster with the admin API on every node.
func startCluster(t *testing.T, opts testcluster.Options) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, opts)
	for i := range c.Len() {
		c.Node(i).Front().Handle(admin.Prefix, admin.Handler(c.Node(i), admin.Options{Token: token}))
	}
	return c
}

// apiErr asserts that err is an *admin.APIError with the given status and
// code.
func apiErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var ae *admin.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("%s: error %v, want an API error %d %s", what, err, status, code)
	}
	if ae.Status != status || ae.Code != code || ae.Message == "" {
		t.Fatalf("%s: %d %s %q, want %d %s with a message", what, ae.Status, ae.Code, ae.Message, status, code)
	}
}

// raw sends a request with an arbitrary body and returns the status and the
// error body.
func raw(t *testing.T, method, url, tok, body string) (int, admin.APIError) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: content type %q, body %s", method, url, ct, b)
	}
	var env struct {
		Error admin.APIError `json:"error"`
	}
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			t.Fatalf("%s %s: %d with body %s, want a JSON error", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, env.Error
}

func TestAdminAuth(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 3, Groups: 2})
	c.Node(0).Front().Handle(admin.Prefix, admin.Handler(c.Node(0), admin.Options{Token: token}))
	dev := admin.Handler(c.Node(1), admin.Options{AllowNoToken: true})
	c.Node(1).Front().Handle(admin.Prefix, dev)
	c.Node(2).Front().Handle(admin.Prefix, admin.Handler(c.Node(2), admin.Options{}))
	ctx := eventually.Within(t, 30*time.Second)

	_, err := admin.NewClient(c.HTTP(0), "").Nodes(ctx)
	apiErr(t, "no token", err, http.StatusUnauthorized, "missing_token")
	_, err = admin.NewClient(c.HTTP(0), "wrong").Nodes(ctx)
	apiErr(t, "wrong token", err, http.StatusUnauthorized, "invalid_token")
	_, err = admin.NewClient(c.HTTP(0), "tt").Nodes(ctx)
	apiErr(t, "longer token", err, http.StatusUnauthorized, "invalid_token")
	req, _ := http.NewRequest("GET", c.HTTP(0)+admin.Prefix+"nodes", nil)
	req.Header.Set("Authorization", "Basic dDp0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("basic auth: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	nodes, err := admin.NewClient(c.HTTP(0), token).Nodes(ctx)
	if err != nil || len(nodes) != 3 {
		t.Fatalf("right token: %v, %d nodes", err, len(nodes))
	}

	// Development mode: loopback clients need no token, others are refused.
	if nodes, err := admin.NewClient(c.HTTP(1), "").Nodes(ctx); err != nil || len(nodes) != 3 {
		t.Fatalf("no token from loopback in dev mode: %v, %d nodes", err, len(nodes))
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", admin.Prefix+"nodes", nil)
	r.RemoteAddr = "192.0.2.7:5000"
	dev.ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "not_loopback") {
		t.Fatalf("dev mode from a remote address: %d %s", rec.Code, rec.Body)
	}

	// No token configured and no dev mode: everything is refused.
	_, err = admin.NewClient(c.HTTP(2), "anything").Nodes(ctx)
	apiErr(t, "no token configured", err, http.StatusForbidden, "no_token_configured")

	// Unknown paths and methods answer in JSON too.
	if code, e := raw(t, "GET", c.HTTP(0)+admin.Prefix+"nope", token, ""); code != 404 || e.Code != "not_found" {
		t.Fatalf("unknown endpoint: %d %+v", code, e)
	}
	if code, e := raw(t, "DELETE", c.HTTP(0)+admin.Prefix+"status", token, ""); code != 405 || e.Code != "method_not_allowed" {
		t.Fatalf("wrong method: %d %+v", code, e)
	}
	// Authentication comes before routing: an unknown path without a
	// token tells nothing.
	if code, _ := raw(t, "GET", c.HTTP(0)+admin.Prefix+"nope", "", ""); code != 401 {
		t.Fatalf("unknown endpoint without a token: %d", code)
	}
}

// holderAndOutsider picks a node holding a replica of g and one not.
func holderAndOutsider(t *testing.T, st *admin.Status, g uint64) (holder, outsider string) {
	t.Helper()
	grp := st.GroupList[g]
	var in []string
	for _, r := range grp.Replicas {
		in = append(in, r.Node)
	}
	for _, n := range st.Nodes {
		if !slices.Contains(in, n.ID) {
			outsider = n.ID
		}
	}
	for _, id := range in {
		if id != grp.Leader {
			holder = id
		}
	}
	if holder == "" || outsider == "" {
		t.Fatalf("group %d: replicas %v of nodes %v: no follower and outsider", g, in, st.Nodes)
	}
	return holder, outsider
}

func TestAdminStatusGroupsMoveTransferSnapshot(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 4, Groups: 4, Replication: 3})
	ctx := eventually.Within(t, 50*time.Second)
	cl := admin.NewClient(c.HTTP(0), token)

	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "n1" || st.ClusterID != "test" || st.Groups != 4 || st.Replication != 3 || st.StateSource != "meta" || st.Partial {
		t.Fatalf("status header: %+v", st)
	}
	if st.Health.Verdict != admin.HealthOK {
		t.Errorf("health of a fresh cluster: %+v", st.Health)
	}
	if len(st.Nodes) != 4 || len(st.GroupList) != 5 {
		t.Fatalf("status has %d nodes and %d groups, want 4 and 5 (meta + 4)", len(st.Nodes), len(st.GroupList))
	}
	replicas, leads := 0, 0
	for _, n := range st.Nodes {
		if n.State != meta.NodeActive || n.Epoch == 0 || n.PeerAddr == "" || n.ClientAddr == "" || n.LeaseExpired {
			t.Errorf("node %+v", n)
		}
		replicas += n.Replicas
		leads += n.Leads
	}
	if replicas != 12 || leads != 4 {
		t.Errorf("nodes hold %d replicas and lead %d groups, want 12 and 4", replicas, leads)
	}
	for _, g := range st.GroupList {
		if g.Leader == "" || g.Term == 0 || g.CommitIndex == 0 || g.Error != "" {
			t.Errorf("group %d: %+v", g.ID, g)
		}
		if !g.Meta && len(g.Replicas) != 3 {
			t.Errorf("group %d has replicas %+v", g.ID, g.Replicas)
		}
		for _, r := range g.Replicas {
			if !r.Assigned || !r.Member || !r.Voter || r.Status == nil || r.Status.Error != "" || r.Status.State == "" {
				t.Errorf("group %d replica %+v (status %+v)", g.ID, r, r.Status)
			}
		}
	}
	if !st.Rooms.Approximate || st.Rooms.GroupsTotal != 4 || st.Rooms.GroupsCounted+len(st.Rooms.Uncounted) != 4 {
		t.Errorf("rooms: %+v", st.Rooms)
	}

	list, err := cl.Groups(ctx)
	if err != nil || len(list.Groups) != 5 || list.Partial {
		t.Fatalf("groups list: %v %+v", err, list)
	}
	for _, g := range list.Groups {
		if g.Leader == "" || (!g.Meta && len(g.Replicas) != 3) || slices.ContainsFunc(g.Replicas, func(r admin.Replica) bool { return r.Status != nil }) {
			t.Errorf("group list entry %+v", g)
		}
	}
	g1, err := cl.Group(ctx, 1)
	if err != nil || g1.ID != 1 || g1.Leader == "" || len(g1.Replicas) != 3 || g1.Replicas[0].Status == nil {
		t.Fatalf("group 1: %v %+v", err, g1)
	}

	// Move a follower's replica of group 1 to the node without one.
	from, to := holderAndOutsider(t, st, 1)
	moved, err := cl.MoveReplica(ctx, 1, from, to)
	if err != nil {
		t.Fatalf("move group 1 from %s to %s: %v", from, to, err)
	}
	var now []string
	for _, r := range moved.Replicas {
		if r.Assigned {
			now = append(now, r.Node)
		}
	}
	if len(now) != 3 || slices.Contains(now, from) || !slices.Contains(now, to) {
		t.Fatalf("after moving group 1 from %s to %s it has replicas %v", from, to, now)
	}
	// Moving again is refused, since from holds no replica, and the
	// message says the move looks done.
	_, err = cl.MoveReplica(ctx, 1, from, to)
	apiErr(t, "the same move again", err, 409, "not_a_replica")
	if ae := (*admin.APIError)(nil); errors.As(err, &ae) && !strings.Contains(ae.Message, "that move is done") {
		t.Errorf("the same move again: %q does not say the move looks done", ae.Message)
	}
	_, err = cl.MoveReplica(ctx, 1, from, to+"x")
	apiErr(t, "move to an unknown node", err, 404, "node_not_found")
	_, err = cl.MoveReplica(ctx, 1, now[0], now[1])
	apiErr(t, "move onto a node that has a replica", err, 409, "already_replica")
	_, err = cl.MoveReplica(ctx, 1, "ghost", from)
	apiErr(t, "move from an unknown node", err, 404, "node_not_found")
	_, err = cl.MoveReplica(ctx, 1, "ghost", now[0])
	apiErr(t, "move from an unknown node to a replica", err, 404, "node_not_found")
	_, err = cl.MoveReplica(ctx, 9, from, to)
	apiErr(t, "move of an unknown group", err, 404, "group_not_found")
	_, err = cl.MoveReplica(ctx, 0, from, to)
	apiErr(t, "move of the meta group", err, 400, "bad_request")

	// Hand group 2's leadership to a follower.
	g2, err := cl.Group(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	var follower, outsider string
	for _, n := range st.Nodes {
		if !slices.ContainsFunc(g2.Replicas, func(r admin.Replica) bool { return r.Node == n.ID }) {
			outsider = n.ID
		}
	}
	for _, r := range g2.Replicas {
		if r.Node != g2.Leader {
			follower = r.Node
		}
	}
	after, err := cl.TransferLeader(ctx, 2, follower)
	if err != nil || after.Leader != follower {
		t.Fatalf("transfer group 2 from %s to %s: %v, leader now %q", g2.Leader, follower, err, after.Leader)
	}
	if ls, err := c.Node(3).Host().LeaderStatus(ctx, 2); err != nil || ls.LeaderID != follower {
		t.Fatalf("group 2's leader as node 4 finds it: %q, %v", ls.LeaderID, err)
	}
	_, err = cl.TransferLeader(ctx, 2, outsider)
	apiErr(t, "transfer to a node without a replica", err, 409, "not_a_voter")
	_, err = cl.TransferLeader(ctx, 2, "ghost")
	apiErr(t, "transfer to an unknown node", err, 404, "node_not_found")

	// Snapshots of every local group, and of one.
	rep, err := cl.Snapshot(ctx, admin.SnapshotRequest{})
	if err != nil || rep.Failed != 0 || len(rep.Groups) != len(c.Node(0).Host().LocalGroups()) {
		t.Fatalf("snapshot of all local groups: %v %+v", err, rep)
	}
	local := c.Node(0).Host().LocalGroups()
	one := local[len(local)-1]
	rep, err = cl.Snapshot(ctx, admin.SnapshotRequest{Group: &one})
	if err != nil || len(rep.Groups) != 1 || rep.Groups[0].Group != one || rep.Groups[0].Error != "" {
		t.Fatalf("snapshot of group %d: %v %+v", one, err, rep)
	}
	missing := uint64(99)
	_, err = cl.Snapshot(ctx, admin.SnapshotRequest{Group: &missing})
	apiErr(t, "snapshot of an unknown group", err, 404, "group_not_found")
	for g := uint64(1); g <= 4; g++ {
		if !slices.Contains(local, g) {
			_, err = cl.Snapshot(ctx, admin.SnapshotRequest{Group: &g})
			apiErr(t, "snapshot of a group without a local replica", err, 404, "no_local_replica")
			break
		}
	}

	st, err = cl.Status(ctx)
	if err != nil || st.Health.Verdict != admin.HealthOK {
		t.Fatalf("status after the changes: %v %+v", err, st.Health)
	}
}

// propose commits a room command through node n under the protocol's
// retry rules: a publish gets a key, so that a write whose outcome was
// lost (a leader that stepped down under load) is repeated harmlessly.
func propose(t *testing.T, n *herald.Node, cmd fsm.Command) *fsm.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cmd.Op == fsm.OpPublish && cmd.Key == "" {
		cmd.Key = fmt.Sprintf("admin-test-%d", proposeKeys.Add(1))
	}
	res, perr := rooms.Commit(ctx, n.Rooms(), cmd, cmd.Key != "")
	if perr != nil {
		t.Fatal(perr)
	}
	return res
}

var proposeKeys atomic.Uint64

func TestAdminRooms(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 3, Groups: 4})
	ctx := eventually.Within(t, 40*time.Second)
	cl := admin.NewClient(c.HTTP(2), token)
	const room = "team/general" // a slash must survive the path
	propose(t, c.Node(0), fsm.Command{Op: fsm.OpJoin, Room: room, Member: "alice", Meta: []byte(`{"nick":"al"}`)})
	propose(t, c.Node(1), fsm.Command{Op: fsm.OpJoin, Room: room, Member: "bob", Meta: []byte{0xff, 0x00}})
	for i := range 5 {
		propose(t, c.Node(0), fsm.Command{Op: fsm.OpPublish, Room: room, Member: "alice", Data: fmt.Appendf(nil, "m%d", i)})
	}

	r, err := cl.Room(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if r.Room != room || r.Group != c.Node(0).Host().GroupForKey(room) || r.Epoch == 0 || r.LastSeq != 7 || r.FirstSeq != 1 ||
		r.MemberCount != 2 || len(r.Members) != 2 || r.Config.HistoryMaxCount != fsm.DefaultRoomConfig.HistoryMaxCount {
		t.Fatalf("room: %+v", r)
	}
	if r.Members[0].Name != "alice" || r.Members[0].Meta != `{"nick":"al"}` || string(r.Members[1].MetaBase64) != "\xff\x00" {
		t.Fatalf("members: %+v", r.Members)
	}

	// Keep two events only: the history starts at seq 6 at once.
	two, age := uint64(2), admin.Duration(time.Hour)
	r, err = cl.ConfigureRoom(ctx, room, admin.RoomConfigChange{HistoryMaxCount: &two, HistoryMaxAge: &age})
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.HistoryMaxCount != 2 || r.Config.HistoryMaxAge != age || r.FirstSeq != 6 || r.LastSeq != 7 ||
		r.Config.KeyWindowCount != fsm.DefaultRoomConfig.KeyWindowCount {
		t.Fatalf("room after config: %+v", r)
	}
	_, err = cl.ConfigureRoom(ctx, room, admin.RoomConfigChange{})
	apiErr(t, "config without fields", err, 400, "bad_request")
	zero := uint64(0)
	noAge := admin.Duration(0)
	_, err = cl.ConfigureRoom(ctx, room, admin.RoomConfigChange{KeyWindowCount: &zero, KeyWindowAge: &noAge})
	apiErr(t, "config the state machine refuses", err, 400, "invalid")
	neg := admin.Duration(-time.Second)
	_, err = cl.ConfigureRoom(ctx, room, admin.RoomConfigChange{HistoryMaxAge: &neg})
	apiErr(t, "negative age", err, 400, "bad_request")
	url := c.HTTP(2) + admin.Prefix + "rooms/x/config"
	for body, code := range map[string]string{
		`{"history_max_count": "ten"}`:   "bad_json",
		`{"history_max_cont": 10}`:       "bad_json",
		`{"history_max_age": "forever"}`: "bad_json",
		`{"history_max_count": 1} {}`:    "bad_json",
		`[`:                              "bad_json",
	} {
		if status, e := raw(t, "POST", url, token, body); status != 400 || e.Code != code {
			t.Errorf("config body %s: %d %+v, want 400 %s", body, status, e, code)
		}
	}
	if status, e := raw(t, "POST", url, token, `{"history_max_age":"`+strings.Repeat("1", admin.MaxBodyBytes)+`s"}`); status != 413 || e.Code != "too_large" {
		t.Errorf("huge body: %d %+v", status, e)
	}
	if status, e := raw(t, "GET", c.HTTP(2)+admin.Prefix+"rooms/a%01b", token, ""); status != 400 {
		t.Errorf("room name with a control character: %d %+v", status, e)
	}

	del, err := cl.DeleteRoom(ctx, room)
	if err != nil || del.Epoch != r.Epoch || del.LastSeq != 7 {
		t.Fatalf("delete: %v %+v", err, del)
	}
	_, err = cl.Room(ctx, room)
	apiErr(t, "show a deleted room", err, 404, "room_not_found")
	_, err = cl.DeleteRoom(ctx, room)
	apiErr(t, "delete a deleted room", err, 404, "room_not_found")
	// The next use starts a new epoch.
	res := propose(t, c.Node(0), fsm.Command{Op: fsm.OpPublish, Room: room, Member: "carol", Data: []byte("back")})
	if r2, err := cl.Room(ctx, room); err != nil || r2.Epoch <= r.Epoch || r2.LastSeq != res.Seq || r2.MemberCount != 0 {
		t.Fatalf("room after re-creation: %v %+v", err, r2)
	}
}

// startSpare starts a node that belongs to no cluster, with the admin API.
func startSpare(t *testing.T, c *testcluster.Cluster, id string) *herald.Node {
	t.Helper()
	dir := t.TempDir()
	n, err := herald.Start(eventually.Within(t, 30*time.Second), herald.Config{
		NodeID: id, DataDir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", ClusterSecret: c.ClusterSecret(),
		Auth: auth.Config{Insecure: true}, Timing: testcluster.Timing(), LeaseTTL: 3 * time.Second, StopTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Crash() })
	n.Front().Handle(admin.Prefix, admin.Handler(n, admin.Options{Token: token}))
	return n
}

func waitJob(t *testing.T, cl *admin.Client, j *admin.Job) *admin.Job {
	t.Helper()
	var seen []int
	end, err := cl.WaitJob(eventually.Within(t, 45*time.Second), j.ID, 100*time.Millisecond, func(j *admin.Job) {
		if len(seen) == 0 || seen[len(seen)-1] != j.Done {
			seen = append(seen, j.Done)
		}
	})
	if err != nil {
		t.Fatalf("wait for job %s: %v", j.ID, err)
	}
	if end.State != admin.JobSucceeded {
		t.Fatalf("job %s (%s) ended %s: %+v", end.ID, end.Kind, end.State, end.Error)
	}
	if !slices.IsSorted(seen) || end.Done != end.Total {
		t.Fatalf("job %s progress %v, ended %d of %d", end.ID, seen, end.Done, end.Total)
	}
	return end
}

func replicaCounts(t *testing.T, cl *admin.Client) map[string]int {
	t.Helper()
	nodes, err := cl.Nodes(eventually.Within(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range nodes {
		out[n.ID] = n.Replicas
	}
	return out
}

func TestAdminJoinRebalanceDecommission(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 3, Groups: 6, Replication: 3})
	ctx := eventually.Within(t, 55*time.Second)
	cl := admin.NewClient(c.HTTP(0), token)

	spare := startSpare(t, c, "n4")
	scl := admin.NewClient(spare.URL(), token)
	st, err := scl.Status(ctx)
	if err != nil || st.Health.Verdict != admin.HealthUnavailable {
		t.Fatalf("status of a node outside any cluster: %v %+v", err, st)
	}
	_, err = scl.AddNode(ctx, nil)
	apiErr(t, "add without seeds", err, 400, "bad_request")
	n4, err := scl.AddNode(ctx, []string{c.Node(0).PeerAddr()})
	if err != nil || n4.ID != "n4" || !n4.Self || n4.Replicas != 0 || n4.Epoch == 0 {
		t.Fatalf("add n4: %v %+v", err, n4)
	}
	_, err = scl.AddNode(ctx, []string{c.Node(0).PeerAddr()})
	apiErr(t, "add a node twice", err, 409, "already_member")

	plan, err := cl.PlanRebalance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Moves) == 0 || plan.Replicas["n4"].Before != 0 || plan.Replicas["n4"].After < 4 || plan.LeadersKnown != 6 {
		t.Fatalf("plan with an empty n4: %+v", plan)
	}
	if counts := replicaCounts(t, cl); counts["n4"] != 0 {
		t.Fatalf("a dry run moved replicas: %v", counts)
	}
	// Interrupt a rebalance, most likely in the middle of a move; running
	// it again finishes that move first and then the rest.
	j, err := cl.Rebalance(ctx)
	if err != nil || j.Kind != admin.JobRebalance || j.ID == "" {
		t.Fatalf("start rebalance: %v %+v", err, j)
	}
	_, err = cl.Rebalance(ctx)
	apiErr(t, "a second rebalance while one runs", err, 409, "job_running")
	// Cancel once a replica move is under way: the meta group records it
	// until it completes.
	eventually.Nil(t, 20*time.Second, "a replica move under way", func() error {
		cur, err := cl.Job(ctx, j.ID)
		switch {
		case err != nil:
			return err
		case cur.Ended():
			return nil
		case cur.Current == nil:
			return errors.New("no current move")
		case c.Node(0).Host().Cluster().Ops[cur.Current.Group] == nil:
			return fmt.Errorf("%v not begun", cur.Current)
		}
		return nil
	})
	canceled, err := cl.CancelJob(ctx, j.ID)
	switch {
	case err != nil:
		t.Fatal(err)
	case canceled.State == admin.JobSucceeded:
		t.Logf("the rebalance finished before it could be canceled: %+v", canceled)
	case canceled.State != admin.JobCanceled || canceled.Error == nil || canceled.Error.Code != "canceled" || canceled.Done == canceled.Total:
		t.Fatalf("cancel the rebalance: %+v (error %+v)", canceled, canceled.Error)
	}
	j, err = cl.Rebalance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, cl, j)
	if canceled.State == admin.JobCanceled && len(end.Moves) == 0 && end.Resumed == nil {
		t.Fatalf("the resumed rebalance had nothing to do: %+v", end)
	}
	t.Logf("resumed %v, then %d moves", end.Resumed, len(end.Moves))
	if st, err := cl.Status(ctx); err != nil || st.Health.Verdict != admin.HealthOK {
		t.Fatalf("status after the rebalance: %v %+v", err, st.Health)
	}
	counts := replicaCounts(t, cl)
	lo, hi := 1<<30, 0
	for _, n := range counts {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 || counts["n4"] == 0 {
		t.Fatalf("replicas after the rebalance: %v", counts)
	}
	if jobs, err := cl.Jobs(ctx); err != nil || len(jobs) == 0 || jobs[len(jobs)-1].ID != j.ID {
		t.Fatalf("jobs: %v %+v", err, jobs)
	}

	// Decommission the new node again, through another node.
	_, err = cl.Decommission(ctx, "ghost")
	apiErr(t, "decommission an unknown node", err, 404, "node_not_found")
	dj, err := admin.NewClient(c.HTTP(1), token).Decommission(ctx, "n4")
	if err != nil {
		t.Fatal(err)
	}
	end = waitJob(t, admin.NewClient(c.HTTP(1), token), dj)
	if end.Total != counts["n4"] {
		t.Fatalf("decommission job counted %d replicas, n4 held %d", end.Total, counts["n4"])
	}
	counts = replicaCounts(t, cl)
	if _, ok := counts["n4"]; ok || len(counts) != 3 || counts["n1"] != 6 {
		t.Fatalf("nodes after decommissioning n4: %v", counts)
	}
	_, err = cl.Job(ctx, dj.ID)
	apiErr(t, "a job of another node", err, 404, "job_not_found")
	_, err = cl.Decommission(ctx, "n1")
	apiErr(t, "decommission with too few nodes left", err, 409, "not_enough_nodes")

	// The removed identity is refused for good: a new process under the
	// same id cannot join, and says why.
	again := admin.NewClient(startSpare(t, c, "n4").URL(), token)
	_, err = again.AddNode(ctx, []string{c.Node(0).PeerAddr()})
	apiErr(t, "join under a removed node id", err, 409, "node_removed")
}

func TestAdminRemoveDeadNode(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 4, Groups: 4, Replication: 3})
	ctx := eventually.Within(t, 55*time.Second)
	cl := admin.NewClient(c.HTTP(0), token)
	_, err := cl.RemoveNode(ctx, "n3")
	apiErr(t, "remove a running node", err, 409, "node_alive")
	_, err = cl.RemoveNode(ctx, "n1")
	apiErr(t, "remove the node answering", err, 409, "remove_self")
	held := replicaCounts(t, cl)["n3"]

	// n3 is a meta voter: its removal also shrinks the meta group.
	c.Crash(2)
	st, err := cl.Status(ctx)
	if err != nil || st.Health.Verdict != admin.HealthDegraded || !strings.Contains(strings.Join(st.Health.Reasons, "\n"), "node n3 did not answer for its replicas of") {
		t.Fatalf("status with n3 down: %v %+v", err, st.Health)
	}
	j, err := cl.RemoveNode(ctx, "n3")
	if err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, cl, j)
	if end.Kind != admin.JobRemove || end.Node != "n3" || end.Total != held {
		t.Fatalf("remove job: %+v (n3 held %d)", end, held)
	}
	counts := replicaCounts(t, cl)
	if _, ok := counts["n3"]; ok || counts["n1"]+counts["n2"]+counts["n4"] != 12 {
		t.Fatalf("replicas after removing n3: %v", counts)
	}
	st, err = cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range st.GroupList {
		if g.Leader == "" || slices.ContainsFunc(g.Replicas, func(r admin.Replica) bool { return r.Node == "n3" }) {
			t.Errorf("group %d after removing n3: leader %q, replicas %+v", g.ID, g.Leader, g.Replicas)
		}
	}
}

func TestAdminBadRequests(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 3, Groups: 2})
	base := c.HTTP(0) + admin.Prefix
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "groups/1/move", `{"from":`, 400, "bad_json"},
		{"POST", "groups/1/move", `{"from":"n1"}`, 400, "bad_request"},
		{"POST", "groups/1/move", `{"from":"n1","to":"n1"}`, 400, "bad_request"},
		{"POST", "groups/1/move", `{"from":"n1","to":"n2","timeout":"soon"}`, 400, "bad_json"},
		{"POST", "groups/1/move", `{"from":"n1","to":"n2","timeout":"100h"}`, 400, "bad_request"},
		{"POST", "groups/1/move", `{"from":"n1","to":"n9"}`, 404, "node_not_found"},
		{"POST", "groups/7/move", `{"from":"n1","to":"n2"}`, 404, "group_not_found"},
		{"POST", "groups/x/move", `{"from":"n1","to":"n2"}`, 400, "bad_request"},
		{"POST", "groups/-1/transfer-leader", `{"to":"n2"}`, 400, "bad_request"},
		{"POST", "groups/1/transfer-leader", `{}`, 400, "bad_request"},
		{"POST", "groups/3/transfer-leader", `{"to":"n2"}`, 404, "group_not_found"},
		{"GET", "groups/3", ``, 404, "group_not_found"},
		{"GET", "groups/99999999999999999999", ``, 400, "bad_request"},
		{"GET", "status?timeout=forever", ``, 400, "bad_request"},
		{"POST", "nodes/add", `{"seeds":[""]}`, 400, "bad_request"},
		{"POST", "nodes/add", `{"seeds":["127.0.0.1:1"]}`, 409, "already_member"},
		{"POST", "nodes/n9/decommission", ``, 404, "node_not_found"},
		{"POST", "nodes/n9/remove", ``, 404, "node_not_found"},
		// Every node holds every replica here, so the capacity check
		// alone would refuse these too, with an answer that misleads.
		{"POST", "nodes/n1/remove", ``, 409, "remove_self"},
		{"POST", "nodes/n2/remove", ``, 409, "node_alive"},
		{"GET", "rooms/a%C2%85b", ``, 400, "bad_request"},
		{"DELETE", "rooms/a%C2%9Fb", ``, 400, "bad_request"},
		{"POST", "rooms/%C2%80/config", `{"members_only":true}`, 400, "bad_request"},
		{"GET", "rooms/a%7Fb", ``, 400, "bad_request"},
		{"POST", "groups/1/move", `{"from":"n9","to":"n2"}`, 404, "node_not_found"},
		{"POST", "nodes/n2/decommission", `{"timeout":-5}`, 400, "bad_json"},
		{"POST", "rebalance", `{"bogus":true}`, 400, "bad_json"},
		{"GET", "jobs/nope", ``, 404, "job_not_found"},
		{"DELETE", "jobs/nope", ``, 404, "job_not_found"},
		{"POST", "snapshot", `{"group":-1}`, 400, "bad_json"},
		{"POST", "snapshot", `{"group":5}`, 404, "group_not_found"},
		{"GET", "rooms/nowhere", ``, 404, "room_not_found"},
		{"DELETE", "rooms/nowhere", ``, 404, "room_not_found"},
		{"POST", "rooms/nowhere/config", `{}`, 400, "bad_request"},
		{"PUT", "rooms/nowhere", ``, 405, "method_not_allowed"},
	} {
		status, e := raw(t, tc.method, base+tc.path, token, tc.body)
		if status != tc.status || e.Code != tc.code {
			t.Errorf("%s %s %s: %d %+v, want %d %s", tc.method, tc.path, tc.body, status, e, tc.status, tc.code)
		}
	}
	// The node still serves after all of that.
	if _, err := admin.NewClient(c.HTTP(0), token).Status(eventually.Within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// waitAgreement waits until, for every data group, the voters of its raft
// configuration are exactly the replicas the meta group lists, no
// non-voter is left and no replica change is recorded as in progress.
func waitAgreement(t *testing.T, n *herald.Node, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := n.Host().MetaState(ctx)
		ok := err == nil
		if err != nil {
			last = err.Error()
		}
		for g := uint64(1); ok && g <= st.Groups; g++ {
			ls, err := n.Host().LeaderStatus(ctx, g)
			switch {
			case err != nil:
				ok, last = false, fmt.Sprintf("group %d: %v", g, err)
			case !multiraft.Agrees(st.Replicas[g], ls):
				ok, last = false, fmt.Sprintf("group %d: raft configuration %+v, meta group lists %v", g, ls.Servers, st.Replicas[g])
			case st.Ops[g] != nil:
				ok, last = false, fmt.Sprintf("group %d: %v still recorded", g, st.Ops[g])
			}
		}
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("raft and the meta group still disagree after %v: %s", within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// groupWith finds a data group whose replicas include every node of with
// and none of without.
func groupWith(t *testing.T, n *herald.Node, with, without []string) uint64 {
	t.Helper()
	st, err := n.Host().MetaState(eventually.Within(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for g := uint64(1); g <= st.Groups; g++ {
		r := st.Replicas[g]
		if !slices.ContainsFunc(with, func(id string) bool { return !slices.Contains(r, id) }) &&
			!slices.ContainsFunc(without, func(id string) bool { return slices.Contains(r, id) }) {
			return g
		}
	}
	t.Fatalf("no group holds %v without %v: %v", with, without, st.Replicas)
	return 0
}

// waitListed waits until the meta group lists node as a replica of g.
func waitListed(t *testing.T, n *herald.Node, g uint64, node string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(n.Host().Cluster().Replicas[g], node) {
		if time.Now().After(deadline) {
			t.Fatalf("the meta group never listed %s as a replica of group %d", node, g)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Two moves of one group into the same node, asked of two nodes at once:
// one is refused, and raft and the meta group agree afterwards.
func TestAdminConcurrentMovesOfOneGroup(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 4, Groups: 4, Replication: 3})
	ctx := eventually.Within(t, 90*time.Second)
	g := groupWith(t, c.Node(0), []string{"n1", "n2"}, []string{"n4"})
	cl1, cl2 := admin.NewClient(c.HTTP(0), token), admin.NewClient(c.HTTP(1), token)

	first := make(chan error, 1)
	go func() {
		_, err := cl1.MoveReplica(ctx, g, "n1", "n4")
		first <- err
	}()
	// The second starts once the first has recorded its new replica: the
	// group then lists four replicas, so no replica-count check stops it.
	waitListed(t, c.Node(1), g, "n4")
	_, err2 := cl2.MoveReplica(ctx, g, "n2", "n4")
	err1 := <-first
	t.Logf("move n1 -> n4 on n1: %v; move n2 -> n4 on n2: %v", err1, err2)
	if err1 != nil {
		t.Fatalf("the first move failed: %v", err1)
	}
	var ae *admin.APIError
	if !errors.As(err2, &ae) || ae.Status != 409 || ae.Code != "move_in_progress" && ae.Code != "already_replica" {
		t.Fatalf("second move: %v, want 409 move_in_progress (or already_replica if the first had ended)", err2)
	}
	if ae.Code == "move_in_progress" && !strings.Contains(ae.Message, "from n1 to n4") {
		t.Errorf("the refusal does not name the running move: %s", ae.Message)
	}
	waitAgreement(t, c.Node(2), 30*time.Second)
	// Running the refused move again works against the new replica set.
	_, err := cl2.MoveReplica(ctx, g, "n2", "n1")
	if err != nil {
		t.Fatalf("move after the conflict: %v", err)
	}
	waitAgreement(t, c.Node(2), 30*time.Second)
}

// The node running a move crashes halfway: the meta leader finishes or
// rolls back the move, and raft and the meta group agree again.
func TestAdminMoveOwnerCrashes(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 4, Groups: 4, Replication: 3})
	ctx := eventually.Within(t, 90*time.Second)
	g := groupWith(t, c.Node(0), []string{"n1"}, []string{"n4"})
	cl2 := admin.NewClient(c.HTTP(1), token)
	done := make(chan error, 1)
	go func() {
		_, err := cl2.MoveReplica(ctx, g, "n1", "n4")
		done <- err
	}()
	waitListed(t, c.Node(0), g, "n4")
	c.Crash(1)
	t.Logf("move on the crashed node: %v", <-done)
	waitAgreement(t, c.Node(0), 45*time.Second)
	st, err := c.Node(0).Host().MetaState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Replicas[g]; len(r) != 3 {
		t.Errorf("group %d lists %v after the repair, want 3 replicas", g, r)
	}
}
