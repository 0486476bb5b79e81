package heraldbin

import (
	"os/exec"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serve") {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	if _, err := Build(t.TempDir(), "-no-such-flag"); err == nil {
		t.Fatal("a build with bad flags succeeded")
	}
}
