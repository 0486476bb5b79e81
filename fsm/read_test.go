package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
)

// A byte-bounded page stops before the event that would pass the bound,
// keeps at least one event, and paging on from it reads every event once.
func TestHistoryBytesBoundsThePage(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	const n, size = 20, 10 << 10
	var logs []*raft.Log
	for i := range n {
		data := append([]byte{'"'}, bytes.Repeat([]byte{byte('a' + i%26)}, size)...)
		logs = append(logs, m.entry(Command{Op: OpPublish, Room: "big", Member: "m", Data: append(data, '"')}))
	}
	r.applyBatch(logs)

	for _, tt := range []struct {
		name     string
		maxBytes int
		wantLen  int
	}{
		{"no bound", 0, n},
		{"bound of about three events", 3*(size+200) + 100, 3},
		{"bound below one event", 100, 1},
		{"bound above the room", 100 << 20, n},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := r.f.HistoryBytes("big", 1, 1000, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Events) != tt.wantLen {
				t.Fatalf("page has %d events (%d bytes), want %d", len(h.Events), h.Bytes, tt.wantLen)
			}
			if tt.maxBytes > 0 && len(h.Events) > 1 && h.Bytes > tt.maxBytes {
				t.Errorf("page counts %d bytes, over the bound %d", h.Bytes, tt.maxBytes)
			}
			if h.More() != (tt.wantLen < n) {
				t.Errorf("More() = %v with %d of %d events", h.More(), len(h.Events), n)
			}
			// Paging on from the last seq reads every event exactly once.
			seen := 0
			for from := uint64(1); ; {
				p, err := r.f.HistoryBytes("big", from, 1000, tt.maxBytes)
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range p.Events {
					if ev.Seq != from {
						t.Fatalf("got seq %d, want %d", ev.Seq, from)
					}
					from++
					seen++
				}
				if !p.More() {
					break
				}
			}
			if seen != n {
				t.Errorf("paging read %d events, want %d", seen, n)
			}
		})
	}
	if _, err := r.f.HistoryBytes("big", 1, 10, -1); err == nil {
		t.Error("a negative byte bound was accepted")
	}
}
