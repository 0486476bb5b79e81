package sstcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// LedgerFile is the ledger's file name in the DB's directory; badger
// ignores files it does not know.
const LedgerFile = "cut-blocks.json"

// ledgerVersion is the version of the ledger file's layout.
const ledgerVersion = 1

// Ledger is the durable record of the key ranges cut out of a DB's tables,
// and of the owners (groups) that dropped all their keys since. An owner
// whose keys overlap a cut it has not dropped since is damaged: some of
// its keys are gone, or older versions of them show again.
type Ledger struct {
	path string
	mu   sync.Mutex
	// entries is guarded by mu; it is what the file holds.
	entries []ledgerEntry
}

type ledgerEntry struct {
	Cut
	// Dropped lists the owners that dropped all their keys after the cut.
	Dropped []uint64 `json:"dropped,omitempty"`
}

type ledgerFile struct {
	Version int           `json:"version"`
	Cuts    []ledgerEntry `json:"cuts"`
}

// Open reads the ledger in opts.Dir, then checks and repairs the DB's
// tables (Repair), recording any cut in the ledger before a table
// changes. Call it before badger.Open; it returns the cuts it made now.
func Open(opts badger.Options) (*Ledger, []Cut, error) {
	l := &Ledger{path: filepath.Join(opts.Dir, LedgerFile)}
	b, err := os.ReadFile(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("sstcheck: %w", err)
	default:
		var f ledgerFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, nil, fmt.Errorf("sstcheck: %s is damaged: %w", l.path, err)
		}
		if f.Version != ledgerVersion {
			return nil, nil, fmt.Errorf("sstcheck: %s has version %d; this release reads version %d", l.path, f.Version, ledgerVersion)
		}
		l.entries = f.Cuts
	}
	cuts, err := Repair(opts, l.add)
	if err != nil {
		return nil, nil, err
	}
	return l, cuts, nil
}

// add records cuts, durably.
func (l *Ledger) add(cuts []Cut) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cuts {
		// A crash between recording and rewriting finds the same block
		// again at the next start.
		if !slices.ContainsFunc(l.entries, func(e ledgerEntry) bool {
			return e.Table == c.Table && e.Block == c.Block &&
				bytes.Equal(e.Range.Lo, c.Range.Lo) && bytes.Equal(e.Range.Hi, c.Range.Hi)
		}) {
			l.entries = append(l.entries, ledgerEntry{Cut: c})
		}
	}
	return l.save()
}

// Damaged returns why the owner whose keys start with one of prefixes
// lost keys to a cut and has not dropped them since, or "".
func (l *Ledger) Damaged(owner uint64, prefixes ...[]byte) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var why []string
	for _, e := range l.pending(owner, prefixes) {
		why = append(why, fmt.Sprintf("block %d of table %s was corrupt (%s) and was cut out", e.Block, e.Table, e.Err))
	}
	return strings.Join(why, "; ")
}

// Dropped records that owner dropped every key it had under prefixes, so
// no cut damages it any more.
func (l *Ledger) Dropped(owner uint64, prefixes ...[]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending(owner, prefixes)
	if len(p) == 0 {
		return nil
	}
	for _, e := range p {
		e.Dropped = append(e.Dropped, owner)
	}
	return l.save()
}

// pending returns the entries that damage owner. Its caller holds mu.
func (l *Ledger) pending(owner uint64, prefixes [][]byte) []*ledgerEntry {
	var out []*ledgerEntry
	for i := range l.entries {
		e := &l.entries[i]
		if slices.Contains(e.Dropped, owner) {
			continue
		}
		if slices.ContainsFunc(prefixes, e.Range.Overlaps) {
			out = append(out, e)
		}
	}
	return out
}

// save writes the ledger durably: a new file, synced, renamed over the
// old one, and the directory synced. Its caller holds mu.
func (l *Ledger) save() error {
	b, err := json.MarshalIndent(ledgerFile{Version: ledgerVersion, Cuts: l.entries}, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.path + ".tmp"
	if err := writeSynced(tmp, b); err != nil {
		return fmt.Errorf("sstcheck: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("sstcheck: %w", err)
	}
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		return fmt.Errorf("sstcheck: %w", err)
	}
	return nil
}
