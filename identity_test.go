package herald

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald/jepsen/lazyfs"
)

// TestIdentitySurvivesPowerLoss writes a data dir's identity on a
// filesystem that forgets unsynced writes, syncs something else on it (as
// the raft log does at once), cuts the power, and expects the node to
// accept its data dir again.
func TestIdentitySurvivesPowerLoss(t *testing.T) {
	if err := lazyfs.Available(); err != nil {
		t.Skipf("no lazy filesystem here, power loss cannot be tested: %v", err)
	}
	dir := t.TempDir()
	disk, err := lazyfs.Mount(filepath.Join(dir, "disk"), filepath.Join(dir, "mnt"), lazyfs.Options{Name: "herald-identity-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := disk.Unmount(10 * time.Second); err != nil {
			t.Error(err)
		}
	})
	data := filepath.Join(disk.Mountpoint(), "data")
	if err := checkDataDir(data, "n1", nil); err != nil {
		t.Fatal(err)
	}
	other, err := os.Create(filepath.Join(disk.Mountpoint(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Sync(); err != nil {
		t.Fatal(err)
	}
	other.Close()
	if _, err := disk.Drop(); err != nil {
		t.Fatal(err)
	}
	if err := checkDataDir(data, "n1", nil); err != nil {
		t.Fatalf("after a power loss: %v", err)
	}
	if err := checkDataDir(data, "n2", nil); err == nil {
		t.Fatal("after a power loss the data dir no longer names its node: n2 may start on n1's data")
	}
}
