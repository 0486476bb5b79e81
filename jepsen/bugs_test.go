package jepsen

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/heraldbin"
)

// TestPlantedBugs proves that the harness bites: it builds herald with one
// planted bug at a time (build tags jepsenbug_*, off in normal builds) and
// checks that a short run under faults reports the matching anomaly. It
// runs real clusters for minutes, so only when HERALD_JEPSEN_BUGS is set
// (make jepsen); run folders go to HERALD_JEPSEN_OUT, or a temporary dir.
func TestPlantedBugs(t *testing.T) {
	if os.Getenv("HERALD_JEPSEN_BUGS") == "" {
		t.Skip("set HERALD_JEPSEN_BUGS=1 to run the harness against planted bugs (make jepsen)")
	}
	bugs := []struct {
		tag    string
		faults []string
		// disks, when set, is the run's Config.Disks.
		disks string
		// found counts the anomalies the bug must cause.
		found func(*Results) int
		what  string
	}{
		{"jepsenbug_ackearly", []string{FaultPartition, FaultPause}, "",
			func(r *Results) int { return r.Log.Lost.Count }, "lost messages"},
		{"jepsenbug_staleread", []string{FaultPartition}, "",
			func(r *Results) int { return r.Log.Stale.Count + r.Linear.Illegal }, "stale reads and rooms not linearizable"},
		// Without the key check a retry of a publish that did commit
		// appends it again, or, for a conditional one, is refused as a
		// conflict although it took effect: porcupine sees the latter.
		{"jepsenbug_nodedup", []string{FaultPartition, FaultPause}, "",
			func(r *Results) int { return r.Log.Duplicated.Count + r.Linear.Illegal }, "duplicated messages and rooms not linearizable"},
		// A log store that never fsyncs loses acknowledged entries only
		// when a quorum loses its page cache; kill -9 alone does not show
		// it (docs/jepsen.md). A quorum that forgot its log may also
		// fail to come back: that counts too.
		{"jepsenbug_nosync", []string{FaultPowerLoss}, "lazy",
			func(r *Results) int {
				return r.Log.Lost.Count + r.Linear.Illegal + len(r.Info.Crashes) + len(r.Info.NotReady)
			}, "lost messages, rooms not linearizable or nodes that did not recover"},
	}
	out := os.Getenv("HERALD_JEPSEN_OUT")
	for _, bug := range bugs {
		t.Run(bug.tag, func(t *testing.T) {
			dir := t.TempDir()
			bin, err := heraldbin.Build(dir, "-tags", bug.tag)
			if err != nil {
				t.Fatalf("with %s: %v", bug.tag, err)
			}
			runs := dir
			if out != "" {
				runs = out
			}
			// A bug shows only when the faults give it a chance; more
			// schedules make a miss unlikely.
			for _, seed := range []int64{1, 2, 3} {
				cfg := QuickConfig()
				cfg.Herald, cfg.Out, cfg.Name, cfg.Seed = bin, runs, bug.tag+"-", seed
				cfg.Time, cfg.Faults = 40*time.Second, bug.faults
				if bug.disks != "" {
					cfg.Disks = bug.disks
				}
				cfg.Logf = t.Logf
				res, err := Run(context.Background(), cfg)
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				var sb strings.Builder
				res.Summary(&sb)
				if n := bug.found(res); n > 0 {
					t.Logf("seed %d: the harness reports %d %s:\n%s", seed, n, bug.what, sb.String())
					if res.Valid {
						t.Fatal("the run found the bug, yet says it is valid")
					}
					return
				}
				t.Logf("seed %d: no %s:\n%s", seed, bug.what, sb.String())
			}
			t.Fatalf("the harness did not find %s with the bug %s planted", bug.what, bug.tag)
		})
	}
}
