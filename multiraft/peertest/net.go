// Package peertest is an in-memory network of multiraft peer ports, for
// tests: hosts in one process reach each other through a Net instead of
// TCP, and a test can cut links (one way or both), heal them and slow
// them down.
//
// A cut link holds what is sent over it, as a network that drops packets
// or a paused process holds bytes in a socket: the sender hears nothing,
// and what is still wanted when the link heals is delivered then. Every
// wait for a link is bounded by the sender's context and by the Net's RPC
// timeout, after which the sender sees transport.ErrTimeout. A port that is
// not open (its node is stopped) refuses at once, as a closed TCP port
// does. Errors are package transport's, as multiraft.Peers asks.
//
// Unlike transport.Manager it has no connections, handshakes or heartbeat
// batching: BeginLeaderCheck does nothing, since every heartbeat is sent
// when raft sends it. Authorization is asked on every request.
package peertest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/transport"
)

// DefaultRPCTimeout bounds a request over a cut link. It is what the TCP
// transport's liveness probe takes to give up on a silent peer (twice its
// ProbeAfter), not its longer RPC timeout.
const DefaultRPCTimeout = 2 * time.Second

// Net is one in-memory network. Its zero value is not usable: call New.
type Net struct {
	rpcTimeout time.Duration

	// mu guards every field below.
	mu       sync.Mutex
	ports    map[raft.ServerAddress]*Port
	cut      map[link]bool
	delay    map[link]time.Duration
	isolated map[string]bool
	// changed is closed and replaced whenever links change, waking the
	// messages held on cut links.
	changed chan struct{}
	closed  bool
}

// link is one direction between two nodes, by node id.
type link struct{ from, to string }

// New returns an empty network whose requests over cut links give up
// after rpcTimeout (DefaultRPCTimeout when zero).
func New(rpcTimeout time.Duration) *Net {
	if rpcTimeout <= 0 {
		rpcTimeout = DefaultRPCTimeout
	}
	return &Net{
		rpcTimeout: rpcTimeout, ports: map[raft.ServerAddress]*Port{},
		cut: map[link]bool{}, delay: map[link]time.Duration{}, isolated: map[string]bool{},
		changed: make(chan struct{}),
	}
}

// Addr is the address a node with this id has on a Net when its
// configuration advertises none.
func Addr(nodeID string) string { return "mem:" + nodeID }

// Open is a multiraft.Config.OpenPeers: it opens a node's port at
// pc.AdvertiseAddr, or at Addr(pc.NodeID) when that is empty (so a
// restarted node keeps its address).
func (n *Net) Open(pc multiraft.PeersConfig) (multiraft.Peers, error) {
	addr := raft.ServerAddress(pc.AdvertiseAddr)
	if addr == "" {
		addr = raft.ServerAddress(Addr(pc.NodeID))
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Port{
		net: n, id: pc.NodeID, addr: addr, authorize: pc.Authorize, join: pc.JoinServices,
		ctx: ctx, cancel: cancel,
		handlers: map[string]transport.Handler{}, streams: map[string]transport.StreamHandler{},
		groups: map[uint64]*group{},
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		cancel()
		return nil, fmt.Errorf("peertest: %w: the network is closed", transport.ErrClosed)
	case n.ports[addr] != nil:
		cancel()
		return nil, fmt.Errorf("peertest: address %s is in use", addr)
	}
	n.ports[addr] = p
	return p, nil
}

// Close closes every port still open and waits for what they started.
func (n *Net) Close() {
	n.mu.Lock()
	n.closed = true
	ports := make([]*Port, 0, len(n.ports))
	for _, p := range n.ports {
		ports = append(ports, p)
	}
	n.mu.Unlock()
	for _, p := range ports {
		_ = p.Close()
	}
}

// Cut holds everything sent from node from to node to until Heal.
func (n *Net) Cut(from, to string) { n.setLinks(func() { n.cut[link{from, to}] = true }) }

// Partition cuts the links between a and b both ways.
func (n *Net) Partition(a, b string) {
	n.setLinks(func() { n.cut[link{a, b}], n.cut[link{b, a}] = true, true })
}

// Isolate cuts every link to and from id, also to nodes that open later.
func (n *Net) Isolate(id string) { n.setLinks(func() { n.isolated[id] = true }) }

// Heal lets messages from node from to node to through again (those held
// go on), and ends an isolation of either.
func (n *Net) Heal(from, to string) {
	n.setLinks(func() {
		delete(n.cut, link{from, to})
		delete(n.isolated, from)
		delete(n.isolated, to)
	})
}

// HealAll ends every cut and isolation.
func (n *Net) HealAll() {
	n.setLinks(func() { clear(n.cut); clear(n.isolated) })
}

// Delay makes every message from node from to node to take d longer
// (zero: no delay). Messages on one link keep their order.
func (n *Net) Delay(from, to string, d time.Duration) {
	n.setLinks(func() {
		if d <= 0 {
			delete(n.delay, link{from, to})
		} else {
			n.delay[link{from, to}] = d
		}
	})
}

func (n *Net) setLinks(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f()
	close(n.changed)
	n.changed = make(chan struct{})
}

// pass waits until a message may go from node from to node to: while the
// link is cut, then its delay. It fails only when ctx ends first.
func (n *Net) pass(ctx context.Context, from, to string) error {
	for {
		n.mu.Lock()
		l := link{from, to}
		if !n.cut[l] && !n.isolated[from] && !n.isolated[to] {
			d := n.delay[l]
			n.mu.Unlock()
			if d <= 0 {
				return ctx.Err()
			}
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		changed := n.changed
		n.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (n *Net) port(addr raft.ServerAddress) *Port {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ports[addr]
}

func (n *Net) remove(p *Port) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ports[p.addr] == p {
		delete(n.ports, p.addr)
	}
}
