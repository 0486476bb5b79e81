package rooms

import (
	"testing"

	"github.com/heraldhq/herald/internal/configtest"
	"github.com/heraldhq/herald/multiraft"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{Host: &multiraft.Host{}},
	},
		configtest.Invalid[Config]{Field: "Host", Set: func(c *Config) { c.Host = nil }},
		configtest.Invalid[Config]{Field: "Scheme", Set: func(c *Config) { c.Scheme = "ws" }},
		configtest.Invalid[Config]{Field: "TickInterval", Set: func(c *Config) { c.TickInterval = -1 }},
	)
}
