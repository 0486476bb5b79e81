package transport

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// acceptHandshake runs the acceptor's side of the handshake on nc and
// returns the authenticated hello and what the peer may do. The returned
// hello carries the claimed node id even on failure, for the log.
func (m *Manager) acceptHandshake(nc net.Conn) (hello, PeerAccess, error) {
	h, version, err := readHello(nc)
	if err != nil {
		if version != 0 {
			// The peer speaks our framing well enough to read the reason.
			_ = writeRefusal(nc, err)
		}
		return h, 0, err
	}
	if cert := peerCertificate(nc); cert != nil && !certNames(cert, h.nodeID) {
		err := fmt.Errorf("transport: the client certificate (%s) does not name node %q", certIdentities(cert), h.nodeID)
		_ = writeRefusal(nc, err)
		return h, 0, err
	}
	binding, err := channelBinding(nc)
	if err != nil {
		_ = writeRefusal(nc, err)
		return h, 0, err
	}
	ch := challenge{nodeID: m.cfg.NodeID}
	if ch.nonce, err = newNonce(); err != nil {
		return h, 0, err
	}
	secret := m.cfg.ClusterSecret
	if len(secret) > 0 {
		ch.flags |= flagSecret
		ch.mac = proof(secret, labelAcceptor, h.kind, h.nodeID, m.cfg.NodeID, h.nonce, ch.nonce, binding)
	}
	if err := writeChallenge(nc, ch); err != nil {
		return h, 0, fmt.Errorf("transport: handshake reply: %w", err)
	}
	if len(secret) > 0 {
		var got [macLen]byte
		if _, err := io.ReadFull(nc, got[:]); err != nil {
			return h, 0, fmt.Errorf("transport: reading handshake proof: %w", noEOF(err))
		}
		want := proof(secret, labelDialer, h.kind, h.nodeID, m.cfg.NodeID, h.nonce, ch.nonce, binding)
		if !hmac.Equal(got[:], want[:]) {
			_ = writeVerdict(nc, errAuthFailed)
			return h, 0, errors.New("transport: the peer did not prove the cluster secret")
		}
	}
	access := AccessFull
	if m.cfg.Authorize != nil {
		if access, err = m.cfg.Authorize(h.nodeID); err != nil {
			_ = writeVerdict(nc, err)
			return h, 0, err
		}
	}
	if h.kind == kindSnapshot && access != AccessFull {
		err := fmt.Errorf("transport: node %s is not a member of the cluster and may not send snapshots", h.nodeID)
		_ = writeVerdict(nc, err)
		return h, 0, err
	}
	if err := writeVerdict(nc, nil); err != nil {
		return h, 0, fmt.Errorf("transport: handshake verdict: %w", err)
	}
	return h, access, nil
}

// dialHandshake runs the dialer's side of the handshake on nc and returns
// the acceptor's authenticated node id.
func (m *Manager) dialHandshake(nc net.Conn, kind byte) (string, error) {
	h := hello{kind: kind, nodeID: m.cfg.NodeID}
	var err error
	if h.nonce, err = newNonce(); err != nil {
		return "", err
	}
	if err := writeHello(nc, h); err != nil {
		return "", err
	}
	ch, err := readChallenge(nc)
	if err != nil {
		return "", err
	}
	if cert := peerCertificate(nc); cert != nil && !certNames(cert, ch.nodeID) {
		return "", fmt.Errorf("transport: the server certificate (%s) does not name node %q", certIdentities(cert), ch.nodeID)
	}
	secret := m.cfg.ClusterSecret
	switch {
	case len(secret) == 0 && ch.flags&flagSecret != 0:
		return "", fmt.Errorf("transport: node %s requires a cluster secret and this node has none (set --cluster-secret or --cluster-secret-file)", ch.nodeID)
	case len(secret) > 0 && ch.flags&flagSecret == 0:
		// The acceptor cannot prove it is one of ours.
		return "", fmt.Errorf("transport: node %s does not use a cluster secret and this node does; refusing to talk to it", ch.nodeID)
	}
	if len(secret) > 0 {
		binding, err := channelBinding(nc)
		if err != nil {
			return "", err
		}
		want := proof(secret, labelAcceptor, kind, m.cfg.NodeID, ch.nodeID, h.nonce, ch.nonce, binding)
		if !hmac.Equal(ch.mac[:], want[:]) {
			return "", fmt.Errorf("transport: node %s did not prove the cluster secret (the secrets differ)", ch.nodeID)
		}
		p := proof(secret, labelDialer, kind, m.cfg.NodeID, ch.nodeID, h.nonce, ch.nonce, binding)
		if _, err := nc.Write(p[:]); err != nil {
			return "", err
		}
	}
	if err := readVerdict(nc); err != nil {
		return "", err
	}
	return ch.nodeID, nil
}

// allowed decides a request on a connection whose peer had only AccessJoin
// when it connected: the peer may have become a member since.
func (m *Manager) allowed(c *conn, typ byte, service string) error {
	if PeerAccess(c.access.Load()) == AccessFull {
		return nil
	}
	if m.cfg.Authorize != nil {
		access, err := m.cfg.Authorize(c.peerID)
		if err != nil {
			return err
		}
		if access == AccessFull {
			c.access.Store(int32(AccessFull))
			return nil
		}
	}
	if typ == ftCall && slices.Contains(m.cfg.JoinServices, service) {
		return nil
	}
	return fmt.Errorf("%w: node %s is not a member of the cluster on node %s (yet); it may only join", ErrNotMember, c.peerID, m.cfg.NodeID)
}

// rejectLog logs refused connections once per remote host per minute with
// a count, so a scan or a misconfigured peer cannot flood the log.
type rejectLog struct {
	every atomic.Int64 // nanoseconds; zero means rejectLogEvery

	mu    sync.Mutex
	hosts map[string]*rejectEntry // guarded by mu
}

type rejectEntry struct {
	since   time.Time
	dropped int
}

const (
	rejectLogEvery    = time.Minute
	rejectLogMaxHosts = 4096
)

func (r *rejectLog) note(log *slog.Logger, remote net.Addr, claimed string, err error) {
	host := remoteHost(remote)
	now := time.Now()
	every := time.Duration(r.every.Load())
	if every == 0 {
		every = rejectLogEvery
	}
	r.mu.Lock()
	if r.hosts == nil || len(r.hosts) >= rejectLogMaxHosts {
		r.hosts = make(map[string]*rejectEntry)
	}
	e := r.hosts[host]
	if e != nil && now.Sub(e.since) < every {
		e.dropped++
		r.mu.Unlock()
		return
	}
	dropped := 0
	if e != nil {
		dropped = e.dropped
	}
	r.hosts[host] = &rejectEntry{since: now}
	r.mu.Unlock()
	log.Error("transport: rejecting connection", "remote", remote.String(), "claimed_node", claimed, "err", err,
		"rejected_since_last_log", dropped)
}

// Reauthorize asks Config.Authorize again about the peer of every inbound
// connection and closes those it now refuses, e.g. after the peer's node
// was removed from the cluster. Call it when membership changes.
func (m *Manager) Reauthorize() {
	if m.cfg.Authorize == nil {
		return
	}
	m.mu.RLock()
	var inbound []*conn
	for c := range m.conns {
		if !c.outbound {
			inbound = append(inbound, c)
		}
	}
	m.mu.RUnlock()
	for _, c := range inbound {
		if _, err := m.cfg.Authorize(c.peerID); err != nil {
			m.log.Warn("transport: closing the connection of a peer no longer allowed", "conn", c.String(), "err", err)
			c.close(err)
		}
	}
}
