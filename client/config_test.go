package client

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/internal/configtest"
)

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{URLs: []string{"ws://127.0.0.1:7071/ws"}, User: "alice"},
		// The credentials are alternatives: set alone, Token and
		// TokenSource only add to Base's User.
	},
		configtest.Invalid[Config]{Field: "URLs", Set: func(c *Config) { c.URLs = nil }},
		configtest.Invalid[Config]{Field: "Config.User", Set: func(c *Config) { c.User = "" }},
		configtest.Invalid[Config]{Field: "DialTimeout", Set: func(c *Config) { c.DialTimeout = -1 }},
		configtest.Invalid[Config]{Field: "RequestTimeout", Set: func(c *Config) { c.RequestTimeout = -1 }},
		configtest.Invalid[Config]{Field: "PingInterval", Set: func(c *Config) { c.PingInterval = -1 }},
		configtest.Invalid[Config]{Field: "MaxFrame", Set: func(c *Config) { c.MaxFrame = -1 }},
		configtest.Invalid[Config]{Field: "Backoff.Min", Set: func(c *Config) { c.Backoff.Min = -1 }},
		configtest.Invalid[Config]{Field: "Backoff.Max", Set: func(c *Config) { c.Backoff.Max = -1 }},
	)
	// Dial refuses what Validate refuses, before it dials.
	if _, err := Dial(context.Background(), Config{URLs: []string{"ws://127.0.0.1:1/ws"}}); err == nil {
		t.Fatal("Dial without credentials succeeded")
	}
}

func TestBackoffShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Backoff]{
		Defaults: DefaultBackoff(), WithDefaults: Backoff.WithDefaults, Validate: Backoff.Validate,
	},
		configtest.Invalid[Backoff]{Field: "Min", Set: func(b *Backoff) { b.Min = -1 }},
		configtest.Invalid[Backoff]{Field: "Max", Set: func(b *Backoff) { b.Max = -1 }},
	)
	// Min set above the default Max raises Max with it instead of making
	// it invalid.
	if b := (Backoff{Min: DefaultBackoff().Max * 2}).WithDefaults(); b.Max != b.Min {
		t.Fatalf("Min above the default Max: %+v", b)
	}
	// Delay cannot fail: a negative bound waits as the default does.
	if d := (Backoff{Min: -1, Jitter: NoJitter}).Delay(0); d != DefaultBackoff().Min {
		t.Fatalf("Delay with a negative Min: %v", d)
	}
}
