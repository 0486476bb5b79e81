package multiraft

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/multiraft/transport"
)

// MinClusterSecretLen is the shortest Config.ClusterSecret accepted.
const MinClusterSecretLen = transport.MinClusterSecretLen

// StateMachine is what a data group replicates: a raft.BatchingFSM that
// keeps its state itself (on disk) and knows which index it has applied,
// so a restarted replica does not restore a snapshot it already holds.
type StateMachine interface {
	raft.BatchingFSM
	// AppliedIndex is the last log index whose effects are durable in the
	// state machine's own storage.
	AppliedIndex() uint64
	// Close releases the state machine; its data stays.
	Close() error
}

// Application is what the host needs to know about the state machine it
// replicates, without knowing what its commands mean.
type Application interface {
	// NewStateMachine opens the state machine of a data group replica.
	NewStateMachine(group uint64) (StateMachine, error)
	// EncodeResult and DecodeResult carry an Apply result to a proposer
	// on another node.
	EncodeResult(result any) ([]byte, error)
	DecodeResult(b []byte) (any, error)
	// ExpireNodeCommand is the command that removes, from one data group,
	// the ephemeral state of a node's epochs below before. moreToDo tells
	// from its result whether the command has to be proposed again.
	ExpireNodeCommand(node string, before uint64) []byte
	MoreToDo(result any) bool
}

// Timing holds the raft timeouts every group runs with. The defaults trade
// failover time for idle cost: a leader sends a heartbeat to each follower
// every HeartbeatTimeout/10 to /5 and an empty append every CommitTimeout,
// so with a thousand groups per node these are the node's idle load.
type Timing struct {
	// HeartbeatTimeout is how long a follower waits without contact before
	// it starts an election (randomized up to twice this).
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without
	// contact with a quorum.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how late a follower learns the commit index
	// when no new entries flow, and so how far a stale read on a follower
	// of an idle group may lag.
	CommitTimeout time.Duration
	// MaxAppendEntries caps the entries in one AppendEntries RPC.
	MaxAppendEntries int
	// SnapshotThreshold is the number of new entries that makes a replica
	// snapshot; TrailingLogs are kept after it for slow followers.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotInterval is how often a replica checks the threshold.
	SnapshotInterval time.Duration
	// PerGroupHeartbeats makes every group send its own heartbeats. By
	// default raft's heartbeats wait for a node-level batch that goes to
	// each peer every HeartbeatTimeout/4 (transport.Config.HeartbeatInterval).
	PerGroupHeartbeats bool
}

// DefaultTiming returns timeouts for hundreds of groups per node that
// still replace a dead leader within about three seconds.
func DefaultTiming() Timing {
	return Timing{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 1000 * time.Millisecond,
		CommitTimeout:      2 * time.Second,
		MaxAppendEntries:   256,
		SnapshotThreshold:  16384,
		TrailingLogs:       4096,
		SnapshotInterval:   60 * time.Second,
	}
}

// WithDefaults returns t with every zero field set to DefaultTiming's, so
// that a configuration sets only the timings it changes; zero Timing is
// DefaultTiming. TrailingLogs keeps a zero of a Timing that sets anything
// else: it means no trailing logs (every lagging follower gets a
// snapshot), which tests and small deployments choose.
func (t Timing) WithDefaults() Timing {
	d := DefaultTiming()
	if t == (Timing{}) {
		return d
	}
	leaseUnset := t.LeaderLeaseTimeout == 0
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.HeartbeatTimeout, &d.HeartbeatTimeout}, {&t.ElectionTimeout, &d.ElectionTimeout},
		{&t.LeaderLeaseTimeout, &d.LeaderLeaseTimeout}, {&t.CommitTimeout, &d.CommitTimeout},
		{&t.SnapshotInterval, &d.SnapshotInterval},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if t.MaxAppendEntries == 0 {
		t.MaxAppendEntries = d.MaxAppendEntries
	}
	// The lease may not outlast the heartbeat timeout: a default lease
	// follows a shorter heartbeat timeout down.
	if leaseUnset && t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		t.LeaderLeaseTimeout = t.HeartbeatTimeout
	}
	if t.SnapshotThreshold == 0 {
		t.SnapshotThreshold = d.SnapshotThreshold
	}
	return t
}

// Validate rejects timeouts raft would refuse or that contradict each
// other. Zero fields are errors here: Config fills them through
// WithDefaults first.
func (t Timing) Validate() error {
	switch {
	case t.HeartbeatTimeout < 5*time.Millisecond:
		return fmt.Errorf("multiraft: heartbeat timeout %v is below 5ms", t.HeartbeatTimeout)
	case t.ElectionTimeout < 5*time.Millisecond:
		return fmt.Errorf("multiraft: election timeout %v is below 5ms", t.ElectionTimeout)
	case t.LeaderLeaseTimeout < 5*time.Millisecond || t.LeaderLeaseTimeout > t.HeartbeatTimeout:
		return fmt.Errorf("multiraft: leader lease %v must be between 5ms and the heartbeat timeout %v", t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	case t.CommitTimeout < time.Millisecond:
		return fmt.Errorf("multiraft: commit timeout %v is below 1ms", t.CommitTimeout)
	case t.MaxAppendEntries <= 0 || t.MaxAppendEntries > 1024:
		return fmt.Errorf("multiraft: max append entries %d must be in 1..1024", t.MaxAppendEntries)
	case t.SnapshotThreshold == 0 || t.SnapshotInterval <= 0:
		return errors.New("multiraft: snapshot threshold and interval must be positive")
	}
	return nil
}

func (t Timing) raftConfig(id string) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = t.HeartbeatTimeout
	c.ElectionTimeout = t.ElectionTimeout
	c.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	c.CommitTimeout = t.CommitTimeout
	c.MaxAppendEntries = t.MaxAppendEntries
	c.SnapshotThreshold = t.SnapshotThreshold
	c.TrailingLogs = t.TrailingLogs
	c.SnapshotInterval = t.SnapshotInterval
	c.BatchApplyCh = true
	// A replica removed from its group is stopped by the host, which also
	// drops its data; raft shutting itself down would race with that.
	c.ShutdownOnRemove = false
	return c
}

// heartbeatInterval returns the node-level heartbeat interval for the
// data and meta groups' timing: a quarter of the heartbeat timeout, which
// is above raft's longest pause between heartbeats (a fifth). Zero turns
// batching off, as when the two timeouts differ (one interval cannot suit
// both).
func (c *Config) heartbeatInterval() time.Duration {
	if c.Timing.PerGroupHeartbeats || c.MetaTiming.PerGroupHeartbeats ||
		c.Timing.HeartbeatTimeout != c.MetaTiming.HeartbeatTimeout {
		return 0
	}
	return c.Timing.HeartbeatTimeout / 4
}

// Config configures a Host.
type Config struct {
	NodeID string // required; stable across restarts
	// DataDir holds the raft logs and snapshots of every group on the node.
	DataDir string
	// PeerAddr is the address of the node's peer port ("127.0.0.1:0" picks
	// a free port); AdvertisePeerAddr is what other nodes dial (default:
	// the bound address).
	PeerAddr          string
	AdvertisePeerAddr string
	// ClientAddr is recorded in the meta group so other nodes and clients
	// can find this node's client port; the host does not serve it.
	ClientAddr string
	// PeerTLS and PeerClientTLS turn on (mutual) TLS on the peer port.
	// With client certificates, each must name its node (a DNS or URI SAN,
	// or the CN, equal to the node id).
	PeerTLS       *tls.Config
	PeerClientTLS *tls.Config
	// ClusterSecret, when set, is proved by every peer in the connection
	// handshake (at least 16 bytes; it never crosses the wire).
	ClusterSecret []byte
	// LogStore picks the raft log backend (default logstore's default).
	LogStore logstore.Kind
	Timing   Timing
	// MetaTiming is the meta group's timing (default: Timing).
	MetaTiming *Timing
	// LeaseTTL is how long a node keeps its lease without renewing it;
	// nodes renew every LeaseTTL/4. Default 10s.
	LeaseTTL time.Duration
	// ProposeTimeout bounds one proposal when the caller's context has no
	// deadline. Default 10s.
	ProposeTimeout time.Duration
	// StopTimeout bounds Close: what has not stopped by then is logged and
	// named in Close's error (ErrStopTimeout) and left behind. Default 15s.
	StopTimeout time.Duration
	App         Application
	Logger      *slog.Logger
	// Observer, when set, is told about proposals, applies, log syncs and
	// forwarded requests, for metrics.
	Observer Observer
	// OpenPeers, when set, opens the node's peer port instead of the TCP
	// one (package peertest's in-memory network, for tests); the fields
	// above that only concern TCP (PeerTLS, PeerClientTLS, ClusterSecret)
	// are then the opener's business.
	OpenPeers func(PeersConfig) (Peers, error)
}

func (c *Config) setDefaults() {
	c.Timing = c.Timing.WithDefaults()
	if c.MetaTiming == nil {
		t := c.Timing
		c.MetaTiming = &t
	} else {
		t := c.MetaTiming.WithDefaults()
		c.MetaTiming = &t
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ProposeTimeout == 0 {
		c.ProposeTimeout = 10 * time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Validate reports the first problem with the configuration.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("multiraft: a node id is required")
	case c.DataDir == "":
		return errors.New("multiraft: a data directory is required")
	case c.PeerAddr == "":
		return errors.New("multiraft: a peer address is required")
	case c.App == nil:
		return errors.New("multiraft: an application (state machine factory) is required")
	case c.LeaseTTL < 100*time.Millisecond:
		return fmt.Errorf("multiraft: lease TTL %v is below 100ms", c.LeaseTTL)
	case c.StopTimeout < 0:
		return fmt.Errorf("multiraft: stop timeout %v is negative", c.StopTimeout)
	}
	if err := c.Timing.Validate(); err != nil {
		return err
	}
	return c.MetaTiming.Validate()
}
