package client

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/heraldhq/herald/internal/fields"
)

// Config configures a Client. URLs and one of Token, TokenSource and User
// are required; every other field left zero takes DefaultConfig's value.
type Config struct {
	// URLs are ws:// or wss:// addresses (ending in /ws) of one or more
	// nodes. The first connection tries them in order; after a connection
	// ends the client moves on to the next one, round robin, since the
	// node it had may be the one that failed.
	URLs []string

	// Token is the JWT sent with auth. TokenSource, if set, is asked for a
	// token at every (re)connection instead, so a long-lived client can
	// outlive its tokens' expiry; once connected, the client keeps
	// reconnecting through refusals, which a fresh token may end. User is
	// the bare user name of a node in insecure mode. One of the three is
	// required.
	Token       string
	TokenSource func(ctx context.Context) (string, error)
	User        string

	// Backoff spaces reconnection attempts and request retries; its zero
	// fields take DefaultBackoff's values.
	Backoff Backoff
	// DialTimeout bounds one connection attempt: TCP, TLS, the websocket
	// handshake and auth. Default 10s.
	DialTimeout time.Duration
	// PingInterval is how often the client pings the node; a socket that
	// brings nothing for three intervals is dropped and replaced.
	// Default 15s.
	PingInterval time.Duration
	// RequestTimeout bounds each request the client makes on its own: the
	// re-joins and re-subscribes after a reconnection. One that gets no
	// answer in time is sent again; the node's pings keep a socket alive
	// whose node does not answer, so nothing else would end the wait.
	// Calls the application makes are bounded by their own contexts.
	// Default 30s.
	RequestTimeout time.Duration
	// DialContext opens the TCP connections (through a proxy, say);
	// default a net.Dialer's.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig is used for wss:// URLs.
	TLSConfig *tls.Config
	// MaxFrame is the largest frame the client reads. The default, 128 MiB,
	// fits a history page of 1,000 events of 64 KiB, more than a node's
	// byte-bounded pages (max_page_bytes) hold.
	MaxFrame int

	// Logger receives the client's diagnostics. Default: discard.
	Logger *slog.Logger
	// OnState is told of every connection state change. It runs on the
	// goroutine that connects, so it must return promptly and must not
	// call Close.
	OnState func(StateChange)
}

// Options is the former name of Config.
//
// Deprecated: use Config.
type Options = Config

// DefaultConfig returns the values Dial gives the fields of a Config left
// zero. URLs and the credentials have none.
func DefaultConfig() Config {
	return Config{
		Backoff:        DefaultBackoff(),
		DialTimeout:    10 * time.Second,
		PingInterval:   15 * time.Second,
		RequestTimeout: 30 * time.Second,
		DialContext:    (&net.Dialer{}).DialContext,
		MaxFrame:       128 << 20,
		Logger:         slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field.
func (c Config) WithDefaults() Config {
	c.Backoff = c.Backoff.WithDefaults()
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that Dial would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.URLs", len(c.URLs) > 0)
	if c.Token == "" && c.TokenSource == nil && c.User == "" {
		p.Addf("none of Config.Token, Config.TokenSource and Config.User is set: nothing to authenticate with")
	}
	fields.NotNegative(&p, "Config.DialTimeout", c.DialTimeout)
	fields.NotNegative(&p, "Config.PingInterval", c.PingInterval)
	fields.NotNegative(&p, "Config.RequestTimeout", c.RequestTimeout)
	fields.NotNegative(&p, "Config.MaxFrame", c.MaxFrame)
	p.Add(c.Backoff.Validate())
	return p.Err("herald")
}
