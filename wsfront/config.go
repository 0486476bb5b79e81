package wsfront

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/fields"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Subprotocol is the websocket sub-protocol the front speaks.
const Subprotocol = protocol.Subprotocol

// Backend is the replicated room store behind the front: the room layer's
// rooms.Service implements it. Errors are the room layer's (rooms.ErrorOf
// maps them to the protocol's codes), fsm's sentinel errors, or the
// context's.
type Backend interface {
	// NodeID names this node; NodeEpoch is its current registration in the
	// cluster (0 until registered), to which ephemeral joins are bound.
	NodeID() string
	NodeEpoch() uint64
	// Group is the raft group that holds a room.
	Group(room string) uint64
	// Propose commits a command in its room's group and returns its result.
	Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
	// History, Members and Room read a room, linearizably unless stale.
	// A history page holds at most limit events and stops early, after at
	// least one event, once its events would count more than maxBytes
	// (fsm.History.Bytes); the bound holds while the page is read, on
	// whichever node reads it.
	History(ctx context.Context, room string, fromSeq uint64, limit, maxBytes int, stale bool) (fsm.History, error)
	Members(ctx context.Context, room string, stale bool) (fsm.Members, error)
	Room(ctx context.Context, room string) (fsm.RoomInfo, error)
	// GroupEvents opens a stream of the events the group applies from now
	// on, from its leader. The stream ends when the leadership moves; the
	// caller then opens a new one.
	GroupEvents(ctx context.Context, group uint64) (rooms.Feed, error)
	// Ready reports why the node cannot serve yet, or nil.
	Ready() error
}

// ReadyNoter is a Backend that can say what is wrong while it is ready
// all the same; /readyz lists the notes under "degraded" and answers 200.
type ReadyNoter interface {
	ReadyNotes() []string
}

// ClientPublishMarker is a Backend that says whether the front may mark the
// publishes of sockets (fsm.Command.FromClient), which rooms that take
// publishes from the backend only refuse. A replica of an earlier release
// cannot read the mark and would skip the entry, so a cluster turns it on
// only once it runs this release throughout. A Backend without the method
// always marks them.
type ClientPublishMarker interface {
	MarkClientPublishes() bool
}

// Limits bound what one socket may cost the node. docs/protocol.md lists
// them with the answer a client gets for each.
type Limits struct {
	MaxFrame       int     // bytes of one client frame
	MaxData        int     // bytes of a publish's data or a join's meta
	MaxRooms       int     // rooms joined plus subscribed per socket
	PublishRate    float64 // publishes per second per socket
	PublishBurst   int     // publishes allowed at once
	MaxInflight    int     // requests in progress per socket
	MaxQueueFrames int     // outgoing frames queued per socket
	MaxQueueBytes  int     // outgoing bytes queued per socket
	// MaxPageBytes bounds one history page in bytes (its events as
	// stored, see fsm.History.Bytes): a history reply, a subscribe's first
	// page and every page a subscription catches up with. It is also what
	// a read holds of the socket's and the node's budgets while it runs.
	// 0 means DefaultMaxPageBytes; it is cut to half of MaxQueueBytes, so
	// that a page always fits beside the events a socket has queued.
	MaxPageBytes int
	// MaxReadBytes bounds the bytes of history pages that the whole node
	// is reading, building and holding in socket queues at once; a read
	// over it is answered rate_limited. 0 means DefaultMaxReadBytes.
	MaxReadBytes   int
	AuthTimeout    time.Duration // to authenticate after connecting
	IdleTimeout    time.Duration // without receiving anything; also a blocked write, and an HTTP request's body
	PingInterval   time.Duration // between server pings
	RequestTimeout time.Duration // one request, retries included
	// HandshakeTimeout bounds the websocket upgrade.
	HandshakeTimeout time.Duration
	// LeaveTimeout bounds the leaves a closing socket proposes for the rooms
	// it joined; past it, the node's lease expiry removes the members.
	LeaveTimeout time.Duration

	// MaxSockets bounds the sockets open on the node, so that clients can
	// never take the file descriptors raft, storage, /readyz and the admin
	// API need; a socket over it is refused at upgrade with HTTP 503.
	// 0 means DefaultMaxSockets(), derived from the open-files limit.
	MaxSockets int
	// MaxSocketsPerIP bounds the sockets of one client address (an IPv4
	// address, or an IPv6 /64) on the node: HTTP 429 at upgrade. It counts
	// the TCP peer, so behind a proxy every client shares the proxy's
	// address. 0 means DefaultMaxSocketsPerIP; NoLimit turns it off.
	MaxSocketsPerIP int
	// MaxSocketsPerUser bounds the authenticated sockets of one user on the
	// node: an auth over it is answered limit_exceeded and the socket is
	// closed with 4029. 0 means DefaultMaxSocketsPerUser; NoLimit turns it
	// off.
	MaxSocketsPerUser int
}

// NoLimit, as Limits.MaxSocketsPerIP or Limits.MaxSocketsPerUser, turns
// that limit off (any negative value does): 0 is the default, as in every
// other field.
const NoLimit = -1

// Socket limit defaults. The per-address one leaves room for many users
// behind one NAT; the per-user one for a user's tabs and devices.
const (
	DefaultMaxSocketsPerIP   = 1000
	DefaultMaxSocketsPerUser = 100
	// fallbackMaxSockets applies where the open-files limit is unknown.
	fallbackMaxSockets = 10000
)

// DefaultMaxSockets is the node-wide socket limit used when
// Limits.MaxSockets is 0: the open-files limit less a reserve of a tenth of
// it, at least 1,000 and at most half of it, for peer connections, raft
// logs, badger's files, the admin API and HTTP connections not yet
// upgraded (a limit of 20,000 leaves 18,000 sockets; 1,024 leaves 512).
// Where the limit is unknown it is 10,000.
func DefaultMaxSockets() int { return maxSocketsFor(openFilesLimit()) }

func maxSocketsFor(nofile uint64) int {
	if nofile == 0 {
		return fallbackMaxSockets
	}
	// An unlimited or huge limit is no reason to promise more sockets
	// than memory could hold (about 11 KB each; docs/benchmarks.md).
	nofile = min(nofile, 1<<24)
	reserve := min(max(nofile/10, 1000), nofile/2)
	return int(nofile - reserve)
}

// hardFrame is the largest frame the front reads at all. Frames between
// MaxFrame and it are read, answered too_large with their id (so the
// client's request fails at once) and the socket stays; a bigger frame
// closes the socket with 1009 as soon as its header announces the length,
// before any of its payload is buffered. The margin lets a client that
// overshoots by a little keep its socket, while a socket never costs more
// than this one buffer however large a frame it announces.
func (l Limits) hardFrame() int { return 4 * l.MaxFrame }

// limitsJSON is the "limits" object of the auth reply: what a client
// needs to refuse a request itself instead of sending a frame the node
// will refuse (or, past hardFrame, close the socket for).
func limitsJSON(l Limits) []byte {
	b := []byte(`{"max_frame":`)
	b = strconv.AppendInt(b, int64(l.MaxFrame), 10)
	b = append(b, `,"max_data":`...)
	b = strconv.AppendInt(b, int64(l.MaxData), 10)
	return append(b, '}')
}

// Defaults of the read budgets (Limits.MaxPageBytes, Limits.MaxReadBytes).
// A page of 1 MiB is read in a few milliseconds and keeps a socket's 4 MiB
// queue to four pages; 64 MiB lets 64 such reads run at once on a node
// before more wait, a small share of a node's memory.
const (
	DefaultMaxPageBytes = 1 << 20
	DefaultMaxReadBytes = 64 << 20
)

// pageBytes is the byte bound of one history page.
func (l Limits) pageBytes() int {
	n := l.MaxPageBytes
	if n <= 0 {
		n = DefaultMaxPageBytes
	}
	return max(min(n, l.MaxQueueBytes/2), 1)
}

// readBytes is the node's budget for history pages in flight.
func (l Limits) readBytes() int {
	if l.MaxReadBytes <= 0 {
		return DefaultMaxReadBytes
	}
	return l.MaxReadBytes
}

// DefaultLimits are the limits docs/protocol.md documents.
func DefaultLimits() Limits {
	return Limits{
		MaxFrame:         64 << 10,
		MaxData:          64 << 10,
		MaxRooms:         100,
		PublishRate:      100,
		PublishBurst:     200,
		MaxInflight:      64,
		MaxQueueFrames:   1024,
		MaxQueueBytes:    4 << 20,
		MaxPageBytes:     DefaultMaxPageBytes,
		MaxReadBytes:     DefaultMaxReadBytes,
		AuthTimeout:      10 * time.Second,
		IdleTimeout:      60 * time.Second,
		PingInterval:     20 * time.Second,
		RequestTimeout:   10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		LeaveTimeout:     5 * time.Second,

		MaxSocketsPerIP:   DefaultMaxSocketsPerIP,
		MaxSocketsPerUser: DefaultMaxSocketsPerUser,
	}
}

// WithDefaults returns l with each zero field set to DefaultLimits' value,
// field by field: a configuration sets only the limits it changes. Zero
// MaxSockets stays zero, which New reads as DefaultMaxSockets(), derived
// from the open-files limit when the front starts.
func (l Limits) WithDefaults() Limits {
	fields.Fill(&l, DefaultLimits())
	return l
}

// Validate reports, by name, every limit that would make the front
// unusable, after zero fields took their defaults.
func (l Limits) Validate() error {
	l = l.WithDefaults()
	var p fields.Problems
	for _, f := range []struct {
		name string
		v    int
	}{
		{"Limits.MaxFrame", l.MaxFrame}, {"Limits.MaxData", l.MaxData}, {"Limits.MaxRooms", l.MaxRooms},
		{"Limits.PublishBurst", l.PublishBurst}, {"Limits.MaxInflight", l.MaxInflight},
		{"Limits.MaxQueueFrames", l.MaxQueueFrames}, {"Limits.MaxQueueBytes", l.MaxQueueBytes},
		{"Limits.MaxPageBytes", l.MaxPageBytes}, {"Limits.MaxReadBytes", l.MaxReadBytes},
	} {
		fields.NotNegative(&p, f.name, f.v)
	}
	fields.NotNegative(&p, "Limits.PublishRate", l.PublishRate)
	if l.MaxSockets < 0 {
		p.Addf("Limits.MaxSockets %d is negative (0: derived from the open-files limit)", l.MaxSockets)
	}
	if l.MaxData > fsm.MaxPayloadBytes {
		p.Addf("Limits.MaxData %d is above what the state machine accepts (%d)", l.MaxData, fsm.MaxPayloadBytes)
	}
	if l.MaxPageBytes > 0 && l.MaxReadBytes > 0 && l.MaxQueueBytes > 0 && l.readBytes() < l.pageBytes() {
		p.Addf("Limits.MaxReadBytes %d is below one page (Limits.MaxPageBytes %d): no history read could run",
			l.readBytes(), l.pageBytes())
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"Limits.AuthTimeout", l.AuthTimeout}, {"Limits.IdleTimeout", l.IdleTimeout}, {"Limits.PingInterval", l.PingInterval},
		{"Limits.RequestTimeout", l.RequestTimeout}, {"Limits.HandshakeTimeout", l.HandshakeTimeout}, {"Limits.LeaveTimeout", l.LeaveTimeout},
	} {
		fields.NotNegative(&p, f.name, f.v)
	}
	if l.PingInterval > 0 && l.PingInterval >= l.IdleTimeout {
		p.Addf("Limits.PingInterval %v must be shorter than Limits.IdleTimeout %v", l.PingInterval, l.IdleTimeout)
	}
	return p.Err("")
}

// Observer is told what the front does, for metrics. Its methods run on
// the paths they count (every request, every event frame a socket is sent),
// often many at once: they must be cheap and must not block.
type Observer interface {
	// SocketOpened and SocketClosed bracket every socket the front
	// accepted: their difference is Server.Sessions.
	SocketOpened()
	SocketClosed()
	// ServerClosed: the front closed a socket with code: 4001 (not
	// authenticated in time), 4002 (idle), 4008 (slow consumer), 4029 (too
	// many sockets for its user) or 1001 (the node is stopping).
	ServerClosed(code int)
	// Op: a request was answered, d after its frame arrived. op is one of
	// the protocol's ops or "unknown" (a frame that named none); code is
	// "ok" or the reply's error code.
	Op(op, code string, d time.Duration)
	// EventsDelivered: n event frames were queued for sockets.
	EventsDelivered(n int)
	// SocketRefused: a socket was refused for a limit, reason being
	// RefusedMaxSockets, RefusedPerIP or RefusedPerUser.
	SocketRefused(reason string)
}

type nopObserver struct{}

func (nopObserver) SocketOpened()                    {}
func (nopObserver) SocketClosed()                    {}
func (nopObserver) ServerClosed(int)                 {}
func (nopObserver) Op(string, string, time.Duration) {}
func (nopObserver) EventsDelivered(int)              {}
func (nopObserver) SocketRefused(string)             {}

// Config configures a front.
type Config struct {
	Backend Backend
	Auth    auth.Config
	Limits  Limits
	Logger  *slog.Logger
	// Observer, when set, is told about sockets, requests and event
	// deliveries, for metrics.
	Observer Observer
	// AllowedOrigins lists the browser origins ("https://chat.example.com")
	// whose pages may open sockets; "*" allows any. Empty means any origin
	// when clients must present tokens, but only loopback origins in
	// insecure mode: there any web page a developer visits could otherwise
	// use the cluster under any name. Clients that send no Origin (not
	// browsers) are always allowed.
	AllowedOrigins []string
}

// DefaultConfig returns the values New gives the fields of a Config left
// zero. Backend has none and must be set; Auth has none either (a front
// either verifies tokens or is insecure, and says which).
func DefaultConfig() Config {
	return Config{Limits: DefaultLimits(), Logger: slog.New(slog.DiscardHandler), Observer: nopObserver{}}
}

// WithDefaults returns c with each zero field set to DefaultConfig's value,
// field by field, and so each zero limit (Limits.WithDefaults).
func (c Config) WithDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	fields.Fill(&c, DefaultConfig())
	return c
}

// Validate reports every field of c that New would refuse, by name, after
// zero fields took their defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fields.Problems
	p.Required("Config.Backend", c.Backend != nil)
	if err := c.Auth.Validate(); err != nil {
		p.Addf("Config.Auth: %w", err)
	}
	if err := c.Limits.Validate(); err != nil {
		p.Addf("Config.%w", err)
	}
	return p.Err("wsfront")
}
