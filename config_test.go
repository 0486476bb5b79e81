package herald

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/configtest"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront/auth"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{NodeID: "n1", DataDir: "/data", ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
			Auth: auth.Config{Insecure: true}},
	},
		configtest.Invalid[Config]{Field: "NodeID", Set: func(c *Config) { c.NodeID = "" }},
		configtest.Invalid[Config]{Field: "DataDir", Set: func(c *Config) { c.DataDir = "" }},
		configtest.Invalid[Config]{Field: "ClientAddr", Set: func(c *Config) { c.ClientAddr = "" }},
		configtest.Invalid[Config]{Field: "PeerAddr", Set: func(c *Config) { c.PeerAddr = "" }},
		configtest.Invalid[Config]{Field: "Config.Join", Set: func(c *Config) {
			c.Bootstrap, c.Join = &multiraft.BootstrapSpec{}, []string{"127.0.0.1:7000"}
		}},
		configtest.Invalid[Config]{Field: "LogStore", Set: func(c *Config) { c.LogStore = "rocks" }},
		configtest.Invalid[Config]{Field: "LeaseTTL", Set: func(c *Config) { c.LeaseTTL = -1 }},
		configtest.Invalid[Config]{Field: "TickInterval", Set: func(c *Config) { c.TickInterval = -1 }},
		configtest.Invalid[Config]{Field: "StopTimeout", Set: func(c *Config) { c.StopTimeout = -1 }},
		configtest.Invalid[Config]{Field: "Config.Limits.MaxRooms", Set: func(c *Config) { c.Limits.MaxRooms = -1 }},
		configtest.Invalid[Config]{Field: "Config.Timing.CommitTimeout", Set: func(c *Config) { c.Timing.CommitTimeout = -time.Second }},
		configtest.Invalid[Config]{Field: "Config.Auth", Set: func(c *Config) { c.Auth = auth.Config{} }},
		configtest.Invalid[Config]{Field: "ClusterSecret", Set: func(c *Config) { c.ClusterSecret = []byte("short") }},
	)
}
