package herald

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/heraldhq/herald/internal/fields"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Config configures one node. NodeID, DataDir, ClientAddr and PeerAddr
// are required; every other field left zero takes DefaultConfig's value.
type Config struct {
	// NodeID names the node in its cluster; it must stay the same across
	// restarts with the same DataDir.
	NodeID string
	// DataDir holds the node's raft logs (raft/) and room state (state/).
	DataDir string

	// ClientAddr is where the websocket and HTTP port listens
	// ("127.0.0.1:0" picks a free port); PeerAddr the same for the peer port.
	// The advertised forms are what clients and other nodes dial (default:
	// the bound address).
	ClientAddr          string
	AdvertiseClientAddr string
	PeerAddr            string
	AdvertisePeerAddr   string
	// ClientTLS serves the client port as https/wss.
	ClientTLS *tls.Config
	// PeerTLS and PeerClientTLS turn on mutual TLS on the peer port; the
	// certificate each node presents must name its node id (a DNS or URI
	// SAN, or the CN).
	PeerTLS       *tls.Config
	PeerClientTLS *tls.Config
	// ClusterSecret is the secret every node of the cluster shares and
	// proves to its peers in each connection's handshake (at least 16
	// bytes; it never crosses the wire). A peer port that is not on
	// loopback needs it, or mutual TLS, unless InsecurePeers is set.
	ClusterSecret []byte
	// InsecurePeers lets a peer port off loopback accept peers that prove
	// nothing: anyone who reaches the port can then act as a node. For
	// networks the operator fully controls; Start logs a warning.
	InsecurePeers bool

	// Bootstrap creates a new cluster (every initial node gets the same
	// spec); Join adds the node to an existing one through any of its
	// nodes' peer addresses. A node restarting with its data needs neither;
	// Node.Bootstrap and Node.Join do the same after Start.
	Bootstrap *multiraft.BootstrapSpec
	Join      []string

	Auth auth.Config
	// AllowedOrigins are the browser origins whose pages may open sockets
	// (see wsfront.Config.AllowedOrigins).
	AllowedOrigins []string
	// Limits bound what one socket may cost; zero fields get
	// wsfront.DefaultLimits' (Limits.WithDefaults).
	Limits wsfront.Limits
	// LogStore picks the raft log backend; empty means the one DataDir
	// already holds, or logstore.DefaultKind (logstore.Config.Kind).
	LogStore logstore.Kind
	// Timing holds the raft timeouts; zero fields get
	// multiraft.DefaultTiming's (Timing.WithDefaults).
	Timing multiraft.Timing
	// LeaseTTL is how long the node's ephemeral members outlive it when it
	// dies without closing (default multiraft's, 10s).
	LeaseTTL time.Duration
	// TickInterval is how often the leader of each group enforces the age
	// limits of its rooms' history (default 30s).
	TickInterval time.Duration
	// StopTimeout bounds Close (default 15s).
	StopTimeout time.Duration
	// DisableMetrics turns off the Prometheus metrics the node otherwise
	// serves at /metrics on its client port (docs/operations.md lists them).
	DisableMetrics bool
	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger

	// Mount, if set, is called during Start once the node's own handlers
	// are on its client port and before the port accepts connections, to
	// add more with n.Front().Handle (the admin API, say). Handlers added
	// after Start returns would answer 404 for a moment after the node
	// already answers /readyz with 200. When Mount runs, the node has not
	// joined its cluster yet; n.Host() and n.Front() are ready.
	Mount func(n *Node)
}

// DefaultConfig returns the values Start gives the fields of a Config left
// zero: the defaults of the packages the node assembles.
func DefaultConfig() Config {
	host := multiraft.DefaultConfig()
	return Config{
		Limits:       wsfront.DefaultLimits(),
		Timing:       host.Timing,
		LeaseTTL:     host.LeaseTTL,
		TickInterval: rooms.DefaultConfig().TickInterval,
		StopTimeout:  host.StopTimeout,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field, Limits' and Timing's included.
func (c Config) WithDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	c.Timing = c.Timing.WithDefaults()
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that Start would refuse, by name,
// after zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.NodeID", c.NodeID != "")
	p.Required("Config.DataDir", c.DataDir != "")
	p.Required("Config.ClientAddr", c.ClientAddr != "")
	p.Required("Config.PeerAddr", c.PeerAddr != "")
	if c.Bootstrap != nil && len(c.Join) > 0 {
		p.Addf("Config.Bootstrap and Config.Join exclude each other: a node founds a cluster or joins one")
	}
	if _, err := logstore.ParseKind(string(c.LogStore)); err != nil && c.LogStore != "" {
		p.Addf("Config.LogStore: %w", err)
	}
	fields.NotNegative(&p, "Config.LeaseTTL", c.LeaseTTL)
	fields.NotNegative(&p, "Config.TickInterval", c.TickInterval)
	fields.NotNegative(&p, "Config.StopTimeout", c.StopTimeout)
	if err := c.Limits.Validate(); err != nil {
		p.Addf("Config.%w", err)
	}
	if err := c.Timing.Validate(); err != nil {
		p.Addf("Config.%w", err)
	}
	p.Add(c.checkPeerAuth())
	if err := c.Auth.Validate(); err != nil {
		p.Addf("Config.Auth: %w", err)
	}
	return p.Err("herald")
}

// checkPeerAuth refuses a peer port that anyone on the network could use
// to act as a node: one off loopback that authenticates peers neither by a
// cluster secret nor by client certificates.
func (c Config) checkPeerAuth() error {
	if n := len(c.ClusterSecret); n > 0 && n < multiraft.MinClusterSecretLen {
		return fmt.Errorf("Config.ClusterSecret is %d bytes; use at least %d (e.g. openssl rand -hex 32)", n, multiraft.MinClusterSecretLen)
	}
	if len(c.ClusterSecret) > 0 || c.peerMutualTLS() || c.InsecurePeers || c.PeerAddr == "" || isLoopback(c.PeerAddr) {
		return nil
	}
	return fmt.Errorf("the peer port %s (Config.PeerAddr) is not on loopback and peers would not authenticate: anyone who reaches it could act as a node; "+
		"set a cluster secret (--cluster-secret-file or HERALD_CLUSTER_SECRET, the same on every node) or peer mutual TLS (--peer-tls-cert, --peer-tls-key, --peer-tls-ca), "+
		"or, on a network you fully control, --insecure-peers", c.PeerAddr)
}

func (c Config) peerMutualTLS() bool {
	return c.PeerTLS != nil && c.PeerTLS.ClientAuth == tls.RequireAndVerifyClientCert && c.PeerClientTLS != nil
}

// isLoopback reports whether a listen address binds loopback only: an
// empty or unspecified host binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
