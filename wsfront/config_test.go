package wsfront

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/configtest"
	"github.com/heraldhq/herald/wsfront/auth"
)

// The read budgets: zero means the documented default, a page is cut to
// half the socket's queue, and a node budget below one page is refused.
func TestReadBudgetLimits(t *testing.T) {
	for _, tt := range []struct {
		name               string
		page, read, queue  int
		wantPage, wantRead int
		wantErr            bool
	}{
		{"defaults", 0, 0, 4 << 20, DefaultMaxPageBytes, DefaultMaxReadBytes, false},
		{"page cut to half the queue", 8 << 20, 0, 1 << 20, 512 << 10, DefaultMaxReadBytes, false},
		{"explicit", 256 << 10, 1 << 20, 4 << 20, 256 << 10, 1 << 20, false},
		{"node budget below a page", 1 << 20, 512 << 10, 4 << 20, 1 << 20, 512 << 10, true},
		{"negative page", -1, 0, 4 << 20, DefaultMaxPageBytes, DefaultMaxReadBytes, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			l.MaxPageBytes, l.MaxReadBytes, l.MaxQueueBytes = tt.page, tt.read, tt.queue
			if got := l.pageBytes(); got != tt.wantPage {
				t.Errorf("pageBytes() = %d, want %d", got, tt.wantPage)
			}
			if got := l.readBytes(); got != tt.wantRead {
				t.Errorf("readBytes() = %d, want %d", got, tt.wantRead)
			}
			if err := l.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}

// A configuration sets only the limits it changes: every zero field gets
// its default, whatever else is set, and a refused limit is named.
func TestLimitsShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Limits]{
		Defaults: DefaultLimits(), WithDefaults: Limits.WithDefaults, Validate: Limits.Validate,
	},
		configtest.Invalid[Limits]{Field: "MaxFrame", Set: func(l *Limits) { l.MaxFrame = -1 }},
		configtest.Invalid[Limits]{Field: "MaxData", Set: func(l *Limits) { l.MaxData = -1 }},
		configtest.Invalid[Limits]{Field: "MaxData", Set: func(l *Limits) { l.MaxData = fsm.MaxPayloadBytes + 1 }},
		configtest.Invalid[Limits]{Field: "MaxRooms", Set: func(l *Limits) { l.MaxRooms = -1 }},
		configtest.Invalid[Limits]{Field: "PublishRate", Set: func(l *Limits) { l.PublishRate = -1 }},
		configtest.Invalid[Limits]{Field: "PublishBurst", Set: func(l *Limits) { l.PublishBurst = -1 }},
		configtest.Invalid[Limits]{Field: "MaxInflight", Set: func(l *Limits) { l.MaxInflight = -1 }},
		configtest.Invalid[Limits]{Field: "MaxQueueFrames", Set: func(l *Limits) { l.MaxQueueFrames = -1 }},
		configtest.Invalid[Limits]{Field: "MaxQueueBytes", Set: func(l *Limits) { l.MaxQueueBytes = -1 }},
		configtest.Invalid[Limits]{Field: "MaxPageBytes", Set: func(l *Limits) { l.MaxPageBytes = -1 }},
		configtest.Invalid[Limits]{Field: "MaxReadBytes", Set: func(l *Limits) { l.MaxReadBytes = -1 }},
		configtest.Invalid[Limits]{Field: "MaxReadBytes", Set: func(l *Limits) { l.MaxReadBytes = 1 }},
		configtest.Invalid[Limits]{Field: "AuthTimeout", Set: func(l *Limits) { l.AuthTimeout = -1 }},
		configtest.Invalid[Limits]{Field: "IdleTimeout", Set: func(l *Limits) { l.IdleTimeout = -1 }},
		configtest.Invalid[Limits]{Field: "PingInterval", Set: func(l *Limits) { l.PingInterval = -1 }},
		configtest.Invalid[Limits]{Field: "PingInterval", Set: func(l *Limits) { l.PingInterval = time.Hour }},
		configtest.Invalid[Limits]{Field: "RequestTimeout", Set: func(l *Limits) { l.RequestTimeout = -1 }},
		configtest.Invalid[Limits]{Field: "HandshakeTimeout", Set: func(l *Limits) { l.HandshakeTimeout = -1 }},
		configtest.Invalid[Limits]{Field: "LeaveTimeout", Set: func(l *Limits) { l.LeaveTimeout = -1 }},
		configtest.Invalid[Limits]{Field: "MaxSockets", Set: func(l *Limits) { l.MaxSockets = -1 }},
	)
	// The per-address and per-user limits are off only when asked.
	off := Limits{MaxSocketsPerIP: NoLimit, MaxSocketsPerUser: NoLimit}.WithDefaults()
	if err := off.Validate(); err != nil || off.MaxSocketsPerIP >= 0 || off.MaxSocketsPerUser >= 0 {
		t.Fatalf("NoLimit: %+v, %v", off, err)
	}
}

func TestConfigShape(t *testing.T) {
	configtest.Check(t, configtest.Shape[Config]{
		Defaults: DefaultConfig(), WithDefaults: Config.WithDefaults, Validate: Config.Validate,
		Base: Config{Backend: nopBackend{}, Auth: auth.Config{Insecure: true}},
	},
		configtest.Invalid[Config]{Field: "Config.Backend", Set: func(c *Config) { c.Backend = nil }},
		configtest.Invalid[Config]{Field: "Config.Auth", Set: func(c *Config) { c.Auth = auth.Config{} }},
		configtest.Invalid[Config]{Field: "Limits.MaxFrame", Set: func(c *Config) { c.Limits.MaxFrame = -1 }},
	)
}

// nopBackend is a Backend for configuration tests: Validate only asks
// that one is set.
type nopBackend struct{ Backend }
