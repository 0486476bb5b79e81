package serverapi

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/configtest"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
	},
		configtest.Invalid[Config]{Field: "MaxData", Set: func(c *Config) { c.MaxData = -1 }},
		configtest.Invalid[Config]{Field: "MaxData", Set: func(c *Config) { c.MaxData = fsm.MaxPayloadBytes + 1 }},
		configtest.Invalid[Config]{Field: "MaxPageBytes", Set: func(c *Config) { c.MaxPageBytes = -1 }},
		configtest.Invalid[Config]{Field: "MaxBroadcastRooms", Set: func(c *Config) { c.MaxBroadcastRooms = -1 }},
		configtest.Invalid[Config]{Field: "RequestTimeout", Set: func(c *Config) { c.RequestTimeout = -1 }},
		configtest.Invalid[Config]{Field: "NodeTimeout", Set: func(c *Config) { c.NodeTimeout = -1 }},
		configtest.Invalid[Config]{Field: "NodeTimeout", Set: func(c *Config) { c.NodeTimeout = time.Minute }},
		configtest.Invalid[Config]{Field: "Keys", Set: func(c *Config) { c.Keys = []string{"short"} }},
	)
	// A request timeout shorter than the default node timeout takes the
	// node timeout down with it instead of being refused.
	if c := (Config{RequestTimeout: time.Second}).WithDefaults(); c.NodeTimeout != time.Second || c.Validate() != nil {
		t.Fatalf("short request timeout: node timeout %v, %v", c.NodeTimeout, c.Validate())
	}
}
