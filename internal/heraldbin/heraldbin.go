// Package heraldbin builds the herald binary for tests that run it as a
// process: the command's own tests, the benchmark's and the harness's.
package heraldbin

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// Build builds cmd/herald as dir/herald, with the go build flags given
// (-race, -tags …), and returns its path. A failed build's error holds
// the compiler's output.
func Build(dir string, flags ...string) (string, error) {
	bin := filepath.Join(dir, "herald")
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/heraldhq/herald/cmd/herald")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build herald: %v\n%s", err, out)
	}
	return bin, nil
}
