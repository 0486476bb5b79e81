package jepsen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Results is everything a run found.
type Results struct {
	// Valid: every safety count is 0, every room linearizable (not just
	// not refuted), the cluster recovered and no node crashed.
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"`
	Info     RunInfo  `json:"info"`
	// Ops counts operations by function and outcome.
	Ops          map[string]map[string]int `json:"ops"`
	Log          LogResult                 `json:"log"`
	Streams      StreamResult              `json:"streams"`
	Divergence   DivergenceResult          `json:"divergence"`
	Linear       LinearResult              `json:"linearizability"`
	Availability AvailabilityResult        `json:"availability"`
}

// Check runs every checker on a history. Porcupine's visualizations of
// illegal rooms go to dir.
func Check(h History, info RunInfo, dir string, linearTimeout time.Duration) *Results {
	r := &Results{Info: info, Ops: map[string]map[string]int{}}
	for i := range h {
		op := &h[i]
		if r.Ops[op.F] == nil {
			r.Ops[op.F] = map[string]int{}
		}
		r.Ops[op.F][op.Type]++
	}
	r.Log = CheckLog(h)
	r.Streams = CheckStreams(h)
	r.Divergence = CheckDivergence(h)
	r.Linear = CheckLinear(h, linearTimeout, dir)
	r.Availability = CheckAvailability(h)

	bad := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	for _, c := range []struct {
		name string
		n    int
	}{
		{"lost", r.Log.Lost.Count}, {"duplicated", r.Log.Duplicated.Count}, {"inconsistent", r.Log.Inconsistent.Count},
		{"aborted reads", r.Log.Aborted.Count}, {"unexpected", r.Log.Unexpected.Count}, {"reordered", r.Log.Reordered.Count},
		{"stale reads", r.Log.Stale.Count}, {"skipped in reads", r.Log.Skipped.Count},
		{"skipped in subscriptions", r.Streams.Skipped.Count}, {"reordered in subscriptions", r.Streams.Reordered.Count},
		{"duplicated in subscriptions", r.Streams.Duplicated.Count}, {"inconsistent in subscriptions", r.Streams.Inconsistent.Count},
		{"divergent replicas", r.Divergence.Divergent.Count},
		{"rooms not linearizable", r.Linear.Illegal}, {"rooms with an inconclusive linearizability check", r.Linear.Unknown},
	} {
		if c.n > 0 {
			bad("%s: %d", c.name, c.n)
		}
	}
	if len(r.Log.Unchecked) > 0 {
		bad("rooms without a final history: %v", r.Log.Unchecked)
	}
	if r.Divergence.Unread.Count > 0 {
		bad("final reads unanswered: %d", r.Divergence.Unread.Count)
	}
	if r.Streams.Lagging.Count > 0 {
		bad("subscriptions that never caught up: %d", r.Streams.Lagging.Count)
	}
	if len(r.Availability.Unrecovered) > 0 {
		bad("rooms that took no write after the final heal: %v", r.Availability.Unrecovered)
	}
	if !info.Ready && info.Started != (time.Time{}) {
		bad("nodes not ready after the final heal: %v", info.NotReady)
	}
	if info.Contact != nil && !info.Contact.InContact {
		bad("replicas not in contact with their group's leader %.0fs after the final heal (bound %.0fs): %s",
			info.Contact.After, info.Contact.Bound, strings.Join(firstN(info.Contact.Problems, 5), "; "))
	}
	if len(info.Crashes) > 0 {
		bad("nodes that exited on their own: %d", len(info.Crashes))
	}
	r.Valid = len(r.Problems) == 0
	return r
}

// Write writes the run folder: history.jsonl, results.json, summary.txt and
// the plots.
func (r *Results) Write(dir string, h History) error {
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return err
	}
	if err := h.WriteJSONL(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var sb strings.Builder
	r.Summary(&sb)
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latency.svg"), latencyPlot(h), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "throughput.svg"), throughputPlot(h), 0o644)
}

// Summary writes the human-readable report.
func (r *Results) Summary(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	in := r.Info
	p("herald-jepsen run of %s", in.Started.Format(time.RFC3339))
	p("  folder       %s", in.Dir)
	p("  cluster      %d nodes, %d groups, replication %d; seed %d", in.Nodes, in.Groups, in.Replication, in.Seed)
	if in.LogStore != "" {
		p("  log store    %s", in.LogStore)
	}
	p("  network      %s", in.Network)
	if in.Disks != "" {
		p("  disks        %s", in.Disks)
	}
	if in.Fallback != "" {
		p("               (%s)", in.Fallback)
	}
	p("  faults       %s (overlap %d); %.0fs under faults, %.0fs after the final heal; %.0fs in all",
		strings.Join(in.Faults, ", "), in.Overlap, in.Time, in.Recovery, in.Elapsed)
	for _, n := range in.Notes {
		p("               %s", n)
	}
	p("")
	if r.Valid {
		p("VERDICT: valid: no anomaly, every room linearizable, recovered after the heal")
	} else {
		p("VERDICT: INVALID")
		for _, pr := range r.Problems {
			p("  - %s", pr)
		}
	}
	p("")
	p("operations (ok / fail / info)")
	fs := make([]string, 0, len(r.Ops))
	for f := range r.Ops {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	for _, f := range fs {
		m := r.Ops[f]
		p("  %-14s %7d %7d %7d", f, m[TypeOK], m[TypeFail], m[TypeInfo])
	}
	p("")
	l := r.Log
	p("messages: %d published: %d acknowledged, %d failed for certain (%d of them conditional publishes refused as conflicts), %d of unknown outcome (%d of which took effect)",
		l.Publishes, l.Acked, l.Failed, l.Conflicts, l.Unknown, l.Recovered.Count)
	p("  lost %d, duplicated %d, reordered %d, skipped %d, inconsistent %d, aborted %d, unexpected %d, stale reads %d",
		l.Lost.Count, l.Duplicated.Count, l.Reordered.Count, l.Skipped.Count, l.Inconsistent.Count, l.Aborted.Count,
		l.Unexpected.Count, l.Stale.Count)
	s := r.Streams
	p("subscriptions: %d subscribers, %d (re)subscriptions, %d events delivered", s.Subscribers, s.Streams, s.Delivered)
	p("  skipped %d, reordered %d, duplicated %d, inconsistent %d; notices %d; never caught up %d",
		s.Skipped.Count, s.Reordered.Count, s.Duplicated.Count, s.Inconsistent.Count, s.Notices.Count, s.Lagging.Count)
	d := r.Divergence
	p("replicas: %d final reads of %d rooms: divergent %d, behind after settling %d, unanswered %d",
		d.Reads, d.Rooms, d.Divergent.Count, d.Behind.Count, d.Unread.Count)
	p("")
	p("linearizability (porcupine, per room): %d ok, %d illegal, %d inconclusive", r.Linear.OK, r.Linear.Illegal, r.Linear.Unknown)
	for _, v := range r.Linear.Rooms {
		extra := ""
		if v.HTML != "" {
			extra = "  see " + v.HTML
		}
		p("  %-8s %-4s %6d ops  %-8s %6.2fs%s", v.Room, v.Model, v.Ops, v.Verdict, v.Seconds, extra)
	}
	p("")
	a := r.Availability
	p("faults and availability (share of requests answered)")
	for _, w := range a.Windows {
		rec := "no write since"
		if w.Recovery >= 0 {
			rec = fmt.Sprintf("next write %.1fs after", w.Recovery)
		}
		out := ""
		if w.Outcome != TypeOK {
			out = "  [" + w.Outcome + ": " + w.Message + "]"
		}
		fo := ""
		switch {
		case w.Failover > 0:
			fo = fmt.Sprintf("; new leaders after %.2fs", w.Failover)
		case w.Failover < 0:
			fo = "; no new leaders before the heal"
		}
		p("  %6.1f–%6.1fs  %-9s %-44s %5.1f%% of %5d; %s; longest write gap %.2fs%s%s", w.Start, w.End, w.Kind, w.Desc, 100*w.Rate, w.Attempts, rec, w.Gap, fo, out)
	}
	p("  during faults %.1f%% of %d, outside them %.1f%% of %d, after the final heal %.1f%% of %d",
		100*a.Faulty.Rate, a.Faulty.Attempts, 100*a.Quiet.Rate, a.Quiet.Attempts, 100*a.AfterHeal.Rate, a.AfterHeal.Attempts)
	p("  longest time without a write: %.1fs (from %.1fs)", a.LongestOutage, a.LongestOutageAt)
	if a.Recovery >= 0 {
		p("  every room took a write again %.1fs after the final heal", a.Recovery)
	} else {
		p("  rooms without a write after the final heal: %v", a.Unrecovered)
	}
	switch ct := in.Contact; {
	case ct == nil:
	case ct.InContact:
		p("  every replica in contact with its group's leader, checked %.1fs after the final heal (bound %.0fs)", ct.After, ct.Bound)
	default:
		p("  replicas NOT in contact with their group's leader %.0fs after the final heal (bound %.0fs):", ct.After, ct.Bound)
		for _, pr := range ct.Problems {
			p("    %s", pr)
		}
		if len(ct.Dumps) > 0 {
			p("  goroutine dumps taken then: %s", strings.Join(ct.Dumps, ", "))
		}
		if len(ct.DumpFailures) > 0 {
			p("  goroutine dumps not taken: %s", strings.Join(ct.DumpFailures, "; "))
		}
	}
	if len(in.StartFailures) > 0 {
		p("")
		p("nodes that gave up starting (started again 2s later)")
		for _, f := range in.StartFailures {
			p("  %s", f)
		}
	}
	if len(in.Crashes) > 0 {
		p("")
		p("nodes that exited on their own")
		for _, c := range in.Crashes {
			p("  %s", strings.ReplaceAll(c, "\n", "\n    "))
		}
	}
	findings := []struct {
		name string
		f    Finding
	}{
		{"lost", l.Lost}, {"duplicated", l.Duplicated}, {"inconsistent", l.Inconsistent}, {"aborted", l.Aborted},
		{"unexpected", l.Unexpected}, {"reordered", l.Reordered}, {"stale", l.Stale}, {"skipped", l.Skipped},
		{"subscription skipped", s.Skipped}, {"subscription reordered", s.Reordered}, {"subscription duplicated", s.Duplicated},
		{"subscription inconsistent", s.Inconsistent}, {"subscription never caught up", s.Lagging},
		{"divergent", d.Divergent}, {"unanswered final read", d.Unread},
	}
	first := true
	for _, f := range findings {
		if f.f.Count == 0 {
			continue
		}
		if first {
			p("")
			p("examples (ops are ids in history.jsonl)")
			first = false
		}
		for i, e := range f.f.Examples {
			if i == 5 {
				p("  %s: … %d more in results.json", f.name, f.f.Count-5)
				break
			}
			p("  %s: %s", f.name, e.Detail)
		}
	}
}

// LoadInfo reads the run description from a run folder's results.json.
func LoadInfo(path string) (RunInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return RunInfo{}, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return RunInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	return r.Info, nil
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
