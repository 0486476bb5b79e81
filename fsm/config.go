package fsm

import (
	"log/slog"

	"github.com/heraldhq/herald/internal/fields"
)

// Config configures the state machine of one group.
type Config struct {
	// Group is the raft group whose rooms this state machine holds. Groups
	// sharing a Store must have distinct ids.
	Group uint64
	// SweepBudget is how many leftover keys (trimmed history, evicted
	// idempotency keys, deleted rooms) one commit deletes at most, beyond
	// the writes of its commands. Default 1024.
	SweepBudget int
	// Logger receives the state machine's warnings. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the values New gives the fields of a Config left
// zero (Group 0 is a group like any other).
func DefaultConfig() Config {
	return Config{SweepBudget: 1024, Logger: slog.New(slog.DiscardHandler)}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field.
func (c Config) WithDefaults() Config {
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that New would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	var p fields.Problems
	fields.NotNegative(&p, "Config.SweepBudget", c.WithDefaults().SweepBudget)
	return p.Err("fsm")
}

// StoreConfig sizes the node's badger DB. Dir is required; every other
// field left zero takes DefaultStoreConfig's value.
type StoreConfig struct {
	// Dir is the directory of the DB; it is created if missing.
	Dir string
	// MemTableSize is the size of one memtable in bytes. It also bounds one
	// write transaction (badger allows 15% of it), which is what limits how
	// many commands the FSM commits in one badger write. At least 4 MiB.
	MemTableSize int64
	// NumMemtables is how many memtables may be in memory at once.
	NumMemtables int
	// BlockCacheSize and IndexCacheSize are badger's read caches, in bytes.
	BlockCacheSize int64
	IndexCacheSize int64
	// ValueThreshold is the value size in bytes above which badger keeps a
	// value in its value log instead of the LSM tree; at most 1 MiB.
	ValueThreshold int64
	// ValueLogFileSize is the size of one value log file in bytes, from
	// 1 MiB to below 2 GiB.
	ValueLogFileSize int64
	// NumCompactors is how many goroutines compact the LSM tree (at least 2).
	NumCompactors int
	// Logger receives badger's warnings and errors. Default: discard.
	Logger *slog.Logger
}

// DefaultStoreConfig returns the settings measured in docs/benchmarks.md,
// with Dir set to dir: one DB serves every group of a node, so its
// footprint is per node, and these values keep it to a few tens of
// megabytes instead of badger's default of several hundred (five 64 MiB
// memtables and a 256 MiB block cache).
func DefaultStoreConfig(dir string) StoreConfig {
	return StoreConfig{
		Dir:              dir,
		MemTableSize:     16 << 20,
		NumMemtables:     3,
		BlockCacheSize:   32 << 20,
		IndexCacheSize:   16 << 20,
		ValueThreshold:   4 << 10,
		ValueLogFileSize: 128 << 20,
		NumCompactors:    2,
		Logger:           slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to DefaultStoreConfig's
// value, field by field.
func (c StoreConfig) WithDefaults() StoreConfig {
	fields.Fill(&c, DefaultStoreConfig(c.Dir))
	return c
}

// Validate reports, by name, every field that badger would refuse or that
// defeats the FSM, after zero fields took their defaults.
func (c StoreConfig) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("StoreConfig.Dir", c.Dir != "")
	if c.MemTableSize < 4<<20 {
		p.Addf("StoreConfig.MemTableSize %d is below 4 MiB; a transaction could not hold a command", c.MemTableSize)
	}
	if c.NumMemtables < 1 {
		p.Addf("StoreConfig.NumMemtables %d is below 1", c.NumMemtables)
	}
	if c.NumCompactors < 2 {
		p.Addf("StoreConfig.NumCompactors %d is below 2 (badger requires two)", c.NumCompactors)
	}
	fields.NotNegative(&p, "StoreConfig.BlockCacheSize", c.BlockCacheSize)
	fields.NotNegative(&p, "StoreConfig.IndexCacheSize", c.IndexCacheSize)
	if c.ValueThreshold < 0 || c.ValueThreshold > 1<<20 {
		p.Addf("StoreConfig.ValueThreshold %d is not in (0, 1 MiB]", c.ValueThreshold)
	}
	if c.ValueLogFileSize < 1<<20 || c.ValueLogFileSize >= 2<<30 {
		p.Addf("StoreConfig.ValueLogFileSize %d is not in [1 MiB, 2 GiB)", c.ValueLogFileSize)
	}
	return p.Err("fsm")
}
