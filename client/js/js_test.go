package heraldjs

import (
	"os/exec"
	"strings"
	"testing"
)

func TestEmbedded(t *testing.T) {
	if !strings.Contains(Source, "export class Herald") || !strings.Contains(Types, "export class Herald") {
		t.Fatal("herald.js or herald.d.ts is not embedded")
	}
}

// TestNode runs herald.test.js with Node's test runner where Node is
// installed; web's browser tests run the same file in Chromium.
func TestNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the browser tests in web run these unit tests in Chromium")
	}
	out, err := exec.Command(node, "--test", "herald.test.js").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}
