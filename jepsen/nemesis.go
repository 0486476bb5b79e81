package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/internal/wait"
)

// Fault kinds.
const (
	FaultPartition = "partition" // isolate one node or a group's leader; halves; majorities ring; bridge
	FaultKill      = "kill"      // kill -9 one node, a minority or a group's leader; restart at heal
	FaultPause     = "pause"     // SIGSTOP one node or a group's leader; SIGCONT at heal
	FaultTransfer  = "transfer"  // leadership transfers through the admin API
	FaultMove      = "move"      // replica moves through the admin API
	FaultMember    = "member"    // add a node and rebalance; decommission it
	FaultNetem     = "netem"     // latency and loss on every peer link
	FaultKillTerm  = "kill-term" // kill -9 one node and SIGTERM another; restart both at heal
	// FaultPowerLoss kills nodes and drops what their disks hold that was
	// never fsynced (one node, a group's leader, a minority, or every
	// node at once); restart at heal. It needs the lazy filesystems.
	FaultPowerLoss = "power-loss"
	FaultCrash     = "crash" // not injected: a node that exited on its own
	// FaultStartFailed is not injected either: a node that gave up
	// starting.
	FaultStartFailed = "start-failed"
	// FaultLeaderTransfer is one transfer of a transfer window.
	FaultLeaderTransfer = "leader-transfer"
)

// errNoTarget: every up node already holds a replica of the group.
var errNoTarget = errors.New("every up node holds a replica of it: no node to move one to")

// AllFaults lists every fault kind the nemesis can inject.
var AllFaults = []string{FaultPartition, FaultKill, FaultPause, FaultTransfer, FaultMove, FaultMember, FaultNetem, FaultKillTerm, FaultPowerLoss}

// NemesisConfig shapes the fault schedule.
type NemesisConfig struct {
	Faults []string
	// Overlap is how many fault kinds run at once in each window.
	Overlap int
	// Warmup is the fault-free time at the start; each window then lasts
	// between Min and Max, followed by Quiet time without faults.
	Warmup, Min, Max, Quiet time.Duration
	Seed                    int64
	// Rooms are the workload's rooms; faults aimed at "the leader of a
	// group" pick the group of one of them.
	Rooms []string
	// Groups is the cluster's number of data groups.
	Groups int
}

type nemesis struct {
	cfg  NemesisConfig
	c    *Cluster
	net  Network
	rec  *Recorder
	logf func(string, ...any)

	// rng and bag belong to run's goroutine; goroutines a fault starts
	// draw from rngs of their own. roomGroups is filled before the first
	// fault, read-only after.
	rng        *rand.Rand
	roomGroups []uint64
	bag        []string // fault kinds not drawn yet in this round

	mu    sync.Mutex
	added []*Node // nodes the member fault added, still in the cluster; guarded by mu
	// jobs counts membership changes in progress: they outlive their
	// window (a decommission moves every replica) and the schedule.
	jobs sync.WaitGroup
}

// active is a fault in progress.
type active struct {
	kind string
	id   int // its operation in the history
	heal func(context.Context) error
	// describe, when set, gives the fault's final description, known only
	// once it ran (which replica moved where).
	describe func() string
	// annotate, when set, adds what was measured to the completed fault,
	// after heal returned.
	annotate func(*Op)
}

func newNemesis(cfg NemesisConfig, c *Cluster, nw Network, rec *Recorder, logf func(string, ...any)) *nemesis {
	return &nemesis{cfg: cfg, c: c, net: nw, rec: rec, logf: logf,
		rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6e656d65736973))}
}

// run injects faults until ctx ends, healing each window's faults before
// the next; the last window is healed when ctx ends.
func (nm *nemesis) run(ctx context.Context) {
	nm.resolveRooms(ctx)
	wait.Sleep(ctx, nm.cfg.Warmup)
	for ctx.Err() == nil {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < nm.cfg.Min {
			break // too little time left for a fault to matter
		}
		kinds := nm.next()
		var acts []*active
		for _, k := range kinds {
			if a := nm.start(ctx, k); a != nil {
				acts = append(acts, a)
			}
		}
		span := nm.cfg.Min
		if nm.cfg.Max > nm.cfg.Min {
			span += time.Duration(nm.rng.Int64N(int64(nm.cfg.Max - nm.cfg.Min)))
		}
		wait.Sleep(ctx, span)
		// Faults heal together: a slow one (a decommission waiting for
		// its moves) must not keep a node paused or a partition up.
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var wg sync.WaitGroup
		for _, a := range acts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := a.heal(hctx)
				nm.rec.Complete(a.id, outcome(err), func(o *Op) {
					if a.describe != nil {
						o.Value = a.describe()
					}
					if a.annotate != nil {
						a.annotate(o)
					}
					if err != nil {
						o.Message = err.Error()
					}
				})
			}()
		}
		wg.Wait()
		cancel()
		wait.Sleep(ctx, nm.cfg.Quiet)
	}
}

// next draws the kinds of the next window from a bag holding each kind
// once, refilled in a new order when empty, so that every kind comes up
// within len(Faults) windows whatever the seed.
func (nm *nemesis) next() []string {
	n := min(max(nm.cfg.Overlap, 1), len(nm.cfg.Faults))
	var kinds []string
	for len(kinds) < n {
		if len(nm.bag) == 0 {
			nm.bag = slices.Clone(nm.cfg.Faults)
			nm.rng.Shuffle(len(nm.bag), func(i, j int) { nm.bag[i], nm.bag[j] = nm.bag[j], nm.bag[i] })
		}
		k := nm.bag[0]
		nm.bag = nm.bag[1:]
		if slices.Contains(kinds, k) {
			nm.bag = append(nm.bag, k) // drawn twice across a refill: later
			continue
		}
		kinds = append(kinds, k)
	}
	return kinds
}

func outcome(err error) string {
	if err != nil {
		return TypeInfo
	}
	return TypeOK
}

// resolveRooms finds the groups of the workload's rooms.
func (nm *nemesis) resolveRooms(ctx context.Context) {
	for _, room := range nm.cfg.Rooms {
		_ = nm.admin(ctx, 10*time.Second, func(ctx context.Context, a *admin.Client) error {
			r, err := a.Room(ctx, room)
			if err == nil && !slices.Contains(nm.roomGroups, r.Group) {
				nm.roomGroups = append(nm.roomGroups, r.Group)
			}
			return err
		})
	}
}

// begin records the start of a fault.
func (nm *nemesis) begin(kind, desc string, nodes []string, heal func(context.Context) error) *active {
	nm.logf("fault: %s: %s", kind, desc)
	id := nm.rec.Invoke(Op{Process: NemesisProcess, F: FFault, Fault: kind, Value: desc, Nodes: nodes})
	return &active{kind: kind, id: id, heal: heal}
}

// note records a fault that could not be injected.
func (nm *nemesis) note(kind, desc string, err error) {
	nm.logf("fault: %s: %s: %v", kind, desc, err)
	now := nm.rec.Now()
	nm.rec.Record(Op{Process: NemesisProcess, F: FFault, Fault: kind, Type: TypeInfo, Start: now, End: now,
		Value: desc, Message: err.Error()})
}

func (nm *nemesis) start(ctx context.Context, kind string) *active {
	switch kind {
	case FaultPartition:
		return nm.partition(ctx)
	case FaultKill:
		return nm.kill(ctx)
	case FaultPause:
		return nm.pause(ctx)
	case FaultTransfer:
		return nm.transfers(ctx)
	case FaultMove:
		return nm.move(ctx)
	case FaultMember:
		return nm.member(ctx)
	case FaultNetem:
		return nm.netem()
	case FaultKillTerm:
		return nm.killTerm(ctx)
	case FaultPowerLoss:
		return nm.powerLoss(ctx)
	}
	nm.note(kind, "unknown fault", errors.New("no such fault"))
	return nil
}

func (nm *nemesis) ids(nodes []*Node) []string {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	nm.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids
}

func without(ids []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == x })
}

func (nm *nemesis) partition(ctx context.Context) *active {
	ids := nm.ids(nm.c.Members())
	variants := []string{"one", "leader", "halves", "bridge"}
	if len(ids) >= 5 {
		variants = append(variants, "ring")
	}
	v := pick(nm.rng, variants)
	var g Grudge
	var desc string
	switch v {
	case "one", "leader":
		x := ids[0]
		if v == "leader" {
			if l, g, err := nm.leaderOf(ctx); err == nil {
				x = l
				desc = fmt.Sprintf("group %d's leader ", g)
			}
		}
		g = cut(nil, []string{x}, without(ids, x))
		desc = fmt.Sprintf("isolate %s%s", desc, x)
	case "halves":
		k := len(ids) / 2
		g = cut(nil, ids[:k], ids[k:])
		desc = fmt.Sprintf("halves %v | %v", ids[:k], ids[k:])
	case "bridge":
		mid := len(ids) / 2
		g = cut(nil, ids[:mid], ids[mid+1:])
		desc = fmt.Sprintf("bridge %v - %s - %v", ids[:mid], ids[mid], ids[mid+1:])
	case "ring":
		// Each node sees the nodes nearest to it on a ring, a majority
		// that differs from node to node.
		n := len(ids)
		reach := (n/2 + 1) / 2
		g = Grudge{}
		for i, x := range ids {
			for j, y := range ids {
				d := min((i-j+n)%n, (j-i+n)%n)
				if d > reach {
					g[x] = append(g[x], y)
				}
			}
		}
		desc = fmt.Sprintf("majorities ring %v", ids)
	}
	if err := nm.net.Partition(g); err != nil {
		nm.note(FaultPartition, desc, err)
		_ = nm.net.Heal()
		return nil
	}
	if p, ok := nm.net.(*proxyNet); ok && nm.rng.IntN(2) == 0 {
		p.Reset()
		desc += ", open connections reset"
	}
	var nodes []string
	for id := range g {
		nodes = append(nodes, id)
	}
	slices.Sort(nodes)
	return nm.begin(FaultPartition, desc, nodes, func(context.Context) error { return nm.net.Heal() })
}

// upIDs lists the nodes whose process runs.
func (nm *nemesis) upIDs() []string { return nm.ids(nm.c.Up()) }

// target picks a node to kill or pause: one at random or a group's leader.
func (nm *nemesis) target(ctx context.Context, variant string) (string, string) {
	up := nm.upIDs()
	if len(up) == 0 {
		return "", ""
	}
	if variant == "leader" {
		if l, g, err := nm.leaderOf(ctx); err == nil && slices.Contains(up, l) {
			return l, fmt.Sprintf("group %d's leader %s", g, l)
		}
	}
	return up[0], up[0]
}

func (nm *nemesis) kill(ctx context.Context) *active {
	variants := []string{"one", "leader"}
	members := len(nm.c.Members())
	if members >= 5 {
		variants = append(variants, "minority")
	}
	v := pick(nm.rng, variants)
	var targets []string
	var desc string
	if v == "minority" {
		up := nm.upIDs()
		k := min((members-1)/2, len(up))
		targets = up[:k]
		desc = fmt.Sprintf("minority %v", targets)
	} else {
		t, d := nm.target(ctx, v)
		if t == "" {
			nm.note(FaultKill, "kill", errors.New("no node is up"))
			return nil
		}
		targets, desc = []string{t}, d
	}
	for _, id := range targets {
		if err := nm.c.Kill(nm.c.Node(id)); err != nil {
			nm.note(FaultKill, desc, err)
		}
	}
	return nm.begin(FaultKill, "kill -9 "+desc, targets, func(context.Context) error {
		var errs []error
		for _, id := range targets {
			errs = append(errs, nm.c.Restart(nm.c.Node(id)))
		}
		return errors.Join(errs...)
	})
}

// killTerm kills one node with SIGKILL and stops another with SIGTERM,
// which stops gracefully (hands over its leaderships, closes its sockets)
// while the cluster has just lost a node without warning; both restart at
// the heal. On 3 nodes the window has no quorum: what matters is that the
// cluster comes back whole.
func (nm *nemesis) killTerm(ctx context.Context) *active {
	kill, kdesc := nm.target(ctx, pick(nm.rng, []string{"one", "leader"}))
	others := without(nm.upIDs(), kill)
	if kill == "" || len(others) == 0 {
		nm.note(FaultKillTerm, "kill -9 one node, SIGTERM another", errors.New("fewer than two nodes are up"))
		return nil
	}
	term := others[0]
	desc := fmt.Sprintf("kill -9 %s, SIGTERM %s", kdesc, term)
	if err := nm.c.Kill(nm.c.Node(kill)); err != nil {
		nm.note(FaultKillTerm, desc, err)
		return nil
	}
	exited, err := nm.c.Terminate(nm.c.Node(term))
	if err != nil {
		nm.note(FaultKillTerm, desc, err)
		exited = nil
	}
	return nm.begin(FaultKillTerm, desc, []string{kill, term}, func(hctx context.Context) error {
		var errs []error
		if exited != nil {
			// A graceful stop without a quorum waits out its stop timeout;
			// the node is killed if it takes longer than the heal allows.
			select {
			case <-exited:
			case <-hctx.Done():
				errs = append(errs, fmt.Errorf("%s did not stop after SIGTERM: %w", term, nm.c.Kill(nm.c.Node(term))))
			}
		}
		errs = append(errs, nm.c.Restart(nm.c.Node(kill)), nm.c.Restart(nm.c.Node(term)))
		return errors.Join(errs...)
	})
}

// powerLoss cuts the power of one node, a group's leader, a minority or
// every node: each is killed and its disk forgets what was not fsynced.
// Every node at once is drawn as often as the rest together, since only a
// quorum losing its unsynced writes can lose what the cluster
// acknowledged.
func (nm *nemesis) powerLoss(ctx context.Context) *active {
	members := nm.c.Members()
	variants := []string{"all", "all", "one", "leader"}
	if len(members) >= 5 {
		variants = append(variants, "minority", "all")
	}
	v := pick(nm.rng, variants)
	var targets []string
	var desc string
	switch v {
	case "all":
		targets = nm.ids(members)
		slices.Sort(targets)
		desc = fmt.Sprintf("every node %v", targets)
	case "minority":
		up := nm.upIDs()
		targets = up[:min((len(members)-1)/2, len(up))]
		desc = fmt.Sprintf("minority %v", targets)
	default:
		t, d := nm.target(ctx, v)
		if t == "" {
			nm.note(FaultPowerLoss, "power loss", errors.New("no node is up"))
			return nil
		}
		targets, desc = []string{t}, d
	}
	nodes := make([]*Node, len(targets))
	for i, id := range targets {
		nodes[i] = nm.c.Node(id)
	}
	lost, err := nm.c.PowerLoss(nodes)
	if err != nil {
		nm.note(FaultPowerLoss, desc, err)
	}
	return nm.begin(FaultPowerLoss, "power loss of "+desc+" ("+lost+")", targets, func(context.Context) error {
		var errs []error
		for _, n := range nodes {
			errs = append(errs, nm.c.Restart(n))
		}
		return errors.Join(errs...)
	})
}

func (nm *nemesis) pause(ctx context.Context) *active {
	t, desc := nm.target(ctx, pick(nm.rng, []string{"one", "leader"}))
	if t == "" {
		nm.note(FaultPause, "pause", errors.New("no node is up"))
		return nil
	}
	n := nm.c.Node(t)
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	led, err := ledGroups(lctx, &http.Client{}, n)
	cancel()
	if err != nil {
		nm.logf("fault: pause: groups led by %s unknown, failover not measured: %v", t, err)
	}
	if err := nm.c.Pause(n); err != nil {
		nm.note(FaultPause, desc, err)
		return nil
	}
	paused := time.Now()
	if len(led) == 0 {
		return nm.begin(FaultPause, "SIGSTOP "+desc, []string{t}, func(context.Context) error { return nm.c.Resume(n) })
	}
	stop, measured := make(chan struct{}), make(chan float64, 1)
	go func() { measured <- nm.watchFailover(n, led, paused, stop) }()
	var failover float64
	a := nm.begin(FaultPause, "SIGSTOP "+desc, []string{t}, func(context.Context) error {
		close(stop)
		failover = <-measured
		return nm.c.Resume(n)
	})
	a.annotate = func(o *Op) { o.Failover = failover }
	return a
}

// transfers moves leaderships around until healed, each transfer an
// operation of its own.
func (nm *nemesis) transfers(ctx context.Context) *active {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	seed := nm.rng.Uint64()
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(300+rng.IntN(900)) * time.Millisecond):
			}
			g := nm.pickGroup(rng)
			id := nm.rec.Invoke(Op{Process: NemesisProcess, F: FFault, Fault: FaultLeaderTransfer, Value: fmt.Sprintf("group %d", g)})
			var desc string
			err := nm.admin(ctx, 15*time.Second, func(ctx context.Context, a *admin.Client) error {
				grp, err := a.Group(ctx, g)
				if err != nil {
					return err
				}
				var to []string
				for _, r := range grp.Replicas {
					if r.Voter && r.Node != grp.Leader {
						to = append(to, r.Node)
					}
				}
				if len(to) == 0 {
					return fmt.Errorf("group %d has no other voter", g)
				}
				dst := to[rng.IntN(len(to))]
				desc = fmt.Sprintf("group %d: %s → %s", g, grp.Leader, dst)
				_, err = a.TransferLeader(ctx, g, dst)
				return err
			})
			nm.rec.Complete(id, outcome(err), func(o *Op) {
				if desc != "" {
					o.Value = desc
				}
				if err != nil {
					o.Message = err.Error()
				}
			})
		}
	}()
	return nm.begin(FaultTransfer, "leadership transfers", nil, func(context.Context) error {
		close(stop)
		wg.Wait()
		return nil
	})
}

// move moves one replica of a group to a node without one. Every other
// time it sends two conflicting moves of the group at once, through two
// different nodes (two replicas moved to one node, or one replica to two
// nodes): the cluster must run one and refuse the other, or run both one
// after the other, and either way leave raft and the meta group agreeing.
func (nm *nemesis) move(ctx context.Context) *active {
	g := nm.pickGroup(nm.rng)
	done := make(chan error, 1)
	var mu sync.Mutex // guards desc, which the move's goroutine sets
	desc := fmt.Sprintf("group %d", g)
	up := nm.upIDs()
	pickFrom, pickTo := nm.rng.Uint64(), nm.rng.Uint64()
	conflicting := nm.rng.IntN(2) == 0
	go func() {
		var plan []string // from, to, from, to
		err := nm.admin(ctx, 10*time.Second, func(ctx context.Context, a *admin.Client) error {
			grp, err := a.Group(ctx, g)
			if err != nil {
				return err
			}
			var from []string
			for _, r := range grp.Replicas {
				if r.Assigned {
					from = append(from, r.Node)
				}
			}
			var to []string
			for _, id := range up {
				if !slices.Contains(from, id) {
					to = append(to, id)
				}
			}
			if len(from) == 0 || len(to) == 0 {
				return fmt.Errorf("group %d: %w", g, errNoTarget)
			}
			src, dst := from[pickFrom%uint64(len(from))], to[pickTo%uint64(len(to))]
			plan = []string{src, dst}
			if conflicting {
				src2, dst2 := src, dst
				switch {
				case len(from) > 1:
					src2 = from[(pickFrom+1)%uint64(len(from))]
				case len(to) > 1:
					dst2 = to[(pickTo+1)%uint64(len(to))]
				}
				if src2 != src || dst2 != dst {
					plan = append(plan, src2, dst2)
				}
			}
			return nil
		})
		if err != nil {
			done <- err
			return
		}
		if len(plan) == 2 {
			mu.Lock()
			desc = fmt.Sprintf("group %d: %s → %s", g, plan[0], plan[1])
			mu.Unlock()
			done <- nm.admin(ctx, 100*time.Second, func(ctx context.Context, a *admin.Client) error {
				_, err := a.MoveReplica(ctx, g, plan[0], plan[1])
				return err
			})
			return
		}
		results := nm.conflictingMoves(ctx, g, plan)
		mu.Lock()
		desc = fmt.Sprintf("group %d, two at once: %s → %s (%s) and %s → %s (%s)", g, plan[0], plan[1], results[0], plan[2], plan[3], results[1])
		mu.Unlock()
		var errs []error
		for i, r := range results {
			if r.err != nil && !r.refused {
				errs = append(errs, fmt.Errorf("%s → %s: %w", plan[2*i], plan[2*i+1], r.err))
			}
		}
		done <- errors.Join(errs...)
	}()
	a := nm.begin(FaultMove, fmt.Sprintf("replica move of group %d", g), nil, func(hctx context.Context) error {
		select {
		case err := <-done:
			return err
		case <-hctx.Done():
			return hctx.Err()
		}
	})
	a.describe = func() string {
		mu.Lock()
		defer mu.Unlock()
		return "replica move " + desc
	}
	return a
}

// moveResult is how one of two conflicting moves ended.
type moveResult struct {
	err error
	// refused: the cluster declined the move because of the other one (a
	// change of the group in progress, or the replica set it left): a
	// valid outcome, not a failure.
	refused bool
}

func (r moveResult) String() string {
	var ae *admin.APIError
	switch {
	case r.err == nil:
		return "done"
	case r.refused && errors.As(r.err, &ae):
		return "refused: " + ae.Code
	}
	return "failed: " + r.err.Error()
}

// moveRefusals are the answers a move may validly get because another
// move of its group ran or runs.
var moveRefusals = []string{"move_in_progress", "already_replica", "not_a_replica"}

// conflictingMoves sends the moves plan[0] → plan[1] and plan[2] → plan[3]
// of group g at the same time, each through a different up node.
func (nm *nemesis) conflictingMoves(ctx context.Context, g uint64, plan []string) [2]moveResult {
	var out [2]moveResult
	nodes := nm.c.Up()
	if len(nodes) == 0 {
		out[0].err, out[1].err = errors.New("no node is up"), errors.New("no node is up")
		return out
	}
	var wg sync.WaitGroup
	for i := range 2 {
		via := nodes[i%len(nodes)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 100*time.Second)
			defer cancel()
			_, err := nm.c.Admin(via).MoveReplica(cctx, g, plan[2*i], plan[2*i+1])
			var ae *admin.APIError
			out[i] = moveResult{err: err, refused: errors.As(err, &ae) && ae.Status == 409 && slices.Contains(moveRefusals, ae.Code)}
		}()
	}
	wg.Wait()
	return out
}

// member adds a node and rebalances onto it, or decommissions a node it
// added earlier and stops it.
func (nm *nemesis) member(context.Context) *active {
	// The change runs to its end even when the schedule ends first, so
	// that the cluster's membership is known before the final reads.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	nm.jobs.Add(1)
	finish := func() { cancel(); nm.jobs.Done() }
	done := make(chan error, 1)
	var desc string
	var nodes []string
	nm.mu.Lock()
	var n *Node
	if len(nm.added) > 0 {
		n = nm.added[0]
		nm.added = nm.added[1:]
	}
	nm.mu.Unlock()
	if n == nil {
		desc = "add a node and rebalance"
		go func() {
			defer finish()
			n, err := nm.c.AddNode(ctx)
			if err != nil {
				done <- fmt.Errorf("add node: %w", err)
				return
			}
			nm.mu.Lock()
			nm.added = append(nm.added, n)
			nm.mu.Unlock()
			done <- nm.job(ctx, func(ctx context.Context, a *admin.Client) (*admin.Job, error) { return a.Rebalance(ctx) })
		}()
	} else {
		desc = "decommission " + n.ID
		nodes = []string{n.ID}
		go func() {
			defer finish()
			err := nm.job(ctx, func(ctx context.Context, a *admin.Client) (*admin.Job, error) { return a.Decommission(ctx, n.ID) })
			if err == nil {
				nm.c.Stop(n, 20*time.Second)
			} else {
				nm.mu.Lock()
				nm.added = append(nm.added, n)
				nm.mu.Unlock()
			}
			done <- err
		}()
	}
	return nm.begin(FaultMember, desc, nodes, func(hctx context.Context) error {
		select {
		case err := <-done:
			return err
		case <-hctx.Done():
			return hctx.Err()
		}
	})
}

func describeMove(m *admin.Move) string {
	if m == nil {
		return "no move"
	}
	return m.String()
}

// wait waits for the membership changes still in progress.
func (nm *nemesis) wait() { nm.jobs.Wait() }

// job starts an admin job on some node and waits for it to end.
func (nm *nemesis) job(ctx context.Context, start func(context.Context, *admin.Client) (*admin.Job, error)) error {
	return nm.admin(ctx, 3*time.Minute, func(ctx context.Context, a *admin.Client) error {
		j, err := start(ctx, a)
		if err != nil {
			return err
		}
		j, err = a.WaitJob(ctx, j.ID, 250*time.Millisecond, nil)
		if err != nil {
			if j != nil {
				return fmt.Errorf("job %s %s, %d of %d steps done, at %s: %w", j.Kind, j.State, j.Done, j.Total, describeMove(j.Current), err)
			}
			return err
		}
		if j.State != admin.JobSucceeded {
			if j.Error != nil {
				return fmt.Errorf("job %s %s: %w", j.Kind, j.State, j.Error)
			}
			return fmt.Errorf("job %s %s", j.Kind, j.State)
		}
		return nil
	})
}

func (nm *nemesis) netem() *active {
	const delay, jitter, loss = 40 * time.Millisecond, 20 * time.Millisecond, 0.05
	desc := fmt.Sprintf("peer links %v ± %v, %.0f%% loss", delay, jitter, 100*loss)
	if err := nm.net.Slow(delay, jitter, loss); err != nil {
		nm.note(FaultNetem, desc, err)
		return nil
	}
	return nm.begin(FaultNetem, desc, nil, func(context.Context) error { return nm.net.Fast() })
}

// pickGroup is the group of a workload room, or any data group.
func (nm *nemesis) pickGroup(rng *rand.Rand) uint64 {
	if len(nm.roomGroups) > 0 {
		return pick(rng, nm.roomGroups)
	}
	return uint64(1 + rng.IntN(max(nm.cfg.Groups, 1)))
}

// leaderOf returns the leader of a group that carries workload rooms.
func (nm *nemesis) leaderOf(ctx context.Context) (string, uint64, error) {
	g := nm.pickGroup(nm.rng)
	var leader string
	err := nm.admin(ctx, 10*time.Second, func(ctx context.Context, a *admin.Client) error {
		grp, err := a.Group(ctx, g)
		if err != nil {
			return err
		}
		if grp.Leader == "" {
			return fmt.Errorf("group %d has no known leader", g)
		}
		leader = grp.Leader
		return nil
	})
	return leader, g, err
}

// admin runs f against the admin API of the up nodes in turn until one
// succeeds.
func (nm *nemesis) admin(ctx context.Context, per time.Duration, f func(context.Context, *admin.Client) error) error {
	var errs []string
	for _, n := range nm.c.Up() {
		cctx, cancel := context.WithTimeout(ctx, per)
		err := f(cctx, nm.c.Admin(n))
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, n.ID+": "+err.Error())
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != 409 || errors.Is(err, errNoTarget) {
			break // other nodes would say the same
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return errors.New("no node is up")
	}
	return errors.New(strings.Join(errs, "; "))
}

// healAll undoes every fault: partitions, latency, pauses and kills.
func healAll(c *Cluster, nw Network) error {
	errs := []error{nw.Heal(), nw.Fast()}
	for _, n := range c.Members() {
		switch n.State() {
		case StatePaused:
			errs = append(errs, c.Resume(n))
		case StateKilled:
			errs = append(errs, c.Restart(n))
		}
	}
	return errors.Join(errs...)
}
