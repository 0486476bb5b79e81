package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// PeerAccess is what an authenticated peer may do on this node.
type PeerAccess int32

const (
	// AccessFull allows raft RPCs, snapshots, calls and streams.
	AccessFull PeerAccess = iota
	// AccessJoin allows only calls to Config.JoinServices: a node that
	// proved its identity but is not (yet) a member of the cluster.
	AccessJoin
)

const (
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second

	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second

	tcpKeepAlive = 15 * time.Second
)

// Manager owns a node's peer port: the listener, one multiplexed connection
// per peer node, the per-group raft transports and node RPC handlers.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	addr raft.ServerAddress

	// ctx is cancelled by Close; every goroutine and wait of the Manager
	// observes it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards closed and the four maps below it.
	mu      sync.RWMutex
	closed  bool
	groups  map[uint64]*GroupTransport
	peers   map[raft.ServerAddress]*peer
	conns   map[*conn]struct{}
	rawConn map[net.Conn]struct{} // handshaking and snapshot connections
	// handshaking counts, per remote host, the connections still in the
	// handshake (maxHandshakesPerHost).
	handshaking map[string]int

	// hmu guards handlers and streamHandlers: New fills in its own
	// services before the Manager is shared, Handle changes them later.
	hmu            sync.RWMutex
	handlers       map[string]Handler
	streamHandlers map[string]StreamHandler

	hb heartbeatCounters

	rejected rejectLog
}

// New validates cfg (zero fields take DefaultConfig's values), starts
// listening and accepting connections.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("transport: listening on %s: %w", cfg.ListenAddr, err)
		}
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	addr := cfg.AdvertiseAddr
	if addr == "" {
		addr = ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg:            cfg,
		log:            cfg.Logger.With("node", cfg.NodeID),
		ln:             ln,
		addr:           raft.ServerAddress(addr),
		ctx:            ctx,
		cancel:         cancel,
		groups:         make(map[uint64]*GroupTransport),
		peers:          make(map[raft.ServerAddress]*peer),
		conns:          make(map[*conn]struct{}),
		rawConn:        make(map[net.Conn]struct{}),
		handlers:       make(map[string]Handler),
		streamHandlers: make(map[string]StreamHandler),
	}
	// Batches are served whether or not this node sends any.
	m.handlers[heartbeatService] = m.serveHeartbeats
	m.handlers[pingService] = func(context.Context, string, uint64, []byte) ([]byte, error) { return nil, nil }
	m.wg.Add(1)
	go m.acceptLoop()
	if m.batching() {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.heartbeatLoop()
		}()
	}
	return m, nil
}

// Addr returns the address peers dial to reach this node.
func (m *Manager) Addr() raft.ServerAddress { return m.addr }

// Close closes the listener and every connection, fails pending calls,
// detaches all groups and waits for the Manager's goroutines, including
// running handlers (which see their context cancelled). It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	conns := make([]*conn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	raws := make([]net.Conn, 0, len(m.rawConn))
	for nc := range m.rawConn {
		raws = append(raws, nc)
	}
	groups := make([]*GroupTransport, 0, len(m.groups))
	for _, g := range m.groups {
		groups = append(groups, g)
	}
	m.mu.Unlock()

	err := m.ln.Close()
	closing := fmt.Errorf("%w: node %s is shutting down", ErrClosed, m.cfg.NodeID)
	// Connections go before handler contexts are cancelled, so a handler
	// giving up on shutdown cannot send its peer a misleading answer.
	for _, c := range conns {
		c.close(closing)
	}
	m.cancel()
	for _, nc := range raws {
		_ = nc.Close()
	}
	for _, g := range groups {
		_ = g.Close()
	}
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Group registers the raft transport of group id. Each group may be
// registered once at a time; after its GroupTransport is closed the id may
// be registered again.
func (m *Manager) Group(id uint64) (*GroupTransport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("%w: cannot register group %d: node %s is shut down", ErrClosed, id, m.cfg.NodeID)
	}
	if _, ok := m.groups[id]; ok {
		return nil, fmt.Errorf("transport: group %d is already registered on node %s", id, m.cfg.NodeID)
	}
	g := newGroup(m, id)
	m.groups[id] = g
	return g, nil
}

func (m *Manager) group(id uint64) *GroupTransport {
	m.mu.RLock()
	g := m.groups[id]
	m.mu.RUnlock()
	return g
}

func (m *Manager) removeGroup(g *GroupTransport) {
	m.mu.Lock()
	if m.groups[g.id] == g {
		delete(m.groups, g.id)
	}
	m.mu.Unlock()
}

func (m *Manager) errNoGroup(id uint64) error {
	return fmt.Errorf("transport: group %d is not registered on node %s", id, m.cfg.NodeID)
}

// goFunc runs f on a goroutine owned by the Manager, unless the Manager is
// closing; Close waits for all of them.
func (m *Manager) goFunc(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// trackRaw records a connection that is not (yet) a multiplexed conn so
// Close can interrupt it. It returns false, having closed nc, when the
// Manager is closing.
func (m *Manager) trackRaw(nc net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		_ = nc.Close()
		return false
	}
	m.rawConn[nc] = struct{}{}
	return true
}

func (m *Manager) untrackRaw(nc net.Conn) {
	m.mu.Lock()
	delete(m.rawConn, nc)
	m.mu.Unlock()
}

func (m *Manager) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		nc, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return // Close closed the listener
			}
			// Back off like NetworkTransport so a persistent accept error
			// (e.g. out of file descriptors) does not spin.
			delay = min(max(2*delay, acceptDelayMin), acceptDelayMax)
			m.log.Error("transport: accept failed", "err", err, "retry_in", delay)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		host := remoteHost(nc.RemoteAddr())
		if !m.beginHandshake(host) {
			m.rejected.note(m.log, nc.RemoteAddr(), "", fmt.Errorf("%d connections from %s are in the handshake already", maxHandshakesPerHost, host))
			_ = nc.Close()
			continue
		}
		if !m.trackRaw(nc) {
			m.endHandshake(host)
			return
		}
		if !m.goFunc(func() { m.serveConn(nc, host) }) {
			m.endHandshake(host)
			m.untrackRaw(nc)
			_ = nc.Close()
			return
		}
	}
}

// maxHandshakesPerHost bounds the connections from one host that may be
// in the handshake at once. Each holds a goroutine and a descriptor for up
// to DialTimeout before it has proved anything; a peer node has a few at a
// time (its multiplexed connection, snapshots, probes). Counting per host
// rather than in all keeps one host that opens connections and sends
// nothing from shutting out the peers.
const maxHandshakesPerHost = 32

func remoteHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

// beginHandshake counts a connection from host into the handshake, or
// says that host has too many there already.
func (m *Manager) beginHandshake(host string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handshaking[host] >= maxHandshakesPerHost {
		return false
	}
	if m.handshaking == nil {
		m.handshaking = make(map[string]int)
	}
	m.handshaking[host]++
	return true
}

func (m *Manager) endHandshake(host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handshaking[host]--; m.handshaking[host] <= 0 {
		delete(m.handshaking, host)
	}
}

// serveConn runs the accepting side of the handshake and hands the
// connection to its kind's handler. Nothing but the handshake is read from
// a connection that has not authenticated.
func (m *Manager) serveConn(nc net.Conn, host string) {
	remote := nc.RemoteAddr().String()
	_ = nc.SetDeadline(time.Now().Add(m.cfg.DialTimeout))
	h, access, err := m.acceptHandshake(nc)
	m.endHandshake(host)
	if err != nil {
		m.rejected.note(m.log, nc.RemoteAddr(), h.nodeID, err)
		m.untrackRaw(nc)
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	switch h.kind {
	case kindSnapshot:
		if access != AccessFull {
			// acceptHandshake refuses these; a snapshot needs membership.
			m.untrackRaw(nc)
			_ = nc.Close()
			return
		}
		m.serveSnapshot(nc, h.nodeID)
		m.untrackRaw(nc)
		_ = nc.Close()
	default:
		c := newConn(m, nc, false, raft.ServerAddress(remote), h.nodeID)
		c.access.Store(int32(access))
		m.untrackRaw(nc)
		if err := m.startConn(c); err != nil {
			_ = nc.Close()
		}
	}
}

// startConn registers c and starts its reader and writer.
func (m *Manager) startConn(c *conn) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%w: node %s is shutting down", ErrClosed, m.cfg.NodeID)
	}
	m.conns[c] = struct{}{}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		c.readLoop()
	}()
	go func() {
		defer m.wg.Done()
		c.writeLoop()
	}()
	if c.outbound && m.cfg.ProbeAfter > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.watchLoop(m.cfg.ProbeAfter)
		}()
	}
	return nil
}

func (m *Manager) removeConn(c *conn) {
	m.mu.Lock()
	delete(m.conns, c)
	p := m.peers[c.addr]
	m.mu.Unlock()
	if c.outbound && p != nil {
		p.mu.Lock()
		if p.conn == c {
			p.conn = nil
		}
		p.mu.Unlock()
	}
}

// peer is the dial state of one peer address: its shared connection and
// reconnect backoff.
type peer struct {
	addr raft.ServerAddress // set at construction, read-only after

	// mu guards everything below.
	mu      sync.Mutex
	conn    *conn
	dialing chan struct{} // closed when the dial in progress finishes
	// failedDial is the dialing channel of the last dial if it failed, so
	// its waiters can report its error.
	failedDial chan struct{}
	backoff    time.Duration
	retryAt    time.Time
	lastErr    error
}

func (m *Manager) peer(addr raft.ServerAddress) (*peer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("%w: node %s is shut down", ErrClosed, m.cfg.NodeID)
	}
	p := m.peers[addr]
	if p == nil {
		p = &peer{addr: addr}
		m.peers[addr] = p
	}
	return p, nil
}

// getConn returns the shared connection to addr, dialing it if needed.
// Concurrent callers share one dial, which runs on a Manager goroutine so
// every caller can give up on its own ctx; after a failed dial, callers fail
// fast until the backoff has passed.
func (m *Manager) getConn(ctx context.Context, addr raft.ServerAddress) (*conn, error) {
	if addr == "" {
		return nil, fmt.Errorf("%w: empty peer address", ErrUnreachable)
	}
	p, err := m.peer(addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	for {
		if c := p.conn; c != nil && !c.isClosed() {
			p.mu.Unlock()
			return c, nil
		}
		if wait := time.Until(p.retryAt); wait > 0 {
			err := fmt.Errorf("%w: %s is in reconnect backoff for another %v after: %v",
				ErrUnreachable, addr, wait.Round(time.Millisecond), p.lastErr)
			p.mu.Unlock()
			return nil, err
		}
		ch := p.dialing
		if ch == nil {
			ch = make(chan struct{})
			p.dialing = ch
			if !m.goFunc(func() { m.dialPeer(p, ch) }) {
				p.dialing = nil
				close(ch)
				p.mu.Unlock()
				return nil, fmt.Errorf("%w: node %s is shut down", ErrClosed, m.cfg.NodeID)
			}
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.ctx.Done():
			return nil, fmt.Errorf("%w: node %s is shutting down", ErrClosed, m.cfg.NodeID)
		}
		p.mu.Lock()
		if p.failedDial == ch {
			// The dial this caller waited for failed: report its error.
			err := p.lastErr
			p.mu.Unlock()
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
	}
}

// dialPeer dials p once and records the outcome: the new connection, or the
// error and the next backoff.
func (m *Manager) dialPeer(p *peer, ch chan struct{}) {
	nc, peerID, err := m.dial(m.ctx, p.addr, kindMux)
	var c *conn
	if err == nil {
		c = newConn(m, nc, true, p.addr, peerID)
		if serr := m.startConn(c); serr != nil {
			_ = nc.Close()
			c, err = nil, serr
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing = nil
	close(ch)
	if err != nil {
		p.backoff = min(max(2*p.backoff, backoffMin), backoffMax)
		p.retryAt = time.Now().Add(p.backoff)
		p.lastErr = err
		p.failedDial = ch
		m.log.Warn("transport: dial failed", "peer", p.addr, "err", err, "backoff", p.backoff)
		return
	}
	p.backoff = 0
	p.retryAt = time.Time{}
	p.lastErr = nil
	p.failedDial = nil
	p.conn = c
}

// checkBackoff fails fast for a peer in reconnect backoff; used by
// InstallSnapshot, which dials its own connections.
func (m *Manager) checkBackoff(addr raft.ServerAddress) error {
	p, err := m.peer(addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if wait := time.Until(p.retryAt); wait > 0 {
		return fmt.Errorf("%w: %s is in reconnect backoff for another %v after: %v",
			ErrUnreachable, addr, wait.Round(time.Millisecond), p.lastErr)
	}
	return nil
}

// dial connects to addr and runs the dialing side of the handshake, all
// within DialTimeout.
func (m *Manager) dial(ctx context.Context, addr raft.ServerAddress, kind byte) (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DialTimeout)
	defer cancel()
	d := &net.Dialer{KeepAlive: tcpKeepAlive}
	var nc net.Conn
	var err error
	if m.cfg.ClientTLS != nil {
		td := &tls.Dialer{NetDialer: d, Config: m.cfg.ClientTLS}
		nc, err = td.DialContext(ctx, "tcp", string(addr))
	} else {
		nc, err = d.DialContext(ctx, "tcp", string(addr))
	}
	if err != nil {
		return nil, "", fmt.Errorf("dialing %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// Unblock the handshake if the Manager closes meanwhile.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	peerID, err := m.dialHandshake(nc, kind)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = nc.Close()
		return nil, "", fmt.Errorf("handshake with %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, peerID, nil
}
