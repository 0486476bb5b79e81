package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/wstest"
)

// Namespace rules given to a new cluster with --namespaces-file and
// changed with herald admin namespaces hold on every node's websocket.
func TestNamespacesOnServeProcesses(t *testing.T) {
	dir := t.TempDir()
	nsFile := writePrivate(t, filepath.Join(dir, "namespaces.json"), []byte(`{"namespaces": [{"prefix": "boot:", "members_only": true}]}`))
	c := startServeCluster(t, dir, 3, append([]string{"--namespaces-file", nsFile, "--insecure-auth", "--groups", "4", "--admin-token", "secret"}, fastElections...)...)
	// publishCode is a socket publish's error code on every node, once they
	// agree ("" for ok); rules reach the groups within moments.
	publishCode := func(room string, want string) {
		t.Helper()
		for i := range 3 {
			conn := wstest.Login(t, c.ws(i), "alice")
			var got string
			for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				r, _ := conn.TryCall("publish", wstest.Obj{"room": room, "data": 1})
				got = ""
				if r["ok"] != true {
					e, _ := r["error"].(map[string]any)
					got, _ = e["code"].(string)
				}
				if got == want || time.Now().After(end) {
					break
				}
			}
			if got != want {
				t.Fatalf("node %d: publish to %s answered %q, want %q", i+1, room, got, want)
			}
		}
	}

	publishCode("boot:1", "forbidden")
	out := c.mustAdmin(1, "namespaces", "set", "chat:", "--history-max-count", "1000", "--history-max-age", "24h",
		"--client-publish=false", "--presence-history=false")
	wantContains(t, "namespaces set", out, `"boot:"`, `"chat:"`, "1000", "24h0m0s")
	publishCode("chat:lobby", "forbidden")
	publishCode("other", "")

	var list admin.Namespaces
	if err := json.Unmarshal([]byte(c.mustAdmin(1, "--json", "namespaces", "list")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Namespaces) != 2 || list.Revision == 0 {
		t.Fatalf("namespaces list: %+v", list)
	}
	chat := list.Namespaces[1]
	if chat.Prefix != "chat:" || chat.ClientPublish == nil || *chat.ClientPublish || chat.PresenceHistory == nil ||
		*chat.PresenceHistory || chat.MembersOnly != nil || chat.HistoryMaxCount == nil || *chat.HistoryMaxCount != 1000 {
		t.Fatalf("the chat: rule reads back as %+v", chat)
	}

	// The empty prefix is the rule of rooms no other prefix matches.
	c.mustAdmin(1, "namespaces", "set", "", "--members-only")
	publishCode("other", "forbidden")
	publishCode("chat:lobby", "forbidden")

	c.mustAdmin(1, "namespaces", "delete", "chat:")
	c.mustAdmin(1, "namespaces", "delete", "")
	publishCode("chat:lobby", "")
	if out, err := c.admin(1, "namespaces", "delete", "chat:"); err == nil || !strings.Contains(out, "namespace_not_found") {
		t.Fatalf("deleting a missing namespace: %v\n%s", err, out)
	}
	if out, err := c.admin(1, "namespaces", "set", "x:"); err == nil || !strings.Contains(out, "at least one of") {
		t.Fatalf("a rule without options: %v\n%s", err, out)
	}
}
