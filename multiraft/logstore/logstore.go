package logstore

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

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
)

// DefaultKind is used when Options.Kind is empty. Badger wins because group
// commit amortises one fsync over all groups writing at the same time, while
// bolt pays two fsyncs per write per group.
const DefaultKind = KindBadger

// ErrClosed is returned by a Store or Backend used after Close, and by a
// Store whose group was dropped.
var ErrClosed = errors.New("logstore: closed")

// ErrKeyNotFound is returned by StableStore Get and GetUint64 for a missing
// key. Its text must stay exactly "not found": raft recognises a missing
// term or vote by comparing err.Error() with that string, the same error
// raft-boltdb and raft.InmemStore return.
var ErrKeyNotFound = errors.New("not found")

// Options configures Open.
type Options struct {
	// Kind picks the backend; empty means DefaultKind.
	Kind Kind
	// Dir is required. Badger keeps its files in Dir/raft-badger, bolt keeps
	// one file per group at Dir/raft-bolt/group-<id>.db.
	Dir string
	// Logger receives backend diagnostics; nil means slog.Default().
	Logger *slog.Logger

	// BadgerMemTableSize is the size of one badger memtable, default 16 MiB,
	// minimum 8 MiB.
	// The DB only holds raft logs, which raft truncates after every
	// snapshot, so the working set is small and large memtables would only
	// cost memory. It also bounds one badger transaction (15% of it); larger
	// group-commit batches are split and larger single writes take a slower
	// multi-transaction path that stays atomic.
	BadgerMemTableSize int64
	// BadgerBlockCacheSize is badger's block cache, default 16 MiB. Reads
	// are rare (raft serves recent entries from raft.LogCache and most log
	// reads hit memtables), so a big cache buys little.
	BadgerBlockCacheSize int64

	// OnSync, when set, is told how long each DB.Sync of the badger
	// backend took: the fsync every group-commit batch waits for, and so
	// the floor of every raft write's latency. It runs on the committer
	// goroutine, which every write of the node queues behind: keep it to
	// an atomic update. The bolt backend never calls it (raft-boltdb syncs
	// inside its own transactions).
	OnSync func(time.Duration)
}

// ParseKind parses a flag value: "badger" or "bolt".
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case KindBadger, KindBolt:
		return Kind(s), nil
	}
	return "", fmt.Errorf("logstore: unknown backend kind %q (want %q or %q)", s, KindBadger, KindBolt)
}

// Open opens or creates the backend selected by opts.Kind under opts.Dir.
func Open(opts Options) (Backend, error) {
	if opts.Dir == "" {
		return nil, errors.New("logstore: Options.Dir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Kind == "" {
		opts.Kind = DefaultKind
	}
	switch opts.Kind {
	case KindBadger:
		return openBadger(opts)
	case KindBolt:
		return openBolt(opts)
	}
	return nil, fmt.Errorf("logstore: unknown backend kind %q", opts.Kind)
}
