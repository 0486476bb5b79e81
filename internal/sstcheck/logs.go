package sstcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PrepareLogs readies the memtable logs (.mem) and value logs (.vlog) in
// dir for badger to replay. Call it before badger.Open.
//
// It syncs every one of them. A process killed between a write and its
// sync leaves the write readable in the page cache but not on disk.
// badger replays a memtable's log into an immutable memtable that only its
// flush to a table (synced, but later, in the background) makes durable,
// and DB.Sync does not cover it; meanwhile the DB's user builds on what it
// reads (a raft follower acknowledges an entry it finds in its log without
// writing it again). So what badger is about to serve is made durable
// first.
//
// It removes every empty one. After a power loss such a file holds
// nothing, and badger refuses to open a DB that has one ("Create a new
// file"): badger truncates a flushed memtable's log to nothing before it
// unlinks it, and creates a log before it sizes it, so a power loss
// between the two steps (a journal commit can fall between them) leaves an
// empty file. A flushed memtable's data is in a synced table; a log that
// was never sized held no byte.
func PrepareLogs(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sstcheck: list %s: %w", dir, err)
	}
	removed := false
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		path := filepath.Join(dir, name)
		empty, err := syncLog(path)
		if err != nil {
			return err
		}
		if empty {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("sstcheck: remove empty log %s: %w", path, err)
			}
			removed = true
		}
	}
	if removed {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sstcheck: sync %s: %w", dir, err)
		}
	}
	return nil
}

// syncLog syncs the file at path and reports whether it is empty.
func syncLog(path string) (empty bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("sstcheck: open %s to sync it: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("sstcheck: stat %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("sstcheck: sync %s: %w", path, err)
	}
	return st.Size() == 0, nil
}
