package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
)

// Store is one group's log and stable store.
type Store interface {
	raft.LogStore
	raft.StableStore
}

// Backend holds the stores of all groups on one node.
//
// Lifecycle rules: a group's Store is handed out once by Group and stays
// valid until DropGroup(id) or Close; after either, its methods return
// ErrClosed. DropGroup on an open group first closes that Store (waiting for
// calls already in progress) and then deletes the group's data, so callers
// should shut down the group's raft.Raft before dropping it.
type Backend interface {
	// Group opens (creating if needed) the group's store. Calling it again
	// for a group that is still open is an error.
	Group(id uint64) (Store, error)
	// CloseGroup closes the group's Store and keeps its data, so Group can
	// open it again (a replica stopped while the node keeps running).
	// Closing a group that is not open is not an error.
	CloseGroup(id uint64) error
	// DropGroup deletes all of a group's log and stable data, closing the
	// group's Store first if it is open. Dropping a group that has no data
	// is not an error.
	DropGroup(id uint64) error
	// Groups returns the sorted ids of groups that have a store on disk:
	// every group opened with Group and not dropped since, even if nothing
	// was written to it yet.
	Groups() ([]uint64, error)
	// Close flushes and closes every store and the backend. It is
	// idempotent; stores fail with ErrClosed afterwards.
	Close() error
}

// DamageReporter is implemented by a Backend that checks its files at
// open and may find that a group lost stored data (the badger backend:
// corrupt table blocks are cut out). Damaged returns why group lost data,
// or ""; such a group cannot be opened until DropGroup.
type DamageReporter interface {
	Damaged(group uint64) string
}

// Kind selects a Backend implementation.
type Kind string

const (
	// KindBadger shares one badger DB per node with group commit.
	KindBadger Kind = "badger"
	// KindBolt uses one raft-boltdb file per group.
	KindBolt Kind = "bolt"
	// KindWAL appends every group's log to one segmented file per node
	// with one fdatasync per merged write (wal.go).
	KindWAL Kind = "wal"
)

// DefaultKind is used when Config.Kind is empty and the data dir holds no
// log yet. wal and badger both amortise one sync over all groups writing
// at the same time (bolt pays two per write per group); wal costs less CPU
// per commit (no LSM, no memory maps) and passed the consistency harness's
// long power-loss series as badger did (docs/multiraft.md).
const DefaultKind = KindWAL

// ErrClosed is returned by a Store or Backend used after Close, and by a
// Store whose group was dropped.
var ErrClosed = errors.New("logstore: closed")

// ErrKeyNotFound is returned by StableStore Get and GetUint64 for a missing
// key. Its text must stay exactly "not found": raft recognises a missing
// term or vote by comparing err.Error() with that string, the same error
// raft-boltdb and raft.InmemStore return.
var ErrKeyNotFound = errors.New("not found")

// ParseKind parses a flag value: "badger", "bolt" or "wal".
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case KindBadger, KindBolt, KindWAL:
		return Kind(s), nil
	}
	return "", fmt.Errorf("logstore: unknown backend kind %q (want %q, %q or %q)", s, KindBadger, KindBolt, KindWAL)
}

// Open opens or creates the backend selected by cfg.Kind under cfg.Dir;
// zero fields of cfg take DefaultConfig's values.
func Open(cfg Config) (Backend, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	why := "named"
	if cfg.Kind == "" {
		cfg.Kind, why = kindIn(cfg.Dir)
	}
	if err := checkNoOtherKind(cfg.Dir, cfg.Kind); err != nil {
		return nil, err
	}
	cfg.Logger.Info("raft log store", "kind", cfg.Kind, "chosen", why, "dir", cfg.Dir)
	switch cfg.Kind {
	case KindBolt:
		return openBolt(cfg)
	case KindWAL:
		return openWAL(cfg)
	}
	return openBadger(cfg)
}

// kindDirs are where each backend keeps its files under Config.Dir.
var kindDirs = map[Kind]string{KindBadger: "raft-badger", KindBolt: "raft-bolt", KindWAL: walDirName}

// kindIn returns the kind of backend whose log dir holds, or DefaultKind
// when it holds none, and which of the two it was. Should it hold several,
// checkNoOtherKind refuses.
func kindIn(dir string) (kind Kind, why string) {
	for _, kind := range []Kind{KindBadger, KindBolt, KindWAL} {
		if ents, err := os.ReadDir(filepath.Join(dir, kindDirs[kind])); err == nil && len(ents) > 0 {
			return kind, "the data dir holds it"
		}
	}
	return DefaultKind, "default for a new data dir"
}

// checkNoOtherKind refuses to open kind where another backend already
// keeps a log. Opening it would start raft with an empty log and stable
// store beside the node's state machine and snapshots: the node would
// forget its term and its vote, and could vote twice in one term.
func checkNoOtherKind(dir string, kind Kind) error {
	for other, sub := range kindDirs {
		if other == kind {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err == nil && len(ents) > 0 {
			return fmt.Errorf("logstore: %s holds a %s raft log (%s); this node must be started with that log store, not %s (to change it, replace the node: decommission it and add it again with an empty data dir)",
				dir, other, sub, kind)
		}
	}
	return nil
}

// callGate lets a store's calls run side by side and its close wait for
// them: every call holds it for reading, close for writing.
type callGate struct {
	rw     sync.RWMutex
	closed bool // guarded by rw
}

func (g *callGate) close() {
	g.rw.Lock()
	g.closed = true
	g.rw.Unlock()
}

// enter admits a call, or says the store is closed; a call that entered
// leaves.
func (g *callGate) enter() error {
	g.rw.RLock()
	if g.closed {
		g.rw.RUnlock()
		return ErrClosed
	}
	return nil
}

func (g *callGate) leave() { g.rw.RUnlock() }

// decodeUint64 decodes val, which Get returned with err for key, as
// SetUint64 stored it: 8 bytes, big endian.
func decodeUint64(group uint64, key, val []byte, err error) (uint64, error) {
	if err != nil {
		return 0, err
	}
	if len(val) != 8 {
		return 0, fmt.Errorf("logstore: group %d: key %q holds %d bytes, not a uint64", group, key, len(val))
	}
	return binary.BigEndian.Uint64(val), nil
}
