package multiraft

import (
	"testing"
	"time"
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
