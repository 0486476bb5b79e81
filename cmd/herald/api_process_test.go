package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/wstest"
)

// herald api against serve processes: a publish through the server API
// is committed and read by sockets on another node, its key makes a
// repeat a duplicate, and keys from a rotation file are both accepted.
func TestAPIPublishOnServeProcesses(t *testing.T) {
	dir := t.TempDir()
	const oldKey, newKey = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
	keyFile := writePrivate(t, filepath.Join(dir, "api-keys"), []byte("# rotating\n"+newKey+"\n"+oldKey+"\n"))
	c := startServeCluster(t, dir, 3, append([]string{"--insecure-auth", "--groups", "4", "--api-key-file", keyFile}, fastElections...)...)
	run := func(key string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(heraldBin, append([]string{"api", "--url", c.url(0)}, args...)...)
		cmd.Env = append(os.Environ(), "HERALD_API_KEY="+key)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("herald api %s: %v", strings.Join(args, " "), err)
		return "", 0
	}

	out, code := run(newKey, "publish", "lobby", `{"text": "from the backend"}`, "--key", "job-1")
	if code != 0 || !strings.Contains(out, "published to lobby at seq 1") {
		t.Fatalf("publish: exit %d\n%s", code, out)
	}
	out, code = run(oldKey, "--json", "publish", "lobby", `{"text": "from the backend"}`, "--key", "job-1")
	var res struct {
		Seq       uint64
		Duplicate bool
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Seq != 1 || !res.Duplicate {
		t.Fatalf("repeat with the same key and the old key: exit %d\n%s", code, out)
	}

	// A socket on another node reads it, from the server's member.
	ws := wstest.Login(t, c.ws(2), "bob")
	h := ws.Call("history", wstest.Obj{"room": "lobby"})
	events, _ := h["events"].([]any)
	if h["ok"] != true || len(events) != 1 {
		t.Fatalf("history over the socket: %v", h)
	}
	ev := events[0].(map[string]any)
	if ev["member"] != "@server" || ev["data"].(map[string]any)["text"] != "from the backend" {
		t.Fatalf("event %v", ev)
	}

	out, code = run(newKey, "history", "lobby")
	if code != 0 || !strings.Contains(out, `{"text":"from the backend"}`) {
		t.Fatalf("history: exit %d\n%s", code, out)
	}
	// A node's client address reaches the others' view of the meta group
	// a moment after it is ready.
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, code = run(newKey, "--json", "info")
		var info struct {
			Nodes []struct {
				ClientURL string `json:"client_url"`
			}
		}
		if code != 0 || json.Unmarshal([]byte(out), &info) != nil || len(info.Nodes) != 3 {
			t.Fatalf("info: exit %d\n%s", code, out)
		}
		if info.Nodes[2].ClientURL == c.url(2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("info does not list node 3's client URL:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A user op reaches the socket on node 3 through node 1, which
	// forwards it with the key it came with.
	out, code = run(oldKey, "disconnect", "bob", "--code", "4100", "--reason", "bye", "--block-for", "5s")
	if code != 0 || !regexp.MustCompile(`(?m)^n3\s+1\s*$`).MatchString(out) || !strings.Contains(out, "bob is refused until") {
		t.Fatalf("disconnect: exit %d\n%s", code, out)
	}
	out, code = run(newKey, "refresh", "bob")
	if code != exitUsage || !strings.Contains(out, "--expire-in") {
		t.Fatalf("refresh without an expiry: exit %d\n%s", code, out)
	}

	out, code = run("wrong-key-0123456789", "publish", "lobby", `1`)
	if code != exitError || !strings.Contains(out, "unauthorized") || !strings.Contains(out, "--api-key") {
		t.Fatalf("a wrong key: exit %d\n%s", code, out)
	}
	out, code = run(newKey, "publish", "lobby", "not json")
	if code != exitUsage || !strings.Contains(out, "not JSON") {
		t.Fatalf("data that is not JSON: exit %d\n%s", code, out)
	}
	out, code = run(newKey, "publish", "lobby", `2`, "--expect-seq", "7")
	if code != exitError || !strings.Contains(out, "conflict") {
		t.Fatalf("a stale --expect-seq: exit %d\n%s", code, out)
	}
}

func TestServeRefusesShortAPIKey(t *testing.T) {
	ports := freePorts(t, 2)
	p := startProc(t, "serve", "--node-id", "n1", "--data-dir", t.TempDir(), "--api-key", "short", "--insecure-auth",
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]))
	if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.output(), "at least 16") {
		t.Fatalf("exit %d\n%s", code, p.output())
	}
}
