package wsfront

import (
	"testing"
	"time"
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

// A configuration sets only the limits it changes: every other field that
// must be positive gets its default, and fields where zero has a meaning
// of its own keep it.
func TestLimitsWithDefaults(t *testing.T) {
	if got := (Limits{}).WithDefaults(); got != DefaultLimits() {
		t.Fatalf("zero limits: %+v, want the defaults", got)
	}
	l := Limits{MaxFrame: 1024, IdleTimeout: 90 * time.Second}.WithDefaults()
	d := DefaultLimits()
	if l.MaxFrame != 1024 || l.IdleTimeout != 90*time.Second {
		t.Fatalf("set fields changed: %+v", l)
	}
	if l.MaxData != d.MaxData || l.PublishRate != d.PublishRate || l.PingInterval != d.PingInterval || l.MaxQueueBytes != d.MaxQueueBytes {
		t.Fatalf("zero fields not defaulted: %+v", l)
	}
	if l.MaxSocketsPerIP != 0 || l.MaxSocketsPerUser != 0 || l.MaxSockets != 0 {
		t.Fatalf("fields where zero means no limit or derived were changed: %+v", l)
	}
	if err := l.Validate(); err != nil {
		t.Fatalf("one field set: %v", err)
	}
	if err := (Limits{MaxFrame: -1}).WithDefaults().Validate(); err == nil {
		t.Fatal("a negative limit passed")
	}
}
