package jepsen

import (
	"math"
	"slices"
	"testing"
	"time"
)

const sec = int64(time.Second)

func TestAvailability(t *testing.T) {
	h := History{
		{ID: 1, F: FPhase, Value: PhaseWorkload, Type: TypeOK, Start: 0, End: 0},
		{ID: 2, F: FPublish, Room: "r", Value: "a", Type: TypeOK, Seq: 1, Start: 1 * sec, End: 1*sec + 1},
		// A partition from 2 s to 6 s: two attempts fail, a conflict is an
		// answer.
		{ID: 3, F: FFault, Fault: FaultPartition, Value: "isolate n1", Type: TypeOK, Start: 2 * sec, End: 6 * sec, Failover: 0.75},
		{ID: 4, F: FPublish, Room: "r", Value: "b", Type: TypeFail, Error: "unavailable", Start: 3 * sec, End: 3*sec + 1},
		{ID: 5, F: FPublish, Room: "r", Value: "b", Type: TypeInfo, Error: "timeout", Start: 4 * sec, End: 5 * sec},
		{ID: 6, F: FPublish, Room: "r", Value: "x", ExpectSeq: u64(0), Type: TypeFail, Error: "conflict", Start: 5 * sec, End: 5*sec + 1},
		// A point transfer is not a window of its own.
		{ID: 7, F: FFault, Fault: FaultLeaderTransfer, Type: TypeOK, Start: 5 * sec, End: 5 * sec},
		{ID: 8, F: FPublish, Room: "r", Value: "b", Type: TypeOK, Seq: 2, Start: 7 * sec, End: 8 * sec},
		{ID: 9, F: FPhase, Value: PhaseFinalHeal, Type: TypeOK, Start: 9 * sec, End: 9 * sec},
		{ID: 10, F: FPublish, Room: "r", Value: "c", Type: TypeOK, Seq: 3, Start: 10 * sec, End: 11 * sec},
		{ID: 11, F: FRead, Room: "r", Type: TypeOK, LastSeq: 3, Start: 11 * sec, End: 12 * sec},
		{ID: 12, F: FPhase, Value: PhaseQuiesce, Type: TypeOK, Start: 12 * sec, End: 12 * sec},
	}
	a := CheckAvailability(h)
	if len(a.Windows) != 1 {
		t.Fatalf("windows: %+v", a.Windows)
	}
	w := a.Windows[0]
	if w.Attempts != 3 || w.Answered != 1 || math.Abs(w.Rate-1.0/3) > 1e-9 {
		t.Fatalf("window: %+v", w)
	}
	// Answered writes at 1 s, 5 s and 8 s: both gaps touch the window.
	if math.Abs(w.Gap-4) > 1e-6 || w.Failover != 0.75 {
		t.Fatalf("window's gap %v, failover %v", w.Gap, w.Failover)
	}
	// The next answered write after the heal at 6 s is b's, at 8 s.
	if math.Abs(w.Recovery-2) > 1e-6 {
		t.Fatalf("recovery after the window: %v", w.Recovery)
	}
	if a.Faulty.Attempts != 3 || a.Quiet.Attempts != 2 || a.AfterHeal.Attempts != 2 || a.AfterHeal.Rate != 1 {
		t.Fatalf("spans: faulty %+v quiet %+v after %+v", a.Faulty, a.Quiet, a.AfterHeal)
	}
	// Writes answered at 1 s, 5 s (the conflict), 8 s, 11 s; the workload
	// ends at 12 s.
	if math.Abs(a.LongestOutage-4) > 1e-6 || math.Abs(a.LongestOutageAt-1) > 1e-6 {
		t.Fatalf("longest outage %v at %v", a.LongestOutage, a.LongestOutageAt)
	}
	if math.Abs(a.Recovery-2) > 1e-6 || len(a.Unrecovered) != 0 {
		t.Fatalf("recovery %v, unrecovered %v", a.Recovery, a.Unrecovered)
	}
	// Without a write after the heal, the room has not recovered.
	h = append(h[:9:9], h[10:]...)
	if a := CheckAvailability(h); a.Recovery != -1 || len(a.Unrecovered) != 1 {
		t.Fatalf("recovery %v, unrecovered %v", a.Recovery, a.Unrecovered)
	}
}

// Every fault kind comes up within one round of windows, whatever the seed.
func TestScheduleCoversEveryFault(t *testing.T) {
	for seed := int64(0); seed < 20; seed++ {
		for _, overlap := range []int{1, 2, 3} {
			nm := newNemesis(NemesisConfig{Faults: AllFaults, Overlap: overlap, Seed: seed}, nil, nil, nil, nil)
			seen := map[string]bool{}
			for range (len(AllFaults) + overlap - 1) / overlap {
				kinds := nm.next()
				if len(kinds) != overlap {
					t.Fatalf("seed %d: window of %d kinds, want %d", seed, len(kinds), overlap)
				}
				for i, k := range kinds {
					if slices.Contains(kinds[:i], k) {
						t.Fatalf("seed %d: %s twice in one window", seed, k)
					}
					seen[k] = true
				}
			}
			if len(seen) != len(AllFaults) {
				t.Fatalf("seed %d, overlap %d: only %v in the first round", seed, overlap, seen)
			}
		}
	}
}
