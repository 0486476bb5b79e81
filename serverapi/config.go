package serverapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/fields"
	"github.com/heraldhq/herald/wsfront"
)

// Config configures the server API. Every zero field takes DefaultConfig's
// value; without Keys or AllowLoopback the API refuses every request.
type Config struct {
	// Keys are the API keys a request may carry (X-API-Key: <key>, or
	// Authorization: apikey <key> or Bearer <key>); each at least
	// MinKeyBytes long.
	Keys []string
	// AllowLoopback accepts requests without a key from loopback
	// addresses, for development (herald dev). A request that carries a
	// key is still checked.
	AllowLoopback bool
	// MaxData bounds a publish's data in bytes of JSON (default the
	// front's, wsfront.DefaultLimits().MaxData): the same bound as a
	// socket's publish on the node. At most fsm.MaxPayloadBytes.
	MaxData int
	// MaxPageBytes bounds a history page (default
	// wsfront.DefaultMaxPageBytes).
	MaxPageBytes int
	// MaxBroadcastRooms bounds the rooms of one broadcast (default 100).
	MaxBroadcastRooms int
	// RequestTimeout bounds each request on the node, retries included
	// (default 10s).
	RequestTimeout time.Duration
	// NodeTimeout bounds the copy of a user op (disconnect, unsubscribe,
	// refresh) sent to each other node (default 3s, or RequestTimeout when
	// that is shorter; at most RequestTimeout): a node that does not answer
	// in time is reported failed instead of holding up the reply.
	NodeTimeout time.Duration
	// NodeClient sends those copies to the other nodes' client ports
	// (default: a client of its own); set it for client ports with TLS
	// certificates the system roots do not verify.
	NodeClient *http.Client
	// Sockets are the node's own sockets, which the user ops (disconnect,
	// unsubscribe, refresh) act on: its websocket front (Node.Front). A
	// server API without them answers those ops with an internal error.
	Sockets Sockets
	// Logger receives the API's errors. Default: discard.
	Logger *slog.Logger
}

// Options is the former name of Config.
//
// Deprecated: use Config.
type Options = Config

// DefaultConfig returns the values Handler gives the fields of a Config
// left zero.
func DefaultConfig() Config {
	def := wsfront.DefaultLimits()
	return Config{
		MaxData:           def.MaxData,
		MaxPageBytes:      wsfront.DefaultMaxPageBytes,
		MaxBroadcastRooms: 100,
		RequestTimeout:    def.RequestTimeout,
		NodeTimeout:       3 * time.Second,
		NodeClient:        &http.Client{},
		Logger:            slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field, except that a default NodeTimeout is cut to a shorter
// RequestTimeout, so that setting RequestTimeout alone never makes it
// invalid.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	fields.Default(&c.RequestTimeout, d.RequestTimeout)
	// A default node timeout is cut to a shorter request timeout.
	fields.Default(&c.NodeTimeout, min(d.NodeTimeout, max(c.RequestTimeout, 0)))
	fields.Fill(&c, d)
	return c
}

// Validate reports every field of c that Handler would refuse, by name,
// after zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	if c.MaxData < 0 || c.MaxData > fsm.MaxPayloadBytes {
		p.Addf("Config.MaxData %d: want 1..%d bytes", c.MaxData, fsm.MaxPayloadBytes)
	}
	fields.NotNegative(&p, "Config.MaxPageBytes", c.MaxPageBytes)
	fields.NotNegative(&p, "Config.MaxBroadcastRooms", c.MaxBroadcastRooms)
	fields.NotNegative(&p, "Config.RequestTimeout", c.RequestTimeout)
	fields.NotNegative(&p, "Config.NodeTimeout", c.NodeTimeout)
	if c.NodeTimeout > c.RequestTimeout {
		p.Addf("Config.NodeTimeout %v: at most Config.RequestTimeout, %v", c.NodeTimeout, c.RequestTimeout)
	}
	if _, err := newKeySet(c.Keys); err != nil {
		p.Addf("Config.Keys: %w", err)
	}
	return p.Err("serverapi")
}
