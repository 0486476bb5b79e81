package transport

import (
	"testing"

	"github.com/heraldhq/herald/internal/configtest"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{NodeID: "n1", ListenAddr: "127.0.0.1:0"},
	},
		configtest.Invalid[Config]{Field: "NodeID", Set: func(c *Config) { c.NodeID = "" }},
		configtest.Invalid[Config]{Field: "NodeID", Set: func(c *Config) { c.NodeID = string(make([]byte, 256)) }},
		configtest.Invalid[Config]{Field: "ListenAddr", Set: func(c *Config) { c.ListenAddr = "" }},
		configtest.Invalid[Config]{Field: "DialTimeout", Set: func(c *Config) { c.DialTimeout = -1 }},
		configtest.Invalid[Config]{Field: "RPCTimeout", Set: func(c *Config) { c.RPCTimeout = -1 }},
		configtest.Invalid[Config]{Field: "HeartbeatInterval", Set: func(c *Config) { c.HeartbeatInterval = -1 }},
		configtest.Invalid[Config]{Field: "ClusterSecret", Set: func(c *Config) { c.ClusterSecret = []byte("short") }},
	)
}
