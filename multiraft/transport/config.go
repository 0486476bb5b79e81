package transport

import (
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/heraldhq/herald/internal/fields"
)

// Config configures a Manager.
type Config struct {
	// NodeID is this node's id; it is sent in the connection handshake and
	// passed to handlers as the caller's identity. At most 255 bytes.
	NodeID string
	// Listener, when set, is used instead of listening on ListenAddr. The
	// Manager takes ownership and closes it on Close.
	Listener net.Listener
	// ListenAddr is the address to listen on, e.g. "127.0.0.1:0".
	ListenAddr string
	// AdvertiseAddr is the address peers dial; it defaults to the
	// listener's address.
	AdvertiseAddr string
	// TLS, when set, makes the listener speak TLS. Set ClientAuth and
	// ClientCAs to require client certificates (mutual TLS).
	TLS *tls.Config
	// ClientTLS, when set, makes outbound connections use TLS; it is mutual
	// TLS when it carries a certificate.
	ClientTLS *tls.Config
	// DialTimeout bounds a dial including the TLS and protocol handshake.
	// Default 2s.
	DialTimeout time.Duration
	// RPCTimeout bounds any one raft RPC or Call waiting for its reply, and
	// how long a peer may stall mid-frame or mid-write. It does not bound
	// the transfer of InstallSnapshot data as a whole. Default 5s.
	RPCTimeout time.Duration
	// HeartbeatCoalesce is how long a heartbeat (and its reply) may wait
	// in a connection's queue for other frames to share its write. With
	// hundreds of groups per node, heartbeats are most of an idle node's
	// traffic and each would otherwise cost a syscall on both ends.
	// Default 2ms; negative sends heartbeats at once.
	HeartbeatCoalesce time.Duration
	// HeartbeatInterval, when positive, turns on node-level heartbeats:
	// raft's heartbeats wait for the next tick of this interval, when the
	// Manager sends each peer node one call carrying all of them
	// (heartbeat.go). It must exceed raft's longest pause between
	// heartbeats (HeartbeatTimeout/5) and stay well below the heartbeat
	// timeout: HeartbeatTimeout/4 of the groups' timing. Zero leaves every
	// heartbeat on its own.
	HeartbeatInterval time.Duration
	// ProbeAfter is how long an outbound connection with requests waiting
	// may receive nothing before it pings the peer; when the ping goes
	// unanswered as long again, the connection is closed and its requests
	// fail as unreachable (probe.go). It bounds how long a paused or frozen
	// peer holds requests, well below RPCTimeout. Default 1s; negative
	// turns probing off.
	ProbeAfter time.Duration
	// ClusterSecret, when set, is the shared secret every peer must prove
	// it knows in the handshake (handshake.go), and which this node proves
	// to every peer it dials; it never crosses the wire. At least
	// MinClusterSecretLen bytes. It authenticates peers but does not
	// encrypt: on networks an attacker can tap, use TLS as well.
	ClusterSecret []byte
	// Authorize, when set, is asked about every authenticated peer node id,
	// on accept and again on each request while it answers AccessJoin. An
	// error refuses the connection with that reason.
	Authorize func(nodeID string) (PeerAccess, error)
	// JoinServices are the Call services a peer with AccessJoin may use.
	JoinServices []string
	// Logger receives connection-level errors. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the values New gives the fields of a Config left
// zero. NodeID and ListenAddr (or Listener) have none and must be set.
func DefaultConfig() Config {
	return Config{
		DialTimeout:       2 * time.Second,
		RPCTimeout:        5 * time.Second,
		HeartbeatCoalesce: 2 * time.Millisecond,
		ProbeAfter:        time.Second,
		Logger:            slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field: setting one field never changes another.
func (c Config) WithDefaults() Config {
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that New would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.NodeID", c.NodeID != "")
	if len(c.NodeID) > 255 {
		p.Addf("Config.NodeID is %d bytes, at most 255 allowed", len(c.NodeID))
	}
	p.Required("Config.Listener or Config.ListenAddr", c.Listener != nil || c.ListenAddr != "")
	fields.NotNegative(&p, "Config.DialTimeout", c.DialTimeout)
	fields.NotNegative(&p, "Config.RPCTimeout", c.RPCTimeout)
	fields.NotNegative(&p, "Config.HeartbeatInterval", c.HeartbeatInterval)
	if n := len(c.ClusterSecret); n > 0 && n < MinClusterSecretLen {
		p.Addf("Config.ClusterSecret is %d bytes, at least %d are needed", n, MinClusterSecretLen)
	}
	return p.Err("transport")
}
