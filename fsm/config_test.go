package fsm

import (
	"testing"

	"github.com/heraldhq/herald/internal/configtest"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
	},
		configtest.Invalid[Config]{Field: "SweepBudget", Set: func(c *Config) { c.SweepBudget = -1 }},
	)
}

func TestStoreConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[StoreConfig]{
		Defaults: DefaultStoreConfig(""), WithDefaults: StoreConfig.WithDefaults, Validate: StoreConfig.Validate,
		Base: StoreConfig{Dir: "/data"},
	},
		configtest.Invalid[StoreConfig]{Field: "Dir", Set: func(c *StoreConfig) { c.Dir = "" }},
		configtest.Invalid[StoreConfig]{Field: "MemTableSize", Set: func(c *StoreConfig) { c.MemTableSize = 1 << 20 }},
		configtest.Invalid[StoreConfig]{Field: "NumMemtables", Set: func(c *StoreConfig) { c.NumMemtables = -1 }},
		configtest.Invalid[StoreConfig]{Field: "NumCompactors", Set: func(c *StoreConfig) { c.NumCompactors = 1 }},
		configtest.Invalid[StoreConfig]{Field: "BlockCacheSize", Set: func(c *StoreConfig) { c.BlockCacheSize = -1 }},
		configtest.Invalid[StoreConfig]{Field: "IndexCacheSize", Set: func(c *StoreConfig) { c.IndexCacheSize = -1 }},
		configtest.Invalid[StoreConfig]{Field: "ValueThreshold", Set: func(c *StoreConfig) { c.ValueThreshold = 2 << 20 }},
		configtest.Invalid[StoreConfig]{Field: "ValueLogFileSize", Set: func(c *StoreConfig) { c.ValueLogFileSize = 1 }},
	)
	// OpenStore applies the same rules: a bad field is refused before
	// badger sees it, and one field set alone opens.
	if _, err := OpenStore(StoreConfig{Dir: t.TempDir(), NumCompactors: 1}); err == nil {
		t.Error("OpenStore accepted NumCompactors 1")
	}
	s, err := OpenStore(StoreConfig{Dir: t.TempDir(), MemTableSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
