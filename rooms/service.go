package rooms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/fields"
	"github.com/heraldhq/herald/multiraft"
)

// Config configures a Service.
type Config struct {
	// Host is the node's multiraft host, started with an Application of
	// this package (every data group runs package fsm's state machine).
	Host *multiraft.Host
	// Scheme is the client port's, "http" or "https": every node of a
	// cluster serves clients the same way, so the URLs of other nodes'
	// client ports (Nodes) use it too.
	Scheme string
	// TickInterval is how often the leader of each group enforces the age
	// limits of its rooms' history: time in the state machine moves only
	// with the log.
	TickInterval time.Duration
	// Logger receives the layer's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the values New gives the fields of a Config left
// zero; Host has none and must be set.
func DefaultConfig() Config {
	return Config{Scheme: "http", TickInterval: 30 * time.Second, Logger: slog.New(slog.DiscardHandler)}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field.
func (c Config) WithDefaults() Config {
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that New would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.Host", c.Host != nil)
	if c.Scheme != "http" && c.Scheme != "https" {
		p.Addf("Config.Scheme %q is neither http nor https", c.Scheme)
	}
	fields.NotNegative(&p, "Config.TickInterval", c.TickInterval)
	return p.Err("rooms")
}

// Service is the room layer of one node: the room-level API over its
// multiraft host. It implements wsfront.Backend and serverapi.Backend, and
// runs the duties of the node's group leaders (history age limits,
// namespace rules) until Shutdown.
type Service struct {
	host *multiraft.Host
	cfg  Config
	lead *leadership

	cancel context.CancelFunc
	wg     sync.WaitGroup // the loops below; Shutdown waits for them
}

// New starts the room layer over cfg.Host; zero fields of cfg take
// DefaultConfig's values.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{host: cfg.Host, cfg: cfg, lead: newLeadership(cfg.Host), cancel: cancel}
	s.goLoop(func() { s.lead.run(ctx) })
	s.goLoop(func() { s.tickLoop(ctx) })
	s.goLoop(func() { s.namespaceLoop(ctx) })
	return s, nil
}

func (s *Service) goLoop(loop func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		loop()
	}()
}

// Shutdown stops the service's loops and waits for them until ctx ends. A
// loop may be waiting on a group (a tick's proposal, bounded by its own
// timeout): stopping the host under it ends that wait too, so a caller
// whose ctx ran out can stop the host and call Shutdown again.
func (s *Service) Shutdown(ctx context.Context) error {
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the room layer's loops (history ticks, namespace rules, leadership watch) are still running", multiraft.ErrStopTimeout)
	}
}

// NodeID names this node; NodeEpoch is its current registration in the
// cluster (0 until registered).
func (s *Service) NodeID() string    { return s.host.NodeID() }
func (s *Service) NodeEpoch() uint64 { return s.host.Epoch() }

// Group is the raft group that holds a room (0 while this node does not
// know its cluster yet).
func (s *Service) Group(room string) uint64 { return s.host.GroupForKey(room) }

// MarkClientPublishes: once the cluster has room option settings (see
// EnableRoomOptions), every node runs a release that reads the mark.
func (s *Service) MarkClientPublishes() bool {
	_, rev := s.host.AppSettings()
	return rev > 0
}

func (s *Service) group(room string) (uint64, error) {
	g := s.host.GroupForKey(room)
	if g == 0 {
		return 0, unavailable("this node does not know its cluster yet")
	}
	return g, nil
}

// Propose commits a command in its room's group and returns the state
// machine's result. A refusal by the state machine is the result's Err;
// the error is the cluster's (see ErrorOf, and Commit for the retry rules).
func (s *Service) Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	g, err := s.group(cmd.Room)
	if err != nil {
		return nil, err
	}
	return s.propose(ctx, g, cmd.Encode())
}

// propose commits an encoded command in group g. Results come back as
// values from a local leader and decoded from a remote one; both are an
// *fsm.Result, because this package's Application made every group.
func (s *Service) propose(ctx context.Context, g uint64, cmd []byte) (*fsm.Result, error) {
	out, err := s.host.Propose(ctx, g, cmd)
	if err != nil {
		return nil, err
	}
	res, ok := out.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("rooms: group %d returned %T, not a result", g, out)
	}
	return res, nil
}

func (s *Service) query(ctx context.Context, q Query, stale bool) (Answer, error) {
	g, err := s.group(q.Room)
	if err != nil {
		return Answer{}, err
	}
	return s.queryGroup(ctx, g, q, stale)
}

func (s *Service) queryGroup(ctx context.Context, g uint64, q Query, stale bool) (Answer, error) {
	c := multiraft.Linearizable
	if stale {
		c = multiraft.Stale
	}
	out, err := s.host.Query(ctx, g, c, q.Encode())
	if err != nil {
		return Answer{}, err
	}
	ans, err := DecodeAnswer(out)
	if err != nil {
		return Answer{}, err
	}
	return ans, ans.Err
}

// History reads a page of a room's events, linearizably unless stale. The
// page holds at most limit events and stops early, after at least one
// event, once its events would count more than maxBytes
// (fsm.History.Bytes); the bound holds while the page is read, on
// whichever node reads it.
func (s *Service) History(ctx context.Context, room string, fromSeq uint64, limit, maxBytes int, stale bool) (fsm.History, error) {
	ans, err := s.query(ctx, Query{Kind: QueryHistory, Room: room, FromSeq: fromSeq, Limit: limit, MaxBytes: maxBytes}, stale)
	if err != nil {
		return fsm.History{}, err
	}
	if ans.History == nil {
		return fsm.History{}, errors.New("rooms: history query answered without a history")
	}
	return *ans.History, nil
}

// Members reads a room's members, linearizably unless stale.
func (s *Service) Members(ctx context.Context, room string, stale bool) (fsm.Members, error) {
	ans, err := s.query(ctx, Query{Kind: QueryMembers, Room: room}, stale)
	if err != nil {
		return fsm.Members{}, err
	}
	if ans.Members == nil {
		return fsm.Members{}, errors.New("rooms: members query answered without members")
	}
	return *ans.Members, nil
}

// Room reads a room's sequence, member count and configuration,
// linearizably.
func (s *Service) Room(ctx context.Context, room string) (fsm.RoomInfo, error) {
	ans, err := s.query(ctx, Query{Kind: QueryRoom, Room: room}, false)
	if err != nil {
		return fsm.RoomInfo{}, err
	}
	if ans.Room == nil {
		return fsm.RoomInfo{}, errors.New("rooms: room query answered without a room")
	}
	return *ans.Room, nil
}

// Ready reports why the node cannot serve rooms yet, or nil.
func (s *Service) Ready() error {
	h := s.host
	if h.Epoch() == 0 {
		return errors.New("not registered in a cluster yet")
	}
	self := h.Cluster().Nodes[h.NodeID()]
	switch {
	case self == nil:
		return errors.New("not a member of the cluster (removed, or not yet known here)")
	case self.LeaseExpired:
		return errors.New("this node's lease expired: the meta group could not be reached in time")
	}
	var stuck map[uint64]string
	for _, g := range h.LocalGroups() {
		if id, _ := h.Leader(g); id != "" {
			continue
		}
		// A replica that stays without a leader past the stuck bound is
		// reported by ReadyNotes instead: the node forwards that group's
		// writes to its leader and serves every other group, and a cut-off
		// replica on every node must not take every node out of service.
		if stuck == nil {
			stuck = h.StuckReplicas()
		}
		if stuck[g] != "" {
			continue
		}
		return fmt.Errorf("group %d has no known leader", g)
	}
	return nil
}

// ReadyNotes lists the local replicas cut off from their groups, or
// damaged, for /readyz: the node stays ready, but reads of those groups'
// rooms through it wait for the replica or go to the other replicas.
func (s *Service) ReadyNotes() []string {
	h := s.host
	stuck := h.StuckReplicas()
	out := make([]string, 0, len(stuck))
	for _, g := range slices.Sorted(maps.Keys(stuck)) {
		out = append(out, fmt.Sprintf("group %d: this node's replica %s", g, stuck[g]))
	}
	damaged := h.DamagedReplicas()
	for _, g := range slices.Sorted(maps.Keys(damaged)) {
		out = append(out, fmt.Sprintf("group %d: this node's replica is damaged (%s); rebuild it with: herald admin groups repair %d --node %s", g, damaged[g], g, h.NodeID()))
	}
	return out
}

// leaderHere reports whether this node leads group g now.
func (s *Service) leaderHere(g uint64) bool {
	id, _ := s.host.Leader(g)
	return id == s.host.NodeID()
}

// tickLoop has this node's leaders enforce their rooms' history age limits.
func (s *Service) tickLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	cmd := (&fsm.Command{Op: fsm.OpTick}).Encode()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, g := range s.host.LocalGroups() {
			if g == multiraft.MetaGroup || !s.leaderHere(g) {
				continue
			}
			for range 100 { // a tick trims at most MaxTickRooms rooms
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				res, err := s.propose(pctx, g, cmd)
				cancel()
				if err != nil || !res.More {
					break
				}
			}
		}
	}
}
