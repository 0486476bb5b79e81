package jepsen

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// Network modes.
const (
	ModeNetns = "netns" // a network namespace per node, iptables drops
	ModeProxy = "proxy" // loopback, a userspace TCP proxy in front of every peer port
)

// errUnsupported: the network cannot inject this fault here.
var errUnsupported = errors.New("not supported by this network")

// NodeNet is where a node listens and how it is started.
type NodeNet struct {
	ClientAddr    string   // the websocket/admin port, reachable by the harness
	PeerBind      string   // --peer-addr
	PeerAdvertise string   // --advertise-peer-addr: what other nodes dial
	Wrap          []string // command prefix that puts the process in its network
}

// Grudge says, for each node, which nodes' traffic it drops (as Jepsen's
// partitioner does). A complete cut lists both directions.
type Grudge map[string][]string

// cut returns a grudge that separates every node of a from every node of b.
func cut(g Grudge, a, b []string) Grudge {
	if g == nil {
		g = Grudge{}
	}
	for _, x := range a {
		for _, y := range b {
			if x == y {
				continue
			}
			if !slices.Contains(g[x], y) {
				g[x] = append(g[x], y)
			}
			if !slices.Contains(g[y], x) {
				g[y] = append(g[y], x)
			}
		}
	}
	return g
}

// Network is the harness's control over the traffic between nodes. It
// never touches the traffic between the harness's clients and the nodes.
type Network interface {
	Mode() string
	// AddNode prepares the network of a node.
	AddNode(id string) (NodeNet, error)
	// Partition replaces the current partition with g.
	Partition(g Grudge) error
	// Heal removes every partition.
	Heal() error
	// Slow delays peer traffic by delay ± jitter and loses a fraction of
	// it (or, where it cannot lose packets, stalls it as a retransmission
	// would); errUnsupported when it cannot.
	Slow(delay, jitter time.Duration, loss float64) error
	// Fast undoes Slow.
	Fast() error
	// CanSlow reports whether Slow works here.
	CanSlow() bool
	// Close removes everything the network set up.
	Close() error
	// Describe says what the network is, for the report.
	Describe() string
}

// freePort asks the kernel for a port free on host right now.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// OpenNetwork sets up the network of mode auto, netns or proxy. Auto
// tries namespaces first and falls back to the proxy; the reason of the
// fallback is returned for the report.
func OpenNetwork(mode string) (Network, string, error) {
	switch mode {
	case ModeNetns:
		n, err := openNetns()
		if err != nil {
			return nil, "", err
		}
		return n, "", nil
	case ModeProxy:
		return newProxyNet(), "", nil
	case "", "auto":
		n, err := openNetns()
		if err == nil {
			return n, "", nil
		}
		return newProxyNet(), fmt.Sprintf("network namespaces unusable here (%v)", err), nil
	}
	return nil, "", fmt.Errorf("unknown network mode %q (want auto, netns or proxy)", mode)
}
