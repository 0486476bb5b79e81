package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront/auth"
)

// runAdmin runs "herald admin ARGS..." in this process and returns what it
// printed and its exit code.
func runAdmin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runAdminContext(t, context.Background(), nil, args...)
}

// watchWriter calls watch with everything written to it.
type watchWriter struct {
	buf   *bytes.Buffer
	watch func(string)
}

func (w watchWriter) Write(p []byte) (int, error) {
	if w.watch != nil {
		w.watch(string(p))
	}
	return w.buf.Write(p)
}

func runAdminContext(t *testing.T, ctx context.Context, watch func(string), args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:      "herald",
		Commands:  []*cli.Command{adminCommand()},
		Writer:    watchWriter{&out, watch},
		ErrWriter: &errOut,
		// The real binary exits with the code; here the code is returned.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.RunContext(ctx, append([]string{"herald", "admin"}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
	case errors.As(err, &ec):
		code = ec.ExitCode()
	default:
		code = -1
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runAdmin(t, args...)
	if code != 0 {
		t.Fatalf("herald admin %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func wantContains(t *testing.T, what, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Fatalf("%s: no %q in:\n%s", what, p, text)
		}
	}
}

// proposeRoom commits cmd as a client following the room layer's retry
// rules would: an election is waited out, a keyed publish whose outcome was
// lost is sent again (it commits once), and so is a join whose outcome was
// lost unless the member is in the room by then. A loaded machine makes
// leaders lose their lease now and then; that is not what these tests check.
func proposeRoom(t *testing.T, n *herald.Node, cmd fsm.Command) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, perr := rooms.Commit(ctx, n.Rooms(), cmd, cmd.Key != "")
		if perr == nil {
			return
		}
		if perr.Code != protocol.CodeUnknownOutcome || cmd.Op != fsm.OpJoin || ctx.Err() != nil {
			t.Fatal(perr)
		}
		m, err := n.Rooms().Members(ctx, cmd.Room, false)
		if err == nil && slices.ContainsFunc(m.Members, func(x fsm.Member) bool { return x.Name == cmd.Member }) {
			return
		}
	}
}

func TestAdminCLI(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 4, Groups: 4, Replication: 3})
	for i := range c.Len() {
		c.Node(i).Front().Handle(admin.Prefix, admin.Handler(c.Node(i), admin.Options{Token: "t"}))
	}
	addr := c.HTTP(0)
	g := []string{"--addr", addr, "--token", "t"}
	args := func(a ...string) []string { return append(append([]string{}, g...), a...) }

	out := mustRun(t, args("status")...)
	wantContains(t, "status", out, "cluster test: 4 groups of 3 replicas", "health: ok", "NODE", "n1*", "active",
		"GROUP", "0 (meta)", "REPLICAS", "rooms: about 0")
	var st admin.Status
	if err := json.Unmarshal([]byte(mustRun(t, args("--json", "status")...)), &st); err != nil || len(st.Nodes) != 4 || len(st.GroupList) != 5 {
		t.Fatalf("status --json: %v %+v", err, st)
	}

	// The address and token may come from the environment.
	t.Setenv("HERALD_ADMIN_ADDR", addr)
	t.Setenv("HERALD_ADMIN_TOKEN", "t")
	out = mustRun(t, "nodes", "list")
	wantContains(t, "nodes list", out, "NODE", "STATE", "EPOCH", "n1*", "n2", "n3", c.Node(1).PeerAddr())

	out = mustRun(t, "groups", "list")
	wantContains(t, "groups list", out, "GROUP", "LEADER", "0 (meta)", "\n4 ")
	gs, err := admin.NewClient(addr, "t").Group(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, r := range gs.Replicas {
		if r.Node != gs.Leader {
			follower = r.Node
		}
	}
	out = mustRun(t, "groups", "show", "1")
	wantContains(t, "groups show", out, "group 1: leader "+gs.Leader, "ROLE", "leader", "follower", "LAG", "CONTACT")
	// Flags after the positional argument, as operators type them.
	out = mustRun(t, "groups", "transfer-leader", "1", "--to", follower)
	wantContains(t, "transfer-leader", out, "group 1 is led by "+follower)
	out = mustRun(t, "--json", "groups", "transfer-leader", "1", "--to="+gs.Leader)
	var grp admin.Group
	if err := json.Unmarshal([]byte(out), &grp); err != nil || grp.Leader != gs.Leader {
		t.Fatalf("transfer-leader --json: %v %s", err, out)
	}

	const room = "lobby"
	proposeRoom(t, c.Node(1), fsm.Command{Op: fsm.OpJoin, Room: room, Member: "alice", Meta: []byte("hi")})
	proposeRoom(t, c.Node(1), fsm.Command{Op: fsm.OpPublish, Room: room, Member: "alice", Key: "x", Data: []byte("x")})
	out = mustRun(t, "rooms", "show", room)
	wantContains(t, "rooms show", out, "room:", "lobby", "last seq:", "2", "MEMBER", "alice")
	out = mustRun(t, "rooms", "config", room, "--history-max-count", "5", "--history-max-age", "1h")
	wantContains(t, "rooms config", out, "history max count:", "5", "history max age:", "1h0m0s")
	var r admin.Room
	if err := json.Unmarshal([]byte(mustRun(t, "--json", "rooms", "show", room)), &r); err != nil ||
		r.Config.HistoryMaxCount != 5 || r.LastSeq != 2 || len(r.Members) != 1 {
		t.Fatalf("rooms show --json: %v %+v", err, r)
	}

	out = mustRun(t, "rebalance", "--dry-run")
	wantContains(t, "rebalance --dry-run", out, "NODE", "REPLICAS", "LEADS", "n1", "3 -> 3")
	out = mustRun(t, "snapshot", "--group", "1")
	wantContains(t, "snapshot", out, "GROUP", "ok", "1 snapshots, 0 failed")
	out = mustRun(t, "rebalance")
	wantContains(t, "rebalance", out, "job n1-1: rebalance", "succeeded")
	out = mustRun(t, "jobs", "list")
	wantContains(t, "jobs list", out, "n1-1", "rebalance", "succeeded")
	out = mustRun(t, "rooms", "delete", room)
	wantContains(t, "rooms delete", out, `room "lobby" deleted`)

	// Errors: a message on stderr and a non-zero exit.
	for _, tc := range []struct {
		args []string
		code int
		text string
	}{
		{[]string{"rooms", "show", room}, 1, "room_not_found"},
		{[]string{"--token", "wrong", "status"}, 1, "the admin token is wrong"},
		{[]string{"--addr", "http://127.0.0.1:1", "status"}, 1, "cannot reach the admin API"},
		{[]string{"groups", "move", "1", "--from", "n1"}, 2, "needs --from NODE and --to NODE"},
		{[]string{"groups", "show", "one"}, 2, "not a number"},
		{[]string{"groups", "show", "1", "--bogus"}, 2, "unknown flag --bogus"},
		{[]string{"groups", "show", "9"}, 1, "group_not_found"},
		{[]string{"nodes", "decommission"}, 2, "exactly one argument"},
		{[]string{"nodes", "remove", "n2"}, 1, "node_alive"},
		{[]string{"groups", "move", "1", "--from", "n99", "--to", gs.Leader}, 1, "node_not_found"},
		{[]string{"rooms", "config", room}, 2, "at least one of"},
		{[]string{"backup", "--out", "x"}, 2, "needs --data-dir"},
	} {
		out, errOut, code := runAdmin(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.text) {
			t.Errorf("herald admin %s: exit %d, stderr %q (stdout %q); want exit %d and %q",
				strings.Join(tc.args, " "), code, errOut, out, tc.code, tc.text)
		}
	}
	if out, _, code := runAdmin(t, "groups", "move", "--help"); code != 0 || !strings.Contains(out, "--from") {
		t.Errorf("groups move --help: exit %d:\n%s", code, out)
	}

	// Ctrl-C stops a job on the node too; running the command again
	// resumes it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interrupt := func(line string) {
		if strings.HasPrefix(line, "job ") {
			cancel() // as soon as the job runs
		}
	}
	out, errOut, code := runAdminContext(t, ctx, interrupt, "nodes", "decommission", "n4")
	if code != exitInterrupted || !strings.Contains(errOut, "run the same command again to resume") {
		t.Fatalf("decommission interrupted: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("interrupted:\n%s%s", out, errOut)
	out = mustRun(t, "nodes", "decommission", "n4")
	t.Logf("resumed:\n%s", out)
	wantContains(t, "decommission", out, "job n1-3: decommission n4", "succeeded", "no longer part of the cluster")
	if out = mustRun(t, "nodes", "list"); strings.Contains(out, "n4") {
		t.Fatalf("n4 is still listed after its decommission:\n%s", out)
	}
}

// startSingle starts a one-node cluster in dir on the given ports ("" for
// free ones).
func startSingle(t *testing.T, dir, clientAddr, peerAddr string, bootstrap bool) *herald.Node {
	t.Helper()
	if clientAddr == "" {
		clientAddr, peerAddr = "127.0.0.1:0", "127.0.0.1:0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := herald.Config{NodeID: "n1", DataDir: dir, ClientAddr: clientAddr, PeerAddr: peerAddr,
		Auth: auth.Config{Insecure: true}, Timing: testcluster.Timing(), StopTimeout: 5 * time.Second}
	var n *herald.Node
	var err error
	// The ports of a node just closed may take a moment to be free again.
	for range 50 {
		if n, err = herald.Start(ctx, cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if bootstrap {
		spec := multiraft.BootstrapSpec{ClusterID: "backup", Groups: 2, Replication: 1,
			Nodes: []multiraft.Peer{{ID: "n1", Addr: n.PeerAddr()}}}
		if err := n.Bootstrap(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	// Ready once the node knows its groups and each has a leader.
	for n.Host().GroupForKey("lobby") == 0 || slices.ContainsFunc([]uint64{1, 2}, func(g uint64) bool { id, _ := n.Host().Leader(g); return id == "" }) {
		if ctx.Err() != nil {
			t.Fatal("the node did not get ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

func TestAdminCLIBackupRestore(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	n := startSingle(t, dir, "", "", true)
	for i := range 10 {
		proposeRoom(t, n, fsm.Command{Op: fsm.OpPublish, Room: "lobby", Member: "a", Key: fmt.Sprintf("m%d", i), Data: fmt.Appendf(nil, "m%d", i)})
	}
	archive := filepath.Join(base, "n1.tar.gz")

	_, errOut, code := runAdmin(t, "backup", "--data-dir", dir, "--out", archive)
	if code != 1 || !strings.Contains(errOut, "in use by a running node") {
		t.Fatalf("backup of a running node: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused backup left %s: %v", archive, err)
	}
	clientAddr, peerAddr := strings.TrimPrefix(n.URL(), "http://"), n.PeerAddr()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, "backup", "--data-dir", dir, "--out", archive)
	wantContains(t, "backup", out, "backed up", archive, "files")
	_, errOut, code = runAdmin(t, "backup", "--data-dir", dir, "--out", archive)
	if code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("backup over an existing file: exit %d, %s", code, errOut)
	}
	_, errOut, code = runAdmin(t, "restore", "--in", archive, "--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a non-empty dir: exit %d, %s", code, errOut)
	}

	restored := filepath.Join(base, "restored")
	var m admin.Manifest
	if err := json.Unmarshal([]byte(mustRun(t, "--json", "restore", "--in", archive, "--data-dir", restored)), &m); err != nil ||
		m.Format != admin.ManifestFormat || len(m.Files) == 0 {
		t.Fatalf("restore --json: %v %+v", err, m)
	}

	// The restored node comes back with its rooms, on the same ports (its
	// cluster state names them).
	n = startSingle(t, restored, clientAddr, peerAddr, false)
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := n.Host().Query(ctx, n.Host().GroupForKey("lobby"), multiraft.Linearizable,
		rooms.Query{Kind: rooms.QueryHistory, Room: "lobby", Limit: 100}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	ans, err := rooms.DecodeAnswer(b)
	if err != nil || ans.Err != nil || ans.History == nil || ans.History.LastSeq != 10 || len(ans.History.Events) != 10 ||
		string(ans.History.Events[9].Data) != "m9" {
		t.Fatalf("history after restore: %v %+v", err, ans)
	}
}
