package multiraft

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/configtest"
)

// A configuration sets only the timings it changes.
func TestTimingWithDefaults(t *testing.T) {
	if got := (Timing{}).WithDefaults(); got != DefaultTiming() {
		t.Fatalf("zero timing: %+v, want the defaults", got)
	}
	tm := Timing{HeartbeatTimeout: 2 * time.Second, PerGroupHeartbeats: true}.WithDefaults()
	d := DefaultTiming()
	if tm.HeartbeatTimeout != 2*time.Second || !tm.PerGroupHeartbeats || tm.ElectionTimeout != d.ElectionTimeout ||
		tm.MaxAppendEntries != d.MaxAppendEntries || tm.TrailingLogs != 0 {
		t.Fatalf("one field set: %+v", tm)
	}
	if err := tm.Validate(); err != nil {
		t.Fatal(err)
	}
	if short := (Timing{HeartbeatTimeout: 200 * time.Millisecond}).WithDefaults(); short.LeaderLeaseTimeout != 200*time.Millisecond || short.Validate() != nil {
		t.Fatalf("the default lease does not follow a shorter heartbeat timeout: %+v", short)
	}
	if err := (Timing{CommitTimeout: -1}).WithDefaults().Validate(); err == nil {
		t.Fatal("a negative commit timeout passed")
	}
}

// TrailingLogs is the one timing whose zero keeps a meaning once another
// field is set (no trailing logs); TestTimingWithDefaults covers it.
func TestTimingShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Timing]{
		Defaults: DefaultTiming(), WithDefaults: Timing.WithDefaults, Validate: Timing.Validate,
		Skip: []string{"TrailingLogs"},
	},
		configtest.Invalid[Timing]{Field: "HeartbeatTimeout", Set: func(t *Timing) { t.HeartbeatTimeout = time.Millisecond }},
		configtest.Invalid[Timing]{Field: "ElectionTimeout", Set: func(t *Timing) { t.ElectionTimeout = time.Millisecond }},
		configtest.Invalid[Timing]{Field: "LeaderLeaseTimeout", Set: func(t *Timing) { t.LeaderLeaseTimeout = 2 * time.Second }},
		configtest.Invalid[Timing]{Field: "CommitTimeout", Set: func(t *Timing) { t.CommitTimeout = -1 }},
		configtest.Invalid[Timing]{Field: "MaxAppendEntries", Set: func(t *Timing) { t.MaxAppendEntries = 2000 }},
		configtest.Invalid[Timing]{Field: "SnapshotInterval", Set: func(t *Timing) { t.SnapshotInterval = -1 }},
	)
}

// stubApp is an Application for configuration tests: Validate only asks
// that one is set.
type stubApp struct{ Application }

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{NodeID: "n1", DataDir: "/data", PeerAddr: "127.0.0.1:0", App: stubApp{}},
		// MetaTiming defaults to a copy of Timing.
		Skip: []string{"MetaTiming"},
	},
		configtest.Invalid[Config]{Field: "NodeID", Set: func(c *Config) { c.NodeID = "" }},
		configtest.Invalid[Config]{Field: "DataDir", Set: func(c *Config) { c.DataDir = "" }},
		configtest.Invalid[Config]{Field: "PeerAddr", Set: func(c *Config) { c.PeerAddr = "" }},
		configtest.Invalid[Config]{Field: "Config.App", Set: func(c *Config) { c.App = nil }},
		configtest.Invalid[Config]{Field: "LeaseTTL", Set: func(c *Config) { c.LeaseTTL = time.Millisecond }},
		configtest.Invalid[Config]{Field: "ProposeTimeout", Set: func(c *Config) { c.ProposeTimeout = -1 }},
		configtest.Invalid[Config]{Field: "StopTimeout", Set: func(c *Config) { c.StopTimeout = -1 }},
		configtest.Invalid[Config]{Field: "Config.Timing.CommitTimeout", Set: func(c *Config) { c.Timing.CommitTimeout = -1 }},
		configtest.Invalid[Config]{Field: "Config.MetaTiming.CommitTimeout", Set: func(c *Config) { c.MetaTiming = &Timing{CommitTimeout: -1} }},
	)
	// The meta group follows the data groups' timing unless it has its own.
	c := Config{Timing: Timing{HeartbeatTimeout: 2 * time.Second}}.WithDefaults()
	if *c.MetaTiming != c.Timing {
		t.Fatalf("meta timing %+v, want the data groups' %+v", *c.MetaTiming, c.Timing)
	}
	own := Timing{ElectionTimeout: 3 * time.Second}
	if c := (Config{MetaTiming: &own}).WithDefaults(); c.MetaTiming.ElectionTimeout != 3*time.Second || c.MetaTiming.HeartbeatTimeout != DefaultTiming().HeartbeatTimeout {
		t.Fatalf("own meta timing: %+v", *c.MetaTiming)
	}
}
