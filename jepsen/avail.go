package jepsen

import "sort"

// Window is one fault's time span with how the clients fared in it.
type Window struct {
	Kind  string   `json:"kind"`
	Desc  string   `json:"desc"`
	Nodes []string `json:"nodes,omitempty"`
	Start float64  `json:"start"` // seconds since the run began
	End   float64  `json:"end"`
	// Outcome is ok when the fault was injected and healed as planned.
	Outcome  string  `json:"outcome"`
	Message  string  `json:"message,omitempty"`
	Attempts int     `json:"attempts"`
	Answered int     `json:"answered"`
	Rate     float64 `json:"rate"`
	// Recovery is how long after the heal the next publish succeeded
	// (-1: none did).
	Recovery float64 `json:"recovery"`
	// Gap is the longest time without an answered write anywhere that
	// overlaps the window.
	Gap float64 `json:"gap"`
	// Failover is the op's: for a pause of a leader, the seconds until its
	// groups had new leaders (0: not measured, -1: not before the heal).
	Failover float64 `json:"failover,omitempty"`
}

// Span counts the attempts of a stretch of time.
type Span struct {
	Attempts int     `json:"attempts"`
	Answered int     `json:"answered"`
	Rate     float64 `json:"rate"`
}

// AvailabilityResult says how available the cluster was.
type AvailabilityResult struct {
	Windows []Window `json:"windows"`
	// Faulty and Quiet count attempts that began during some fault, and
	// outside any, before the final heal; AfterHeal those after it.
	Faulty    Span `json:"faulty"`
	Quiet     Span `json:"quiet"`
	AfterHeal Span `json:"after_heal"`
	// LongestOutage is the longest time without a successful publish
	// anywhere, from the start of the workload to its end.
	LongestOutage   float64 `json:"longest_outage"`
	LongestOutageAt float64 `json:"longest_outage_at"`
	// Recovery is the time from the final heal until every room had taken
	// a write again; -1 when some never did.
	Recovery float64 `json:"recovery"`
	// Unrecovered lists rooms that took no write after the final heal.
	Unrecovered []string `json:"unrecovered,omitempty"`
}

// answered reports whether the cluster gave an attempt a definite answer:
// success or a refusal that means it was working (a conflict, a leave of a
// non-member).
func answered(op *Op) bool {
	return op.Type == TypeOK || op.Error == "conflict" || op.Error == "not_found"
}

func clientOp(op *Op) bool {
	switch op.F {
	case FPublish, FRead, FMembers, FJoin, FLeave:
		return true
	}
	return false
}

func secs(ns int64) float64 { return float64(ns) / 1e9 }

// CheckAvailability measures ok rates during and outside faults, the
// longest outage and the recovery after the final heal.
func CheckAvailability(h History) AvailabilityResult {
	ix := newIndex(h)
	var r AvailabilityResult
	var faults []*Op
	for i := range h {
		op := &h[i]
		if isWindow(op) {
			faults = append(faults, op)
		}
	}
	var writes []*Op // answered writes in time order
	for i := range h {
		op := &h[i]
		if (op.F == FPublish || op.F == FJoin || op.F == FLeave) && answered(op) {
			writes = append(writes, op)
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].End < writes[j].End })
	nextWrite := func(t int64) float64 {
		i := sort.Search(len(writes), func(i int) bool { return writes[i].End >= t })
		if i == len(writes) {
			return -1
		}
		return secs(writes[i].End - t)
	}
	heal, hasHeal := ix.phases[PhaseFinalHeal]
	for _, f := range faults {
		w := Window{Kind: f.Fault, Desc: f.Value, Nodes: f.Nodes, Start: secs(f.Start), End: secs(f.End),
			Outcome: f.Type, Message: f.Message, Recovery: nextWrite(f.End), Failover: f.Failover}
		prev := ix.phases[PhaseWorkload]
		for _, wr := range writes {
			if wr.End >= f.Start && prev <= f.End {
				w.Gap = max(w.Gap, secs(wr.End-prev))
			}
			if wr.End > f.End {
				break
			}
			prev = max(prev, wr.End)
		}
		for i := range h {
			op := &h[i]
			if clientOp(op) && op.Start >= f.Start && op.Start <= f.End {
				w.Attempts++
				if answered(op) {
					w.Answered++
				}
			}
		}
		w.Rate = rate(w.Answered, w.Attempts)
		r.Windows = append(r.Windows, w)
	}
	inFault := func(t int64) bool {
		for _, f := range faults {
			if t >= f.Start && t <= f.End {
				return true
			}
		}
		return false
	}
	for i := range h {
		op := &h[i]
		if !clientOp(op) {
			continue
		}
		var s *Span
		switch {
		case hasHeal && op.Start >= heal:
			s = &r.AfterHeal
		case inFault(op.Start):
			s = &r.Faulty
		default:
			s = &r.Quiet
		}
		s.Attempts++
		if answered(op) {
			s.Answered++
		}
	}
	for _, s := range []*Span{&r.Faulty, &r.Quiet, &r.AfterHeal} {
		s.Rate = rate(s.Answered, s.Attempts)
	}
	begin, end := ix.phases[PhaseWorkload], ix.phases[PhaseQuiesce]
	if end == 0 {
		end = ix.maxTime
	}
	last := begin
	for _, w := range writes {
		if w.End < begin || w.End > end {
			continue
		}
		if gap := w.End - last; secs(gap) > r.LongestOutage {
			r.LongestOutage, r.LongestOutageAt = secs(gap), secs(last)
		}
		last = w.End
	}
	if gap := end - last; secs(gap) > r.LongestOutage {
		r.LongestOutage, r.LongestOutageAt = secs(gap), secs(last)
	}
	r.Recovery = -1
	if hasHeal {
		firstAfter := map[string]int64{}
		written := map[string]bool{}
		for _, w := range writes {
			written[w.Room] = true
			if w.End >= heal {
				if t, ok := firstAfter[w.Room]; !ok || w.End < t {
					firstAfter[w.Room] = w.End
				}
			}
		}
		worst := int64(0)
		for _, room := range ix.rooms {
			if !written[room] && !ix.hasClientOps(room) {
				continue
			}
			t, ok := firstAfter[room]
			if !ok {
				r.Unrecovered = append(r.Unrecovered, room)
				continue
			}
			worst = max(worst, t-heal)
		}
		if len(r.Unrecovered) == 0 {
			r.Recovery = secs(worst)
		}
	}
	return r
}

// isWindow reports whether op is a fault with a time span of its own:
// not one step of a transfer window, nor a node's own exit.
func isWindow(op *Op) bool {
	return op.F == FFault && op.Fault != FaultLeaderTransfer && op.Fault != FaultCrash && op.Fault != FaultStartFailed
}

func rate(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}
