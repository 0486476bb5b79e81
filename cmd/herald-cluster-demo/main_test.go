package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestDemoWalksThroughFailover(t *testing.T) {
	var buf bytes.Buffer
	if err := demo(&buf, t.TempDir(), 4); err != nil {
		t.Fatalf("demo: %v\noutput so far:\n%s", err, buf.String())
	}
	out := buf.String()
	for _, re := range []string{
		`via n1: seq=1\n   via n2: seq=2\n   via n3: seq=3\n`,
		`via n2: seq=4 duplicate=false\n   via n3: seq=4 duplicate=true\n`,
		`linearizable read on follower n\d: last_seq=4, 4 events`,
		`new leader n\d; a publish through n\d committed .* after the stop, seq=5\n`,
		`digests equal\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", re, out)
		}
	}
	if strings.Count(out, " digest ") != 3 {
		t.Errorf("want three digests:\n%s", out)
	}
}
