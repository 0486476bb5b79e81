package multiraft

import (
	"context"
	"log/slog"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/transport"
)

// Peers is the node's peer port as the host uses it: raft transports per
// group, node-to-node calls and streams. Package transport's Manager is the
// one the host opens by default (TCP, authenticated peers, batched
// heartbeats); package peertest has an in-memory one whose links tests can
// cut and slow down.
//
// The host decides what a failed call means from its error, so an
// implementation reports failures with package transport's errors:
// transport.ErrNotSent (with the cause) when the request certainly did not
// reach the peer's handler, transport.ErrUnreachable when the peer cannot
// be reached or the link broke, transport.ErrTimeout when no reply came in
// time, transport.ErrNotMember when the peer refused a node that may only
// join, transport.ErrClosed after Close, and a *transport.RemoteError for a
// handler's error; the caller's ctx error when ctx ended first.
type Peers interface {
	// Addr is the address other nodes reach this node at.
	Addr() raft.ServerAddress
	// Group returns the raft transport of a group; a group has at most
	// one open at a time (until its Close).
	Group(id uint64) (GroupTransport, error)
	// Handle and HandleStream register the services other nodes call.
	Handle(service string, h transport.Handler)
	HandleStream(service string, h transport.StreamHandler)
	// Call runs service on the node at target and returns its reply.
	Call(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) ([]byte, error)
	// OpenStream asks service on the node at target to stream to this
	// node until the stream is closed or ctx ends.
	OpenStream(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) (EventStream, error)
	// Answers reports whether the node at target is heard from before
	// ctx ends.
	Answers(ctx context.Context, target raft.ServerAddress) bool
	// Reauthorize asks Authorize again about every connected peer (the
	// cluster removed a node).
	Reauthorize()
	// Close stops the port and everything it started.
	Close() error
}

// GroupTransport is a group's raft transport as the host needs it.
type GroupTransport interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
	// BeginLeaderCheck makes the group's heartbeats reach followers as
	// they are sent, until end is called, so that raft's VerifyLeader is
	// answered by followers now (see transport's heartbeat batching).
	BeginLeaderCheck() (end func())
}

// PeersConfig is what the host tells the peer port it opens.
type PeersConfig struct {
	NodeID string
	// Addr is Config.PeerAddr, AdvertiseAddr Config.AdvertisePeerAddr.
	Addr, AdvertiseAddr string
	// Authorize says what a peer node may do here (by the cluster's
	// membership); JoinServices are the services a node that may only
	// join can call.
	Authorize    func(nodeID string) (transport.PeerAccess, error)
	JoinServices []string
	Logger       *slog.Logger
}

// openTCPPeers opens the node's real peer port.
func openTCPPeers(cfg *Config, pc PeersConfig) (Peers, error) {
	m, err := transport.New(transport.Config{
		NodeID: pc.NodeID, ListenAddr: pc.Addr, AdvertiseAddr: pc.AdvertiseAddr,
		TLS: cfg.PeerTLS, ClientTLS: cfg.PeerClientTLS, Logger: pc.Logger,
		HeartbeatInterval: cfg.heartbeatInterval(),
		ClusterSecret:     cfg.ClusterSecret,
		Authorize:         pc.Authorize,
		JoinServices:      pc.JoinServices,
	})
	if err != nil {
		return nil, err
	}
	return tcpPeers{m}, nil
}

// tcpPeers is transport's Manager as Peers: Go has no covariant results,
// so the two methods that return transport's concrete types are wrapped.
type tcpPeers struct{ *transport.Manager }

func (p tcpPeers) Group(id uint64) (GroupTransport, error) {
	g, err := p.Manager.Group(id)
	if err != nil {
		return nil, err
	}
	return g, nil
}

func (p tcpPeers) OpenStream(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) (EventStream, error) {
	s, err := p.Manager.OpenStream(ctx, target, service, group, req)
	if err != nil {
		return nil, err
	}
	return s, nil
}
