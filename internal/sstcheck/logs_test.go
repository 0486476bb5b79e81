package sstcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// Empty memtable and value logs, as a power loss leaves them, keep badger
// from opening until PrepareLogs removes them; the DB's data stays.
func TestPrepareLogsRemovesEmptyLogs(t *testing.T) {
	for _, name := range []string{"00009.mem", "000009.vlog"} {
		t.Run(name, func(t *testing.T) {
			// badger's failed open sizes the empty file, so the refusal is
			// shown on a second DB of its own.
			bare, dir := t.TempDir(), t.TempDir()
			for _, d := range []string{bare, dir} {
				fill(t, d)
				if err := os.WriteFile(filepath.Join(d, name), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if db, err := badger.Open(dbOptions(bare)); err == nil {
				_ = db.Close()
				t.Fatalf("badger opened a DB with an empty %s; this test no longer shows why PrepareLogs removes it", name)
			} else if !strings.Contains(err.Error(), "Create a new file") {
				t.Fatalf("badger failed on an empty %s with %v, not the error this test expects", name, err)
			}
			if err := PrepareLogs(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
				t.Fatalf("the empty %s is still there (%v)", name, err)
			}
			db, err := badger.Open(dbOptions(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := readAll(t, db); len(got) != owners {
				t.Fatalf("owners with keys after the open: %v, want all %d", got, owners)
			}
			for o, n := range readAll(t, db) {
				if n != perOwner {
					t.Fatalf("owner %d has %d keys, want %d", o, n, perOwner)
				}
			}
		})
	}
}

// A log with data stays, whatever its content.
func TestPrepareLogsKeepsLogsWithData(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir)
	logs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	logs = append(logs, mems...)
	if len(logs) == 0 {
		t.Fatal("badger left no log to keep; the test shows nothing")
	}
	if err := PrepareLogs(dir); err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	if err := PrepareLogs(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("a DB dir not created yet: %v", err)
	}
}
