package logstore

import (
	"testing"

	"github.com/heraldhq/herald/internal/configtest"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{Dir: "/data"},
	},
		configtest.Invalid[Config]{Field: "Dir", Set: func(c *Config) { c.Dir = "" }},
		configtest.Invalid[Config]{Field: "Kind", Set: func(c *Config) { c.Kind = "rocks" }},
		configtest.Invalid[Config]{Field: "BadgerMemTableSize", Set: func(c *Config) { c.BadgerMemTableSize = 1 << 20 }},
		configtest.Invalid[Config]{Field: "BadgerBlockCacheSize", Set: func(c *Config) { c.BadgerBlockCacheSize = -1 }},
		configtest.Invalid[Config]{Field: "WALSegmentSize", Set: func(c *Config) { c.WALSegmentSize = 1 << 10 }},
		configtest.Invalid[Config]{Field: "WALSegmentSize", Set: func(c *Config) { c.WALSegmentSize = 2 << 30 }},
	)
}
