package serverapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/heraldhq/herald/fsm"
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
	if c.MaxData == 0 {
		c.MaxData = d.MaxData
	}
	if c.MaxPageBytes == 0 {
		c.MaxPageBytes = d.MaxPageBytes
	}
	if c.MaxBroadcastRooms == 0 {
		c.MaxBroadcastRooms = d.MaxBroadcastRooms
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = min(d.NodeTimeout, max(c.RequestTimeout, 0))
	}
	if c.NodeClient == nil {
		c.NodeClient = d.NodeClient
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Validate reports every field of c that Handler would refuse, by name,
// after zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.MaxData < 0 || c.MaxData > fsm.MaxPayloadBytes {
		errs = append(errs, fmt.Errorf("Config.MaxData %d: want 1..%d bytes", c.MaxData, fsm.MaxPayloadBytes))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Config.MaxPageBytes", int64(c.MaxPageBytes)}, {"Config.MaxBroadcastRooms", int64(c.MaxBroadcastRooms)},
		{"Config.RequestTimeout", int64(c.RequestTimeout)}, {"Config.NodeTimeout", int64(c.NodeTimeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative", f.name))
		}
	}
	if c.NodeTimeout > c.RequestTimeout {
		errs = append(errs, fmt.Errorf("Config.NodeTimeout %v: at most Config.RequestTimeout, %v", c.NodeTimeout, c.RequestTimeout))
	}
	if _, err := newKeySet(c.Keys); err != nil {
		errs = append(errs, fmt.Errorf("Config.Keys: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("serverapi: %w", err)
	}
	return nil
}
