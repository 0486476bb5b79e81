package multiraft

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/fields"
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
	leaseUnset, trailing := t.LeaderLeaseTimeout == 0, t.TrailingLogs
	fields.Fill(&t, d)
	t.TrailingLogs = trailing // its zero keeps no trailing logs
	// The lease may not outlast the heartbeat timeout: a default lease
	// follows a shorter heartbeat timeout down.
	if leaseUnset && t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		t.LeaderLeaseTimeout = t.HeartbeatTimeout
	}
	return t
}

// Validate reports, by name, every timing raft would refuse or that
// contradicts another, after zero fields took their defaults.
func (t Timing) Validate() error {
	var p fields.Problems
	t.WithDefaults().check(&p, "Timing")
	return p.Err("")
}

// check adds what is wrong with t to p, naming its fields under name.
func (t Timing) check(p *fields.Problems, name string) {
	if t.HeartbeatTimeout < 5*time.Millisecond {
		p.Addf("%s.HeartbeatTimeout %v is below 5ms", name, t.HeartbeatTimeout)
	}
	if t.ElectionTimeout < 5*time.Millisecond {
		p.Addf("%s.ElectionTimeout %v is below 5ms", name, t.ElectionTimeout)
	}
	if t.LeaderLeaseTimeout < 5*time.Millisecond || t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		p.Addf("%[1]s.LeaderLeaseTimeout %[2]v must be between 5ms and %[1]s.HeartbeatTimeout %[3]v", name, t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	}
	if t.CommitTimeout < time.Millisecond {
		p.Addf("%s.CommitTimeout %v is below 1ms", name, t.CommitTimeout)
	}
	if t.MaxAppendEntries <= 0 || t.MaxAppendEntries > 1024 {
		p.Addf("%s.MaxAppendEntries %d must be in 1..1024", name, t.MaxAppendEntries)
	}
	fields.NotNegative(p, name+".SnapshotInterval", t.SnapshotInterval)
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
	// LogStore picks the raft log backend; empty means the one DataDir
	// already holds, or logstore.DefaultKind (logstore.Config.Kind).
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

// DefaultConfig returns the values Start gives the fields of a Config left
// zero. NodeID, DataDir, PeerAddr and App have none and must be set;
// MetaTiming is left nil, which means Timing's.
func DefaultConfig() Config {
	return Config{
		Timing:         DefaultTiming(),
		LeaseTTL:       10 * time.Second,
		ProposeTimeout: 10 * time.Second,
		StopTimeout:    15 * time.Second,
		Logger:         slog.New(slog.DiscardHandler),
		Observer:       nopObserver{},
	}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field (Timing's too, Timing.WithDefaults), and a nil MetaTiming
// set to a copy of the resulting Timing.
func (c Config) WithDefaults() Config {
	c.Timing = c.Timing.WithDefaults()
	meta := c.Timing
	if c.MetaTiming != nil {
		meta = c.MetaTiming.WithDefaults()
	}
	fields.Fill(&c, DefaultConfig())
	c.MetaTiming = &meta
	return c
}

// Validate reports every field of c that Start would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.NodeID", c.NodeID != "")
	p.Required("Config.DataDir", c.DataDir != "")
	p.Required("Config.PeerAddr", c.PeerAddr != "")
	p.Required("Config.App (the state machine factory)", c.App != nil)
	if c.LeaseTTL < 100*time.Millisecond {
		p.Addf("Config.LeaseTTL %v is below 100ms", c.LeaseTTL)
	}
	fields.NotNegative(&p, "Config.ProposeTimeout", c.ProposeTimeout)
	fields.NotNegative(&p, "Config.StopTimeout", c.StopTimeout)
	c.Timing.check(&p, "Config.Timing")
	c.MetaTiming.check(&p, "Config.MetaTiming")
	return p.Err("multiraft")
}
