package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Names of everything the netns mode creates share a prefix, so that a
// later run can find and remove what a crashed run left behind.
const (
	nsPrefix   = "hj-"
	vethPrefix = "hjv"
	peerPrefix = "hjp"
	bridgeName = "hjbr0"
)

// subnets the netns mode may use, first free one wins.
var subnets = []string{"10.213.0", "10.214.0", "172.30.213"}

// netnsNet puts each node in its own network namespace, joined to a bridge
// in the harness's namespace by a veth pair. Partitions are iptables DROP
// rules on the receiving node; netem (when the kernel has it) slows links.
type netnsNet struct {
	// subnet and netem are set by openNetns, read-only after.
	subnet string
	netem  bool

	// mu guards hosts and next.
	mu    sync.Mutex
	hosts map[string]int // node id → last octet
	next  int
}

// nsRun runs a command and returns its error with its output.
func nsRun(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func nsOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// CleanupNetns removes every namespace, veth and bridge a harness run made,
// killing the processes still in those namespaces.
func CleanupNetns() {
	if _, err := exec.LookPath("ip"); err != nil {
		return
	}
	if out, err := nsOutput("ip", "netns", "list"); err == nil {
		for l := range strings.Lines(out) {
			name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
			if !strings.HasPrefix(name, nsPrefix) {
				continue
			}
			if pids, err := nsOutput("ip", "netns", "pids", name); err == nil {
				for p := range strings.FieldsSeq(pids) {
					if pid, err := strconv.Atoi(p); err == nil {
						killPid(pid)
					}
				}
			}
			_ = nsRun("ip", "netns", "del", name)
		}
	}
	if out, err := nsOutput("ip", "-o", "link", "show"); err == nil {
		for l := range strings.Lines(out) {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, vethPrefix) || name == bridgeName {
				_ = nsRun("ip", "link", "del", name)
			}
		}
	}
}

// openNetns cleans up after earlier runs, sets up the bridge and proves on
// two probe namespaces that connections work, that a DROP rule cuts them
// and that flushing heals them. Any failure tears down what it made.
func openNetns() (_ *netnsNet, err error) {
	if !netnsSupported {
		return nil, errUnsupported
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found", tool)
		}
	}
	CleanupNetns()
	n := &netnsNet{hosts: map[string]int{}, next: 10}
	routes, err := nsOutput("ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	for _, s := range subnets {
		if !strings.Contains(routes, s+".") {
			n.subnet = s
			break
		}
	}
	if n.subnet == "" {
		return nil, errors.New("no free subnet for the bridge")
	}
	defer func() {
		if err != nil {
			CleanupNetns()
		}
	}()
	for _, args := range [][]string{
		{"ip", "link", "add", bridgeName, "type", "bridge"},
		{"ip", "addr", "add", n.subnet + ".1/24", "dev", bridgeName},
		{"ip", "link", "set", bridgeName, "up"},
	} {
		if err := nsRun(args...); err != nil {
			return nil, err
		}
	}
	if err := n.probe(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *netnsNet) Mode() string { return ModeNetns }

func (n *netnsNet) Describe() string {
	s := fmt.Sprintf("netns: a namespace per node on bridge %s (%s.0/24), partitions by iptables DROP", bridgeName, n.subnet)
	if n.netem {
		return s + ", netem available"
	}
	return s + ", netem unavailable (no sch_netem in this kernel)"
}

// nsName is the namespace of a node.
func nsName(id string) string { return nsPrefix + id }

// addHost makes namespace name with address subnet.host on the bridge.
func (n *netnsNet) addHost(name string, host int) error {
	veth, peer := vethPrefix+strconv.Itoa(host), peerPrefix+strconv.Itoa(host)
	ip := fmt.Sprintf("%s.%d/24", n.subnet, host)
	for _, args := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", name},
		{"ip", "link", "set", veth, "master", bridgeName},
		{"ip", "link", "set", veth, "up"},
		{"ip", "-n", name, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", name, "addr", "add", ip, "dev", "eth0"},
		{"ip", "-n", name, "link", "set", "eth0", "up"},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	} {
		if err := nsRun(args...); err != nil {
			return err
		}
	}
	return nil
}

func (n *netnsNet) delHost(name string, host int) {
	_ = nsRun("ip", "netns", "del", name)
	_ = nsRun("ip", "link", "del", vethPrefix+strconv.Itoa(host))
}

// probe checks on two throwaway namespaces what the mode relies on.
func (n *netnsNet) probe() error {
	a, b := nsPrefix+"probe-a", nsPrefix+"probe-b"
	ha, hb := 250, 251
	defer n.delHost(a, ha)
	defer n.delHost(b, hb)
	if err := n.addHost(a, ha); err != nil {
		return err
	}
	if err := n.addHost(b, hb); err != nil {
		return err
	}
	addr := fmt.Sprintf("%s.%d:7999", n.subnet, ha)
	ln, err := listenIn(a, addr)
	if err != nil {
		return fmt.Errorf("listen in a namespace: %w", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	dial := func(from string) error {
		var c net.Conn
		var err error
		if from == "" {
			c, err = net.DialTimeout("tcp", addr, time.Second)
		} else {
			c, err = dialIn(from, addr, time.Second)
		}
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	if err := dial(""); err != nil {
		return fmt.Errorf("the harness cannot reach a namespace: %w", err)
	}
	if err := dial(b); err != nil {
		return fmt.Errorf("namespaces cannot reach each other: %w", err)
	}
	if err := nsRun("ip", "netns", "exec", a, "iptables", "-w", "-A", "INPUT", "-s", fmt.Sprintf("%s.%d", n.subnet, hb), "-j", "DROP"); err != nil {
		return err
	}
	if dial(b) == nil {
		return errors.New("an iptables DROP rule in a namespace did not cut its traffic")
	}
	if err := dial(""); err != nil {
		return fmt.Errorf("a DROP rule for one peer also cut the harness: %w", err)
	}
	if err := nsRun("ip", "netns", "exec", a, "iptables", "-w", "-F", "INPUT"); err != nil {
		return err
	}
	if err := dial(b); err != nil {
		return fmt.Errorf("flushing the rules did not heal: %w", err)
	}
	n.netem = nsRun("ip", "netns", "exec", a, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms") == nil
	return nil
}

func (n *netnsNet) AddNode(id string) (NodeNet, error) {
	n.mu.Lock()
	host := n.next
	n.next++
	n.hosts[id] = host
	n.mu.Unlock()
	if err := n.addHost(nsName(id), host); err != nil {
		return NodeNet{}, err
	}
	ip := fmt.Sprintf("%s.%d", n.subnet, host)
	return NodeNet{
		ClientAddr:    ip + ":7070",
		PeerBind:      ip + ":7170",
		PeerAdvertise: ip + ":7170",
		Wrap:          []string{"ip", "netns", "exec", nsName(id)},
	}, nil
}

func (n *netnsNet) ip(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("%s.%d", n.subnet, n.hosts[id])
}

func (n *netnsNet) ids() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []string
	for id := range n.hosts {
		ids = append(ids, id)
	}
	return ids
}

func (n *netnsNet) Partition(g Grudge) error {
	if err := n.Heal(); err != nil {
		return err
	}
	var errs []error
	for dst, srcs := range g {
		for _, src := range srcs {
			errs = append(errs, nsRun("ip", "netns", "exec", nsName(dst), "iptables", "-w", "-A", "INPUT", "-s", n.ip(src), "-j", "DROP"))
		}
	}
	return errors.Join(errs...)
}

func (n *netnsNet) Heal() error {
	var errs []error
	for _, id := range n.ids() {
		errs = append(errs, nsRun("ip", "netns", "exec", nsName(id), "iptables", "-w", "-F", "INPUT"))
	}
	return errors.Join(errs...)
}

func (n *netnsNet) Slow(delay, jitter time.Duration, loss float64) error {
	if !n.netem {
		return errUnsupported
	}
	var errs []error
	for _, id := range n.ids() {
		errs = append(errs, nsRun("ip", "netns", "exec", nsName(id), "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
			"delay", fmt.Sprintf("%dms", delay.Milliseconds()), fmt.Sprintf("%dms", jitter.Milliseconds()),
			"loss", fmt.Sprintf("%.2f%%", 100*loss)))
	}
	return errors.Join(errs...)
}

func (n *netnsNet) CanSlow() bool { return n.netem }

func (n *netnsNet) Fast() error {
	if !n.netem {
		return nil
	}
	for _, id := range n.ids() {
		_ = nsRun("ip", "netns", "exec", nsName(id), "tc", "qdisc", "del", "dev", "eth0", "root")
	}
	return nil
}

func (n *netnsNet) Close() error {
	CleanupNetns()
	return nil
}
