package multiraft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/multiraft/transport"
)

// Host runs every group replica of one node and the node's peer port.
type Host struct {
	cfg   Config
	log   *slog.Logger
	peers Peers
	logs  logstore.Backend
	meta  *meta.FSM

	// observations receives leader changes from every replica; one
	// goroutine turns them into leader hints.
	observations chan raft.Observation

	// mu guards the fields from replicas to watchers.
	mu       sync.RWMutex
	replicas map[uint64]*replica
	// dropping holds the groups whose replica is being dropped
	// (takeForDrop): none of them is started until the drop ends.
	dropping map[uint64]bool
	hints    map[uint64]raft.ServerAddress // last known leader address per group
	cluster  *meta.ClusterState            // newest cluster state seen
	changed  chan struct{}                 // closed and replaced when cluster changes
	seeds    []raft.ServerAddress          // where to look for the meta group
	watchers []chan LeaderChange

	epoch      atomic.Uint64
	epochReady chan struct{} // closed once the node has registered
	// removed is closed, and removedErr set, when the cluster refuses this
	// node's identity because it was removed: registering cannot succeed.
	removed     chan struct{}
	removedOnce sync.Once
	removedErr  error // written once, before removed is closed

	// fmu guards waits (requests forwarded per group, routes waiting for a
	// leader) and checks (pings to nodes they wait on): failover.go. Not
	// mu, which every replica lookup takes.
	fmu    sync.Mutex
	waits  map[uint64]*groupWaits
	checks map[raft.ServerAddress]*targetCheck

	// leases, ops and damage lock themselves.
	leases meta.Leases // meaningful on the meta leader only
	ops    opRegistry  // group operations (replica changes) running here
	damage damageTable
	// damageKick wakes the damage loop when a replica is found damaged.
	damageKick chan struct{}
	// handlers is set at construction, read-only after.
	handlers map[string]transport.Handler

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	stop   hostStop
}

// MetaGroup is the id of the group that holds the cluster's own state
// (package meta).
const MetaGroup = meta.Group

// Peer names one node of a cluster for bootstrap.
type Peer struct {
	ID   string
	Addr string // peer address
}

// BootstrapSpec describes a new cluster. Every initial node is started with
// the same spec; the groups each node must host follow from it, so nodes
// bootstrap their groups without waiting for each other.
type BootstrapSpec struct {
	ClusterID   string
	Nodes       []Peer
	Groups      uint64 // data groups, 1..Groups
	Replication int    // replicas per data group
	// AppSettings are the application's first cluster-wide settings
	// (meta.ClusterState.AppSettings); optional.
	AppSettings []byte
}

// metaVoters are the first nodes by id, as many as meta.Voters allows.
func (s BootstrapSpec) metaVoters() []Peer {
	nodes := slices.Clone(s.Nodes)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes[:meta.Voters(len(nodes))]
}

// Start opens the node's storage and peer port and restarts every replica
// that has data on disk. A new node then needs Bootstrap or Join; a node
// restarting with its data does not.
func Start(cfg Config) (*Host, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("multiraft: data directory: %w", err)
	}
	h := &Host{
		cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), meta: meta.NewFSM(),
		observations: make(chan raft.Observation, 1024),
		replicas:     map[uint64]*replica{}, dropping: map[uint64]bool{}, hints: map[uint64]raft.ServerAddress{},
		waits: map[uint64]*groupWaits{}, checks: map[raft.ServerAddress]*targetCheck{},
		cluster: meta.NewState(), changed: make(chan struct{}), epochReady: make(chan struct{}),
		removed: make(chan struct{}), damageKick: make(chan struct{}, 1),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	var err error
	if h.logs, err = logstore.Open(logstore.Config{Kind: cfg.LogStore, Dir: cfg.DataDir, Logger: h.log, OnSync: cfg.Observer.LogSynced}); err != nil {
		return nil, fmt.Errorf("multiraft: open raft log store: %w", err)
	}
	open := cfg.OpenPeers
	if open == nil {
		open = func(pc PeersConfig) (Peers, error) { return openTCPPeers(&cfg, pc) }
	}
	h.peers, err = open(PeersConfig{
		NodeID: cfg.NodeID, Addr: cfg.PeerAddr, AdvertiseAddr: cfg.AdvertisePeerAddr,
		Authorize: h.authorizePeer, JoinServices: []string{svcMetaState, svcRegister},
		Logger: cfg.Logger,
	})
	if err != nil {
		h.logs.Close()
		return nil, fmt.Errorf("multiraft: open peer port: %w", err)
	}
	h.registerServices()
	groups, err := h.logs.Groups()
	if err == nil {
		for _, g := range groups {
			if err = h.ensureReplica(g, nil); err != nil {
				break
			}
		}
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	h.goFunc(h.observeLeaders)
	h.goFunc(h.watchCluster)
	h.goFunc(h.reconcileLoop)
	h.goFunc(h.leaseLoop)
	h.goFunc(h.metaDutyLoop)
	h.goFunc(h.repairLoop)
	h.goFunc(h.damageLoop)
	return h, nil
}

func (h *Host) goFunc(f func()) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f()
	}()
}

// NodeID is this node's id.
func (h *Host) NodeID() string { return h.cfg.NodeID }

// PeerAddr is the address other nodes reach this node's peer port at.
func (h *Host) PeerAddr() string { return string(h.peers.Addr()) }

// Epoch is the node's current epoch (0 until registered with the meta group).
func (h *Host) Epoch() uint64 { return h.epoch.Load() }

// WaitRegistered waits until the node holds an epoch from the meta group.
func (h *Host) WaitRegistered(ctx context.Context) (uint64, error) {
	select {
	case <-h.epochReady:
		return h.epoch.Load(), nil
	case <-h.removed:
		return 0, h.removedErr
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: node %s is not registered with the meta group: %v", ErrUnavailable, h.cfg.NodeID, ctx.Err())
	case <-h.ctx.Done():
		return 0, ErrClosed
	}
}

// Bootstrap creates a new cluster from spec, or does nothing for the parts
// this node already holds (so restarting with the same flags is safe).
func (h *Host) Bootstrap(ctx context.Context, spec BootstrapSpec) error {
	if spec.ClusterID == "" || spec.Groups == 0 {
		return errors.New("multiraft: bootstrap needs a cluster id and at least one data group")
	}
	if len(spec.AppSettings) > 0 && !json.Valid(spec.AppSettings) {
		return errors.New("multiraft: bootstrap: application settings must be JSON")
	}
	ids := make([]string, len(spec.Nodes))
	me := -1
	for i, p := range spec.Nodes {
		ids[i] = p.ID
		if p.ID == h.cfg.NodeID {
			me = i
		}
	}
	if me < 0 {
		return fmt.Errorf("multiraft: node %s is not in the bootstrap list %v", h.cfg.NodeID, ids)
	}
	placement, err := meta.InitialPlacement(ids, spec.Groups, spec.Replication)
	if err != nil {
		return err
	}
	addrs := map[string]string{}
	for _, p := range spec.Nodes {
		addrs[p.ID] = p.Addr
	}
	h.mu.Lock()
	for _, p := range spec.Nodes {
		h.seeds = append(h.seeds, raft.ServerAddress(p.Addr))
	}
	h.mu.Unlock()
	configOf := func(nodes []string) *raft.Configuration {
		c := &raft.Configuration{}
		for _, n := range nodes {
			c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n), Address: raft.ServerAddress(addrs[n])})
		}
		return c
	}
	var metaIDs []string
	for _, p := range spec.metaVoters() {
		metaIDs = append(metaIDs, p.ID)
	}
	if slices.Contains(metaIDs, h.cfg.NodeID) {
		if err := h.ensureReplica(MetaGroup, configOf(metaIDs)); err != nil {
			return err
		}
	}
	for g := uint64(1); g <= spec.Groups; g++ {
		if slices.Contains(placement[g], h.cfg.NodeID) {
			if err := h.ensureReplica(g, configOf(placement[g])); err != nil {
				return err
			}
		}
	}
	nodes := make([]meta.NodeInfo, len(spec.Nodes))
	for i, p := range spec.Nodes {
		nodes[i] = meta.NodeInfo{ID: p.ID, PeerAddr: p.Addr}
		if p.ID == h.cfg.NodeID {
			nodes[i].ClientAddr = h.cfg.ClientAddr
		}
	}
	cmd := meta.Init(spec.ClusterID, spec.Groups, spec.Replication, nodes, placement, spec.AppSettings)
	// Every bootstrap node proposes init; all but the first are refused
	// as conflicts, and the check below tells a foreign cluster apart.
	// Until a quorum of the meta group is up (the other initial nodes
	// start later, or a whole cluster restarts with the same flags) there
	// is nothing to do but try again, for as long as ctx allows.
	var st *meta.ClusterState
	for {
		_, err = h.proposeMeta(ctx, cmd)
		if err == nil || errors.Is(err, meta.ErrConflict) {
			if st, err = h.MetaState(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil || !waitingForQuorum(err) {
			return fmt.Errorf("multiraft: initialize cluster %s: %w", spec.ClusterID, err)
		}
		h.log.Warn("bootstrap: the meta group has no quorum yet; retrying", "err", err)
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if st.ClusterID != spec.ClusterID {
		return fmt.Errorf("multiraft: the meta group holds cluster %q, not %q", st.ClusterID, spec.ClusterID)
	}
	return nil
}

// waitingForQuorum says whether err only means that the meta group could
// not answer in time (no leader, no quorum), as opposed to a refusal.
func waitingForQuorum(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome) ||
		errors.Is(err, context.DeadlineExceeded)
}

// Join makes a new node part of an existing cluster, found through any of
// its nodes' peer addresses. The node holds no replica until a rebalance
// moves some to it.
func (h *Host) Join(ctx context.Context, seeds []string) error {
	if len(seeds) == 0 {
		return errors.New("multiraft: join needs the peer address of at least one cluster node")
	}
	h.mu.Lock()
	for _, s := range seeds {
		h.seeds = append(h.seeds, raft.ServerAddress(s))
	}
	h.mu.Unlock()
	_, err := h.WaitRegistered(ctx)
	return err
}

// ensureReplica starts the group's replica if it is not running.
func (h *Host) ensureReplica(group uint64, bootstrap *raft.Configuration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Load() {
		return ErrClosed
	}
	if _, ok := h.replicas[group]; ok {
		return nil
	}
	if h.dropping[group] {
		// Its data is being deleted: a replica started now would load
		// state and log that vanish under it. The drop's owner starts
		// the group again if it should run.
		return nil
	}
	if h.damage.isBroken(group) {
		return nil // reported; only a repair starts it again
	}
	var (
		sm      raft.FSM
		applied uint64
		timing  = h.cfg.Timing
	)
	if group == MetaGroup {
		sm, timing = h.meta, *h.cfg.MetaTiming
	} else {
		m, err := h.cfg.App.NewStateMachine(group)
		if err != nil {
			return fmt.Errorf("multiraft: open state machine of group %d: %w", group, err)
		}
		sm, applied = m, m.AppliedIndex()
	}
	rep, err := h.startReplica(group, sm, applied, timing, bootstrap)
	if err != nil {
		if m, ok := sm.(StateMachine); ok {
			m.Close()
		}
		if bs := (*brokenStart)(nil); errors.As(err, &bs) {
			h.reportDamage(group, bs.reason, true)
			return nil
		}
		return err
	}
	h.replicas[group] = rep
	return nil
}

// takeForDrop takes group's replica (nil if none runs) out of the running
// ones and marks the group as being dropped, so that nothing starts it
// again (ensureReplica, from the reconcile loop or a repair) while its
// data is deleted; endDrop ends that. It reports false, taking nothing,
// when the group is being dropped already.
func (h *Host) takeForDrop(group uint64) (*replica, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dropping[group] {
		return nil, false
	}
	rep := h.replicas[group]
	delete(h.replicas, group)
	h.dropping[group] = true
	return rep, true
}

func (h *Host) endDrop(group uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.dropping, group)
}

func (h *Host) replica(group uint64) *replica {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.replicas[group]
}

// LocalGroups lists the groups with a replica on this node, sorted.
func (h *Host) LocalGroups() []uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]uint64, 0, len(h.replicas))
	for g := range h.replicas {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// LocalStateMachine returns the state machine of the local replica of a
// data group, for reads that accept its staleness and for subscribing to
// its events.
func (h *Host) LocalStateMachine(group uint64) (StateMachine, bool) {
	rep := h.replica(group)
	if rep == nil {
		return nil, false
	}
	sm, ok := rep.fsm.(StateMachine)
	return sm, ok
}

// Cluster returns the newest cluster state this node has seen. It may lag
// the meta group; MetaState reads it linearizably.
func (h *Host) Cluster() *meta.ClusterState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cluster.Clone()
}

// AppSettings returns the application's cluster-wide settings as this node
// last saw them, and the meta index that set them (0: never).
func (h *Host) AppSettings() ([]byte, uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return slices.Clone(h.cluster.AppSettings), h.cluster.AppSettingsIndex
}

// SetAppSettings replaces the application's cluster-wide settings if they
// are still those recorded at expectIndex (0: never set), and returns the
// index that recorded the new ones. A lost race is meta.ErrConflict: read
// the settings again and redo the change.
func (h *Host) SetAppSettings(ctx context.Context, settings []byte, expectIndex uint64) (uint64, error) {
	if !json.Valid(settings) {
		return 0, errors.New("multiraft: application settings must be JSON")
	}
	res, err := h.proposeMeta(ctx, meta.SetAppSettings(settings, expectIndex))
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// GroupForKey maps a key to its data group in this cluster (0 before the
// node knows the cluster).
func (h *Host) GroupForKey(key string) uint64 {
	h.mu.RLock()
	groups := h.cluster.Groups
	h.mu.RUnlock()
	return meta.GroupForKey(key, groups)
}

// Close stops every replica and the peer port, keeping all data, within
// Config.StopTimeout: it is Shutdown with that bound. It does not hand
// leaderships over; TransferLeaderships does that first.
func (h *Host) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.StopTimeout)
	defer cancel()
	return h.Shutdown(ctx)
}

// TransferLeaderships hands every group this node leads to another replica,
// so that stopping the node does not wait for election timeouts. Up to 16
// transfers run at once: a node may lead hundreds of groups.
func (h *Host) TransferLeaderships(ctx context.Context) error {
	var (
		mu   sync.Mutex
		errs []error // guarded by mu
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
	)
	for _, g := range h.LocalGroups() {
		rep := h.replica(g)
		if rep == nil || rep.raft.State() != raft.Leader {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := waitFuture(ctx, rep.raft.LeadershipTransfer()); err != nil && !errors.Is(err, raft.ErrNotLeader) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("group %d: %w", g, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFuture waits for f until ctx ends. Its goroutine outlives an ended
// ctx until raft resolves f, which raft never does for a future still
// queued for its main loop when it shuts down (docs/architecture.md,
// Lifecycle).
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// observeLeaders keeps leader hints current from raft's observations.
func (h *Host) observeLeaders() {
	for {
		select {
		case <-h.ctx.Done():
			return
		case o := <-h.observations:
			lo, ok := o.Data.(raft.LeaderObservation)
			if !ok {
				continue
			}
			change := LeaderChange{Group: ^uint64(0), LeaderID: string(lo.LeaderID), LeaderAddr: string(lo.LeaderAddr)}
			h.mu.Lock()
			for g, r := range h.replicas {
				if r.raft == o.Raft {
					change.Group = g
					if lo.LeaderAddr == "" {
						delete(h.hints, g)
					} else {
						h.hints[g] = lo.LeaderAddr
					}
					break
				}
			}
			watchers := slices.Clone(h.watchers)
			h.mu.Unlock()
			if change.Group == ^uint64(0) {
				continue // the replica is gone
			}
			h.leaderObserved(change.Group, lo.LeaderAddr)
			for _, w := range watchers {
				select {
				case w <- change:
				default:
					// A watcher that does not keep up misses changes;
					// Status and Leader always give the current state.
				}
			}
		}
	}
}

// LeaderChange says that a local replica saw its group's leader change
// (an empty LeaderID: the group has none right now).
type LeaderChange struct {
	Group      uint64
	LeaderID   string
	LeaderAddr string
}

// WatchLeaders delivers the leader changes that local replicas see, until
// stop is called. Delivery never blocks the host: when the channel's
// buffer (256) is full, changes are dropped, so a watcher that must not
// miss one re-reads Leader or Status after draining.
func (h *Host) WatchLeaders() (changes <-chan LeaderChange, stop func()) {
	ch := make(chan LeaderChange, 256)
	h.mu.Lock()
	h.watchers = append(h.watchers, ch)
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			h.watchers = slices.DeleteFunc(h.watchers, func(c chan LeaderChange) bool { return c == ch })
			h.mu.Unlock()
		})
	}
}
