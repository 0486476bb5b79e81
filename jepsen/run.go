package jepsen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/jepsen/lazyfs"
)

// Config describes one run.
type Config struct {
	Herald string // the herald binary
	Out    string // the run's folder is made in here
	Name   string // prefix of the run's folder name
	Mode   string // auto, netns or proxy
	// Disks is auto (a lazy filesystem per node when this machine can
	// mount one), lazy (required) or plain (the data dirs as they are).
	Disks string

	Nodes, Groups, Replication int
	Seed                       int64
	// LogStore is every node's --log-store; empty leaves the server's
	// default.
	LogStore string

	// Time is how long the workload runs under faults; Recovery how long it
	// goes on after the final heal.
	Time, Recovery time.Duration
	Faults         []string
	Overlap        int
	// Warmup, FaultMin, FaultMax and Quiet shape the schedule (see
	// NemesisConfig).
	Warmup, FaultMin, FaultMax, Quiet time.Duration

	LogRooms, CasRooms, MemRooms                int
	Writers, Readers, Cas, Members, Subscribers int
	Interval                                    time.Duration

	// LinearTimeout bounds porcupine on one room.
	LinearTimeout time.Duration
	// KeepData keeps the nodes' data dirs of a valid run (an invalid
	// run's are always kept).
	KeepData bool
	Logf     func(string, ...any)
}

// QuickConfig is the short run of CI: 3 nodes, partitions, kills, pauses
// and a kill with a graceful stop together; about a minute and a half
// from start to report.
func QuickConfig() Config {
	return Config{
		Mode: "auto", Disks: "auto", Nodes: 3, Groups: 8, Replication: 3, Seed: 1,
		Time: 80 * time.Second, Recovery: 8 * time.Second,
		Faults:  []string{FaultPartition, FaultKill, FaultPause, FaultKillTerm},
		Overlap: 1, Warmup: 4 * time.Second, FaultMin: 5 * time.Second, FaultMax: 9 * time.Second, Quiet: 3 * time.Second,
		LogRooms: 5, CasRooms: 2, MemRooms: 2,
		Writers: 6, Readers: 2, Cas: 3, Members: 3, Subscribers: 5,
		Interval: 60 * time.Millisecond, LinearTimeout: 30 * time.Second,
	}
}

// LongConfig is a longer run with every fault on 5 nodes.
func LongConfig() Config {
	c := QuickConfig()
	c.Nodes, c.Groups = 5, 16
	c.Time, c.Recovery = 5*time.Minute, 15*time.Second
	c.Faults = AllFaults
	c.FaultMin, c.FaultMax, c.Quiet = 6*time.Second, 15*time.Second, 5*time.Second
	c.LogRooms, c.CasRooms, c.MemRooms = 8, 3, 3
	c.Writers, c.Readers, c.Cas, c.Members, c.Subscribers = 8, 3, 4, 4, 8
	c.LinearTimeout = 2 * time.Minute
	return c
}

// PowerLossConfig is the quick run with power losses (one node, or every
// node at once) mixed with kills, partitions and pauses.
func PowerLossConfig() Config {
	c := QuickConfig()
	c.Disks = "lazy"
	c.Time = 60 * time.Second
	c.Faults = []string{FaultPowerLoss, FaultKill, FaultPartition, FaultPause}
	return c
}

// RunInfo is what a run was, for the report.
type RunInfo struct {
	Started  time.Time `json:"started"`
	Dir      string    `json:"dir"`
	Mode     string    `json:"mode"`
	Network  string    `json:"network"`
	Fallback string    `json:"fallback,omitempty"`
	// Disks says whether the data dirs were on lazy filesystems, and
	// why not.
	Disks       string   `json:"disks"`
	Herald      string   `json:"herald"`
	Seed        int64    `json:"seed"`
	Nodes       int      `json:"nodes"`
	Groups      int      `json:"groups"`
	Replication int      `json:"replication"`
	LogStore    string   `json:"log_store,omitempty"`
	Faults      []string `json:"faults"`
	Overlap     int      `json:"overlap"`
	Time        float64  `json:"time"`
	Recovery    float64  `json:"recovery"`
	Rooms       []string `json:"rooms"`
	Notes       []string `json:"notes,omitempty"`
	// Ready: every node answered /readyz after the final heal.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready,omitempty"`
	Crashes  []string `json:"crashes,omitempty"`
	// Contact: whether every replica was in contact with its group's
	// leader within ContactBound of the final heal (nil: not checked).
	Contact *ContactResult `json:"contact,omitempty"`
	// StartFailures are nodes that gave up starting (and were started
	// again): not a safety violation, but worth knowing.
	StartFailures []string `json:"start_failures,omitempty"`
	Elapsed       float64  `json:"elapsed"`
}

func stateDir() string { return filepath.Join(os.TempDir(), "herald-jepsen") }

// Cleanup removes what a crashed run left on this machine: its node
// processes, namespaces, veths and bridge.
func Cleanup(logf func(string, ...any)) error {
	if err := os.MkdirAll(stateDir(), 0o700); err != nil {
		return err
	}
	unlock, err := lockRun(filepath.Join(stateDir(), "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	openPidFile(filepath.Join(stateDir(), "pids")).killStale(logf)
	CleanupNetns()
	cleanupDisks(logf)
	return nil
}

// cleanupDisks unmounts the lazy filesystems a crashed run left mounted
// (their server died with it: every access fails until then).
func cleanupDisks(logf func(string, ...any)) {
	for _, mp := range lazyfs.CleanupStale(diskName) {
		logf("unmounted a lazy filesystem left by an earlier run: %s", mp)
	}
}

// chooseDisks decides whether the nodes' data dirs go on lazy
// filesystems, and says why not when they do not.
func chooseDisks(mode string) (lazy bool, desc string, err error) {
	avail := lazyfs.Available()
	switch mode {
	case "", "auto":
		if avail != nil {
			return false, fmt.Sprintf("plain data dirs: no lazy filesystem (%v), so no power loss", avail), nil
		}
	case "lazy":
		if avail != nil {
			return false, "", fmt.Errorf("lazy disks asked for, but %w", avail)
		}
	case "plain":
		return false, "plain data dirs (asked for)", nil
	default:
		return false, "", fmt.Errorf("disks %q: want auto, lazy or plain", mode)
	}
	return true, "each node's data dir on a lazy FUSE filesystem of its own (unsynced writes dropped at a power loss)", nil
}

// Run runs the cluster, the workload and the faults, checks the history
// and writes the report. The error is for a run that could not be done;
// what the run found is in the Results.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	started := time.Now()
	dir := filepath.Join(cfg.Out, fmt.Sprintf("%s%s-seed%d", cfg.Name, started.Format("20060102-150405"), cfg.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir(), 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockRun(filepath.Join(stateDir(), "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	pids := openPidFile(filepath.Join(stateDir(), "pids"))
	pids.killStale(logf)
	CleanupNetns()
	cleanupDisks(logf)
	lazy, disks, err := chooseDisks(cfg.Disks)
	if err != nil {
		return nil, err
	}
	logf("disks: %s", disks)

	nw, fallback, err := OpenNetwork(cfg.Mode)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	defer nw.Close()
	if fallback != "" {
		logf("%s; using the proxy mode", fallback)
	}
	logf("network: %s", nw.Describe())
	var notes []string
	if slices.Contains(cfg.Faults, FaultNetem) && !nw.CanSlow() {
		notes = append(notes, "netem left out: this network cannot slow links")
		logf("netem is not available on this network: leaving that fault out")
		cfg.Faults = slices.DeleteFunc(slices.Clone(cfg.Faults), func(f string) bool { return f == FaultNetem })
		if len(cfg.Faults) == 0 {
			return nil, errors.New("no fault left to inject")
		}
	}
	if slices.Contains(cfg.Faults, FaultPowerLoss) && !lazy {
		notes = append(notes, "power-loss left out: the data dirs are not on lazy filesystems")
		logf("power-loss needs lazy filesystems: leaving that fault out")
		cfg.Faults = slices.DeleteFunc(slices.Clone(cfg.Faults), func(f string) bool { return f == FaultPowerLoss })
		if len(cfg.Faults) == 0 {
			return nil, errors.New("no fault left to inject")
		}
	}
	info := RunInfo{Started: started, Dir: dir, Mode: nw.Mode(), Network: nw.Describe(), Fallback: fallback, Disks: disks,
		Herald: cfg.Herald, Seed: cfg.Seed, Nodes: cfg.Nodes, Groups: cfg.Groups, Replication: cfg.Replication,
		LogStore: cfg.LogStore, Faults: cfg.Faults, Overlap: cfg.Overlap, Time: cfg.Time.Seconds(), Recovery: cfg.Recovery.Seconds(), Notes: notes}

	rec := NewRecorder()
	serveArgs := []string{
		"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--leader-lease-timeout", "250ms",
		"--lease-ttl", "3s", "--request-timeout", "5s",
		"--publish-rate", "100000", "--publish-burst", "100000", "--log-level", "warn",
		"--pprof", // for the goroutine dumps of a failed contact check (dump.go)
	}
	if cfg.LogStore != "" {
		serveArgs = append(serveArgs, "--log-store", cfg.LogStore)
	}
	logf("starting %d nodes in %s", cfg.Nodes, dir)
	c, err := StartCluster(ctx, ClusterConfig{Bin: cfg.Herald, Dir: dir, Nodes: cfg.Nodes, Groups: cfg.Groups,
		Replication: cfg.Replication, ServeArgs: serveArgs, LazyDisks: lazy, Logf: logf, Rec: rec}, nw, pids)
	if err != nil {
		return nil, err
	}
	closed := false
	closeCluster := func() {
		if !closed {
			closed = true
			c.Close()
		}
	}
	defer closeCluster()

	rooms := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%d", prefix, i))
		}
		return out
	}
	wcfg := WorkloadConfig{LogRooms: rooms("log", cfg.LogRooms), CasRooms: rooms("cas", cfg.CasRooms), MemRooms: rooms("mem", cfg.MemRooms),
		Writers: cfg.Writers, Readers: cfg.Readers, Cas: cfg.Cas, Members: cfg.Members, Subscribers: cfg.Subscribers,
		Interval: cfg.Interval, RetryFor: 15 * time.Second, RequestTimeout: 8 * time.Second, Seed: cfg.Seed}
	all := append(append(append([]string(nil), wcfg.LogRooms...), wcfg.CasRooms...), wcfg.MemRooms...)
	info.Rooms = all
	if err := setupRooms(ctx, c, all); err != nil {
		return nil, err
	}

	// The run proper.
	rec.Record(Op{Process: NemesisProcess, F: FPhase, Value: PhaseWorkload, Type: TypeOK})
	hard, cancelHard := context.WithCancel(ctx)
	defer cancelHard()
	phase, endPhase := context.WithCancel(hard)
	w := &workload{cfg: wcfg, rec: rec, cluster: c}
	w.start(phase, hard)
	nctx, cancelNemesis := context.WithTimeout(ctx, cfg.Time)
	nm := newNemesis(NemesisConfig{Faults: cfg.Faults, Overlap: cfg.Overlap, Warmup: cfg.Warmup, Min: cfg.FaultMin,
		Max: cfg.FaultMax, Quiet: cfg.Quiet, Seed: cfg.Seed, Rooms: all, Groups: cfg.Groups}, c, nw, rec, logf)
	logf("workload and faults for %v", cfg.Time)
	nm.run(nctx)
	cancelNemesis()
	if err := healAll(c, nw); err != nil {
		logf("final heal: %v", err)
	}
	nm.wait()
	if err := healAll(c, nw); err != nil {
		logf("final heal: %v", err)
	}
	if removed := c.Reconcile(ctx); len(removed) > 0 {
		logf("nodes no longer in the cluster, stopped: %v", removed)
	}
	rec.Record(Op{Process: NemesisProcess, F: FPhase, Value: PhaseFinalHeal, Type: TypeOK})
	healed := time.Now()
	logf("healed; workload goes on for %v", cfg.Recovery)
	wait.Sleep(ctx, cfg.Recovery)
	endPhase()
	rec.Record(Op{Process: NemesisProcess, F: FPhase, Value: PhaseQuiesce, Type: TypeOK})
	waited := make(chan struct{})
	go func() { w.wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(wcfg.RetryFor + 2*wcfg.RequestTimeout):
		logf("some clients did not finish in time")
	}
	if ctx.Err() != nil {
		w.closeSessions()
		return nil, ctx.Err()
	}

	// Final phase.
	info.Ready = true
	var mu sync.Mutex // guards info's readiness fields
	var wg sync.WaitGroup
	for _, n := range c.Members() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.WaitReady(ctx, n, 60*time.Second); err != nil {
				mu.Lock()
				info.Ready = false
				info.NotReady = append(info.NotReady, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	contact := waitContact(ctx, c, healed, ContactBound)
	info.Contact = &contact
	if contact.InContact {
		logf("every replica in contact with its leader, checked %.1fs after the final heal", contact.After)
	} else {
		logf("replicas not in contact with their leaders %.0fs after the final heal: %v", contact.After, contact.Problems)
		contact.Dumps, contact.DumpFailures = dumpGoroutines(ctx, c, dir)
		logf("goroutine dumps: %v; not taken: %v", contact.Dumps, contact.DumpFailures)
	}
	rec.Record(Op{Process: NemesisProcess, F: FPhase, Value: PhaseFinal, Type: TypeOK})
	logf("final reads")
	longest := finalPhase(ctx, c, rec, all, wcfg.MemRooms, 90*time.Second)
	catchUp(w, longest, 30*time.Second)
	w.closeSessions()
	cancelHard()
	info.Crashes, info.StartFailures = c.Crashes(), c.StartFailures()
	closeCluster()
	_ = nw.Close()

	h := rec.History()
	logf("checking %d operations", len(h))
	res := Check(h, info, dir, cfg.LinearTimeout)
	res.Info.Elapsed = time.Since(started).Seconds()
	if err := res.Write(dir, h); err != nil {
		return res, err
	}
	if res.Valid && !cfg.KeepData {
		_ = os.RemoveAll(filepath.Join(dir, "data"))
	}
	// The mount points, empty once unmounted.
	_ = os.RemoveAll(filepath.Join(dir, "mnt"))
	return res, nil
}

// setupRooms creates the rooms with unlimited history, so the final reads
// see every event ever appended.
func setupRooms(ctx context.Context, c *Cluster, rooms []string) error {
	zero := uint64(0)
	zeroAge := admin.Duration(0)
	deadline := time.Now().Add(60 * time.Second)
	for _, room := range rooms {
		for {
			var err error
			for _, n := range c.Up() {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err = c.Admin(n).ConfigureRoom(cctx, room, admin.RoomConfigChange{HistoryMaxCount: &zero, HistoryMaxAge: &zeroAge})
				cancel()
				if err == nil {
					break
				}
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("configure room %s: %w", room, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return nil
}

// catchUp waits until every subscriber has received its room's last event.
func catchUp(w *workload, longest map[string][]Ev, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, sub := range w.subs {
		evs := longest[sub.room]
		if len(evs) == 0 {
			continue
		}
		want := evs[len(evs)-1].Seq
		for sub.position() < want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
}
