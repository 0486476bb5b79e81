package main

import (
	"bytes"
	"strings"
	"testing"
)

// demo runs the scene in a fresh directory and returns its transcript.
func demo(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	if err := run(&buf, t.TempDir(), 1); err != nil {
		t.Fatalf("run: %v\noutput so far:\n%s", err, buf.String())
	}
	return buf.String()
}

func TestRunShowsTheScene(t *testing.T) {
	out := demo(t)
	want := []string{
		// the retried publish is answered with the original seq
		"[4] publish room=lobby member=alice key=alice-1 data={\"text\":\"hi all\"}\n" +
			"    result: seq=3 duplicate=true last_seq=3 error=none\n\n",
		// the stale expect_seq conflicts, the right one succeeds
		"[5] publish room=lobby member=bob expect_seq=2 data={\"text\":\"hey\"}\n" +
			"    result: seq=0 duplicate=false last_seq=3 error=conflict",
		"    result: seq=4 duplicate=false last_seq=4 error=none\n" +
			"    event:  room=lobby epoch=1 seq=4 type=message member=bob",
		// the session expiry removes bob with a leave event
		"removed=1 more=false error=none\n" +
			"    event:  room=lobby epoch=1 seq=5 type=leave member=bob data=-",
		"history of lobby: epoch=1 first_seq=1 last_seq=5 truncated=false\n",
		"members of lobby at seq 5:\n    alice meta={\"name\":\"Alice\"} ephemeral=false joined_seq=1\n\n",
		"restored into group 2 (applied index 7)",
		"    digests equal\n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q\noutput:\n%s", w, out)
		}
	}
	if n := strings.Count(out, "    event:  "); n != 5 {
		t.Errorf("got %d subscription events, want 5 (4 publishes, one a duplicate and one a conflict, deliver 2)\noutput:\n%s", n, out)
	}
	if strings.Contains(out, "    bob meta=") {
		t.Errorf("bob is still listed as a member after his node expired\noutput:\n%s", out)
	}
}

func TestRunIsDeterministic(t *testing.T) {
	// The first line names the directory; everything else must not vary.
	body := func(s string) string { _, rest, _ := strings.Cut(s, "\n"); return rest }
	if a, b := body(demo(t)), body(demo(t)); a != b {
		t.Errorf("two runs differ:\n%s\n---\n%s", a, b)
	}
}
