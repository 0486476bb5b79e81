package logstore

import (
	"log/slog"
	"time"

	"github.com/heraldhq/herald/internal/fields"
)

// Config configures Open.
type Config struct {
	// Kind picks the backend. Empty means the kind whose log Dir already
	// holds, or DefaultKind for a Dir that holds none: a node restarted
	// without naming its store keeps the one it began with.
	Kind Kind
	// Dir is required. Badger keeps its files in Dir/raft-badger, bolt keeps
	// one file per group at Dir/raft-bolt/group-<id>.db.
	Dir string
	// Logger receives backend diagnostics; nil means slog.Default().
	Logger *slog.Logger

	// BadgerMemTableSize is the size of one badger memtable, default 16 MiB,
	// minimum 8 MiB (below it badger's transaction limit, 15% of a
	// memtable, would fall under its 1 MiB ValueThreshold, which badger
	// requires, and under one maxInlineValue chunk).
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

	// WALSegmentSize is the size at which the wal backend starts a new
	// segment file, default 64 MiB, minimum 64 KiB, maximum 1 GiB (which
	// keeps offsets in a segment in 32 bits). A segment is removed once
	// raft compacted away every entry in it, so this bounds how much disk
	// the log holds beyond what raft keeps.
	WALSegmentSize int64

	// OnSync, when set, is told how long each DB.Sync of the badger
	// backend took: the fsync every group-commit batch waits for, and so
	// the floor of every raft write's latency (the wal backend's
	// fdatasync likewise). It runs on the writing goroutine, which every write of the node queues behind: keep it to
	// an atomic update. The bolt backend never calls it (raft-boltdb syncs
	// inside its own transactions).
	OnSync func(time.Duration)
}

// DefaultConfig returns the values Open gives the fields of a Config left
// zero. Dir has none and must be set.
func DefaultConfig() Config {
	return Config{
		Logger:               slog.Default(),
		BadgerMemTableSize:   16 << 20,
		BadgerBlockCacheSize: 16 << 20,
		WALSegmentSize:       64 << 20,
	}
}

// minBadgerMemTableSize is Config.BadgerMemTableSize's minimum.
const minBadgerMemTableSize = 8 << 20

// minWALSegmentSize and maxWALSegmentSize bound Config.WALSegmentSize.
const (
	minWALSegmentSize = 64 << 10
	maxWALSegmentSize = 1 << 30
)

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field: setting one field never changes another.
func (c Config) WithDefaults() Config {
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that Open would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.Dir", c.Dir != "")
	if _, err := ParseKind(string(c.Kind)); err != nil && c.Kind != "" {
		p.Addf("Config.Kind %q is unknown (want %q, %q or %q)", c.Kind, KindBadger, KindBolt, KindWAL)
	}
	if c.BadgerMemTableSize < minBadgerMemTableSize {
		p.Addf("Config.BadgerMemTableSize %d is below the minimum, %d", c.BadgerMemTableSize, minBadgerMemTableSize)
	}
	fields.NotNegative(&p, "Config.BadgerBlockCacheSize", c.BadgerBlockCacheSize)
	if c.WALSegmentSize < minWALSegmentSize || c.WALSegmentSize > maxWALSegmentSize {
		p.Addf("Config.WALSegmentSize %d is outside %d to %d", c.WALSegmentSize, minWALSegmentSize, maxWALSegmentSize)
	}
	return p.Err("logstore")
}
