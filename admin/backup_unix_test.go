//go:build unix

package admin_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/heraldhq/herald/admin"
)

func TestAdminBackupRefusesLockedDir(t *testing.T) {
	dir := fakeDataDir(t)
	for _, locked := range []string{"state", filepath.Join("raft", "raft-bolt", "group-1.db")} {
		// The lock a running badger (on its directory) or bbolt (on its
		// file) holds.
		f, err := os.Open(filepath.Join(dir, locked))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "b.tar.gz")
		_, err = admin.BackupFile(dir, out)
		f.Close()
		if !errors.Is(err, admin.ErrInUse) {
			t.Fatalf("backup with %s locked: %v, want ErrInUse", locked, err)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("a refused backup left %s", out)
		}
	}
}
