// Command herald-jepsen runs Herald's consistency harness (package jepsen):
// real herald serve processes, faults, many clients, and checkers on the
// recorded history. It exits 0 only when every run was valid: no anomaly,
// every room linearizable, recovery after the heal.
//
//	herald-jepsen [flags]            run (the quick preset unless -preset long)
//	herald-jepsen check RUN-FOLDER   check a recorded history again
//	herald-jepsen cleanup            remove what a crashed run left behind
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/jepsen"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return check(args[1:])
		case "cleanup":
			if err := jepsen.Cleanup(logf); err != nil {
				logf("cleanup: %v", err)
				return 2
			}
			return 0
		}
	}
	fs := flag.NewFlagSet("herald-jepsen", flag.ContinueOnError)
	preset := fs.String("preset", "quick", "quick (3 nodes, partitions, kills, pauses, a kill with a graceful stop; about a minute and a half), long (5 nodes, every fault, 5 minutes) or powerloss (quick with power losses, kills, partitions, pauses; 60 s)")
	herald := fs.String("herald", "", "herald binary to run (default: build ./cmd/herald)")
	tags := fs.String("tags", "", "build tags for the herald binary the harness builds")
	out := fs.String("out", filepath.Join(os.TempDir(), "herald-jepsen-runs"), "folder for the run folders")
	mode := fs.String("mode", "auto", "network: auto (netns if it works here, else proxy), netns or proxy")
	nodes := fs.Int("nodes", 0, "nodes (default: the preset's)")
	groups := fs.Int("groups", 0, "data groups (default: the preset's)")
	replication := fs.Int("replication", 0, "replicas per group (default: the preset's)")
	logStore := fs.String("log-store", "", "every node's raft log backend: badger, wal or bolt (default: herald serve's)")
	dur := fs.Duration("time", 0, "workload time under faults (default: the preset's)")
	recovery := fs.Duration("recovery", 0, "workload time after the final heal (default: the preset's)")
	faults := fs.String("faults", "", "comma-separated faults, or all: "+strings.Join(jepsen.AllFaults, ","))
	overlap := fs.Int("overlap", 0, "fault kinds active at once (default: the preset's)")
	seeds := fs.String("seed", "1", "seed of the schedule; several (1,2,3) make several runs")
	interval := fs.Duration("interval", 0, "each client's pause between operations (default: the preset's)")
	linearTimeout := fs.Duration("linear-timeout", 0, "porcupine's bound per room (default: the preset's)")
	keep := fs.Bool("keep-data", false, "keep the nodes' data dirs of valid runs")
	disks := fs.String("disks", "", "data dirs: auto (a lazy FUSE filesystem per node when this machine can mount one), lazy (required; power-loss needs it) or plain (default: the preset's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var base jepsen.Config
	switch *preset {
	case "quick":
		base = jepsen.QuickConfig()
	case "long":
		base = jepsen.LongConfig()
	case "powerloss":
		base = jepsen.PowerLossConfig()
	default:
		logf("-preset %s: want quick, long or powerloss", *preset)
		return 2
	}
	base.Mode, base.Out, base.KeepData, base.Logf = *mode, *out, *keep, logf
	if *disks != "" {
		base.Disks = *disks
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setDur := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	base.LogStore = *logStore
	setInt(&base.Nodes, *nodes)
	setInt(&base.Groups, *groups)
	setInt(&base.Replication, *replication)
	setInt(&base.Overlap, *overlap)
	setDur(&base.Time, *dur)
	setDur(&base.Recovery, *recovery)
	setDur(&base.Interval, *interval)
	setDur(&base.LinearTimeout, *linearTimeout)
	base.Replication = min(base.Replication, base.Nodes)
	if *faults == "all" {
		base.Faults = jepsen.AllFaults
	} else if *faults != "" {
		base.Faults = strings.Split(*faults, ",")
		for _, f := range base.Faults {
			if !slices.Contains(jepsen.AllFaults, f) {
				logf("-faults: unknown fault %q (want %s)", f, strings.Join(jepsen.AllFaults, ", "))
				return 2
			}
		}
	}
	var seedList []int64
	for s := range strings.SplitSeq(*seeds, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			logf("-seed %q: %v", s, err)
			return 2
		}
		seedList = append(seedList, v)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	base.Herald = *herald
	if base.Herald == "" {
		dir, err := os.MkdirTemp("", "herald-jepsen-bin-*")
		if err != nil {
			logf("%v", err)
			return 2
		}
		defer os.RemoveAll(dir)
		base.Herald = filepath.Join(dir, "herald")
		buildArgs := []string{"build", "-o", base.Herald}
		if *tags != "" {
			buildArgs = append(buildArgs, "-tags", *tags)
		}
		buildArgs = append(buildArgs, "github.com/heraldhq/herald/cmd/herald")
		logf("go %s", strings.Join(buildArgs, " "))
		build := exec.CommandContext(ctx, "go", buildArgs...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			logf("building herald: %v", err)
			return 2
		}
	}
	if abs, err := filepath.Abs(base.Herald); err == nil {
		base.Herald = abs
	}

	code := 0
	for _, seed := range seedList {
		cfg := base
		cfg.Seed = seed
		res, err := jepsen.Run(ctx, cfg)
		if res != nil {
			res.Summary(os.Stdout)
			fmt.Println()
			fmt.Printf("report: %s\n\n", res.Info.Dir)
		}
		switch {
		case err != nil:
			logf("run with seed %d: %v", seed, err)
			code = 2
		case !res.Valid:
			code = max(code, 1)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return code
}

// check checks a recorded run again and rewrites its report.
func check(args []string) int {
	fs := flag.NewFlagSet("herald-jepsen check", flag.ContinueOnError)
	linearTimeout := fs.Duration("linear-timeout", time.Minute, "porcupine's bound per room")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		logf("usage: herald-jepsen check RUN-FOLDER")
		return 2
	}
	dir := fs.Arg(0)
	h, err := jepsen.LoadHistory(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		logf("%v", err)
		return 2
	}
	info, err := jepsen.LoadInfo(filepath.Join(dir, "results.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		logf("%v", err)
		return 2
	}
	res := jepsen.Check(h, info, dir, *linearTimeout)
	if err := res.Write(dir, h); err != nil {
		logf("%v", err)
		return 2
	}
	res.Summary(os.Stdout)
	if !res.Valid {
		return 1
	}
	return 0
}
