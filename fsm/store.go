package fsm

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/heraldhq/herald/internal/sstcheck"
)

// Store is one node's badger DB, shared by the state machines of every
// group hosted on the node. Each group keeps its keys under its own prefix.
type Store struct {
	db *badger.DB
	// cuts records the table blocks found corrupt at open and cut out,
	// and the groups that lost keys to them (see internal/sstcheck).
	cuts *sstcheck.Ledger
}

// OpenStore opens (or creates) the DB in cfg.Dir; zero fields of cfg take
// DefaultStoreConfig's values.
func OpenStore(cfg StoreConfig) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithMemTableSize(cfg.MemTableSize).
		WithNumMemtables(cfg.NumMemtables).
		WithNumLevelZeroTables(cfg.NumMemtables).
		WithNumLevelZeroTablesStall(cfg.NumMemtables * 3).
		WithBlockCacheSize(cfg.BlockCacheSize).
		WithIndexCacheSize(cfg.IndexCacheSize).
		WithValueThreshold(cfg.ValueThreshold).
		WithValueLogFileSize(cfg.ValueLogFileSize).
		WithNumCompactors(cfg.NumCompactors).
		WithCompression(options.Snappy).
		WithMetricsEnabled(false).
		// The FSM is the only writer of its keys and never reads inside a
		// write transaction, so conflict tracking is pure overhead.
		WithDetectConflicts(false).
		// The raft log is the durable record; the FSM state can be rebuilt
		// from a snapshot and the log (see doc.go, "Durability").
		WithSyncWrites(false).
		// Badger checksums every table block and value log entry but
		// checks neither on read by default, so a flipped bit reached the
		// FSM as data. Blocks are checked as they are read, not whole
		// tables at open: a bad block then damages the groups that read
		// it instead of keeping the whole node from starting.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		WithLogger(badgerLogger{cfg.Logger})
	// What badger replays is made durable, and logs a power loss left
	// empty are removed (sstcheck.PrepareLogs): a restart must not serve
	// state a power loss then takes back, nor fail to open.
	if err := sstcheck.PrepareLogs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("state store in %s: %w", cfg.Dir, err)
	}
	// Badger would serve around a bad table block without a word, and a
	// compaction would drop it and the rest of its table, so every block
	// is checked before the DB opens, and bad ones are cut out and
	// recorded: the groups whose keys they held open damaged (New).
	cuts, found, err := sstcheck.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("check state store in %s: %w", cfg.Dir, err)
	}
	for _, c := range found {
		badgerLogger{cfg.Logger}.Errorf("state store: block %d of table %s is corrupt (%s); cut out, the groups whose keys it held are damaged until repaired", c.Block, c.Table, c.Err)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open state store in %s: %w", cfg.Dir, err)
	}
	return &Store{db: db, cuts: cuts}, nil
}

// Close closes the DB. Close every FSM on the store first.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state store: %w", err)
	}
	return nil
}

// badgerLogger sends badger's log lines to slog; badger's info chatter goes
// to debug level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, format string, args ...any) {
	if b.l != nil && b.l.Enabled(context.Background(), level) {
		b.l.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "badger")
	}
}
func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a...) }
