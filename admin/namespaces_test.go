package admin_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
)

// A room shows the config it follows: its namespace's rule, with its own
// settings on top; bad rules are refused before they reach the cluster.
func TestAdminNamespaces(t *testing.T) {
	c := startCluster(t, testcluster.Options{Nodes: 3, Groups: 4})
	ctx := eventually.Within(t, 40*time.Second)
	cl := admin.NewClient(c.HTTP(0), token)
	propose(t, c.Node(0), fsm.Command{Op: fsm.OpPublish, Room: "chat:a", Member: "alice", Data: []byte(`1`)})
	five := uint64(5)
	if _, err := cl.ConfigureRoom(ctx, "chat:own", admin.RoomConfigChange{HistoryMaxCount: &five}); err != nil {
		t.Fatal(err)
	}

	off, ten, day := false, uint64(10), admin.Duration(24*time.Hour)
	ns, err := cl.SetNamespace(ctx, admin.Namespace{Prefix: "chat:", RoomConfigChange: admin.RoomConfigChange{
		HistoryMaxCount: &ten, HistoryMaxAge: &day, ClientPublish: &off, MaxMembers: &five}})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Revision == 0 || len(ns.Namespaces) != 1 || *ns.Namespaces[0].MaxMembers != 5 || ns.Namespaces[0].KeyWindowAge != nil {
		t.Fatalf("after set: %+v", ns)
	}
	// Every node reads the rules from the meta group; rooms follow them
	// once their group's leader has carried them into the group's log.
	for i := range 3 {
		other := admin.NewClient(c.HTTP(i), token)
		for _, room := range []string{"chat:a", "chat:own"} {
			var r *admin.Room
			for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if r, err = other.Room(ctx, room); err != nil {
					t.Fatal(err)
				}
				if !r.Config.ClientPublish || time.Now().After(end) {
					break
				}
			}
			want := uint64(10)
			if room == "chat:own" {
				want = 5
			}
			if own := len(r.OwnSettings) == 1 && r.OwnSettings[0] == "history_max_count"; own != (room == "chat:own") {
				t.Fatalf("node %d: %s own settings %v", i+1, room, r.OwnSettings)
			}
			if r.Config.ClientPublish || r.Config.MaxMembers != 5 || r.Config.HistoryMaxCount != want ||
				r.Config.HistoryMaxAge != day || !r.Config.PresenceHistory {
				t.Fatalf("node %d: %s config %+v", i+1, room, r.Config)
			}
		}
	}

	zero, noAge := uint64(0), admin.Duration(0)
	_, err = cl.SetNamespace(ctx, admin.Namespace{Prefix: "x:", RoomConfigChange: admin.RoomConfigChange{KeyWindowCount: &zero, KeyWindowAge: &noAge}})
	apiErr(t, "unbounded key window", err, http.StatusBadRequest, "invalid")
	_, err = cl.SetNamespace(ctx, admin.Namespace{Prefix: "x\x01", RoomConfigChange: admin.RoomConfigChange{MaxMembers: &five}})
	apiErr(t, "control character in the prefix", err, http.StatusBadRequest, "bad_request")
	_, err = cl.SetNamespace(ctx, admin.Namespace{Prefix: "x:"})
	apiErr(t, "no options", err, http.StatusBadRequest, "bad_request")
	_, err = cl.DeleteNamespace(ctx, "nope:")
	apiErr(t, "missing namespace", err, http.StatusNotFound, "namespace_not_found")
	if status, e := raw(t, http.MethodDelete, c.HTTP(0)+admin.Prefix+"namespaces", token, ""); status != http.StatusBadRequest {
		t.Fatalf("delete without a prefix: %d %+v", status, e)
	}
	if ns, err = cl.DeleteNamespace(ctx, "chat:"); err != nil || len(ns.Namespaces) != 0 {
		t.Fatalf("delete: %+v, %v", ns, err)
	}
}
