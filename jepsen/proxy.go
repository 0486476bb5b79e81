package jepsen

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// The proxy mode runs every node on 127.0.0.1 and puts a TCP proxy in
// front of each node's peer port: the node advertises the proxy, so every
// node-to-node connection passes through the proxy of the node it goes to.
// The proxy learns which node dialed from the first bytes of the
// connection, the peer transport's plaintext hello (magic "HRLD", version,
// kind, id length, id), so it can hold traffic per directed link. A held
// link stops forwarding, as a blackholed TCP stream does: nothing is lost,
// the peers time out, and what was in flight arrives after the heal, as
// retransmissions would.

var helloMagic = [4]byte{'H', 'R', 'L', 'D'}

type link struct{ src, dst string }

type proxyNet struct {
	mu      sync.Mutex // guards everything below
	nodes   map[string]*nodeProxy
	blocked map[link]bool
	delay   time.Duration
	jitter  time.Duration
	loss    float64
	// changed is closed and replaced whenever the rules change, waking
	// every held pump to look again.
	changed chan struct{}
	closed  bool
}

type nodeProxy struct {
	// id, target and ln are set at construction, read-only after.
	id     string
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  map[*proxyConn]struct{} // guarded by mu
}

// proxyConn is one proxied connection; closing either side closes both.
type proxyConn struct {
	src, dst string
	a, b     net.Conn
	once     sync.Once
}

func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		for _, nc := range []net.Conn{c.a, c.b} {
			if nc == nil {
				continue
			}
			if tc, ok := nc.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			_ = nc.Close()
		}
	})
}

func newProxyNet() *proxyNet {
	return &proxyNet{nodes: map[string]*nodeProxy{}, blocked: map[link]bool{}, changed: make(chan struct{})}
}

func (p *proxyNet) Mode() string { return ModeProxy }

func (p *proxyNet) Describe() string {
	return "proxy: nodes on 127.0.0.1, a userspace TCP proxy per node's peer port; partitions hold traffic per directed link"
}

// notify wakes the pumps; p.mu must be held.
func (p *proxyNet) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *proxyNet) AddNode(id string) (NodeNet, error) {
	const host = "127.0.0.1"
	var ports [2]int
	for i := range ports {
		port, err := freePort(host)
		if err != nil {
			return NodeNet{}, err
		}
		ports[i] = port
	}
	target := fmt.Sprintf("%s:%d", host, ports[1])
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return NodeNet{}, err
	}
	np := &nodeProxy{id: id, target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.mu.Lock()
	p.nodes[id] = np
	p.mu.Unlock()
	go p.accept(np)
	return NodeNet{ClientAddr: fmt.Sprintf("%s:%d", host, ports[0]), PeerBind: target, PeerAdvertise: ln.Addr().String()}, nil
}

// listen adds a proxy for a node at a given target, for tests.
func (p *proxyNet) listen(id, target string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	np := &nodeProxy{id: id, target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.mu.Lock()
	p.nodes[id] = np
	p.mu.Unlock()
	go p.accept(np)
	return ln.Addr().String(), nil
}

func (p *proxyNet) accept(np *nodeProxy) {
	for {
		c, err := np.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(np, c)
	}
}

// readHello reads the dialer's hello and returns its node id ("" when the
// connection does not start with one) and the bytes read, to pass on.
func readProxyHello(c net.Conn) (string, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	h := make([]byte, 7)
	if _, err := io.ReadFull(c, h); err != nil {
		return "", nil, err
	}
	if [4]byte(h[:4]) != helloMagic {
		return "", h, nil
	}
	id := make([]byte, h[6])
	if _, err := io.ReadFull(c, id); err != nil {
		return "", nil, err
	}
	return string(id), append(h, id...), nil
}

func (p *proxyNet) serve(np *nodeProxy, a net.Conn) {
	src, hello, err := readProxyHello(a)
	if err != nil {
		_ = a.Close()
		return
	}
	pc := &proxyConn{src: src, dst: np.id, a: a}
	np.mu.Lock()
	np.conns[pc] = struct{}{}
	np.mu.Unlock()
	defer func() {
		np.mu.Lock()
		delete(np.conns, pc)
		np.mu.Unlock()
		pc.close(false)
	}()
	// A connection across a partition is held before it reaches the
	// node, as a SYN into a blackhole would be; the dialer times out and
	// the held connection is dropped a little later.
	giveUp := time.NewTimer(10 * time.Second)
	defer giveUp.Stop()
	if !p.hold(giveUp.C, link{src, np.id}, link{np.id, src}) {
		return
	}
	b, err := net.DialTimeout("tcp", np.target, 2*time.Second)
	if err != nil {
		return
	}
	pc.b = b
	if _, err := b.Write(hello); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pump(pc, a, b, link{src, np.id}); done <- struct{}{} }()
	go func() { p.pump(pc, b, a, link{np.id, src}); done <- struct{}{} }()
	<-done
}

func (p *proxyNet) isBlocked(l link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blockedLocked(l)
}

func (p *proxyNet) blockedLocked(l link) bool {
	if l.src == "" || l.src == l.dst {
		return p.closed
	}
	return p.blocked[l] || p.closed
}

// hold waits until none of links is blocked; false when the network
// closed or stop fired first.
func (p *proxyNet) hold(stop <-chan time.Time, links ...link) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		blocked := false
		for _, l := range links {
			blocked = blocked || p.blockedLocked(l)
		}
		ch := p.changed
		p.mu.Unlock()
		if !blocked {
			return true
		}
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump copies from → to along link l, holding while l is blocked and
// delaying by the current latency.
func (p *proxyNet) pump(pc *proxyConn, from, to net.Conn, l link) {
	defer pc.close(false)
	q := make(chan chunk, 64)
	stop := make(chan struct{})
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := from.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{buf[:n], time.Now()}:
				case <-stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer close(stop)
	var last time.Time
	for c := range q {
		if !p.hold(nil, l) {
			return
		}
		p.mu.Lock()
		delay, jitter, loss := p.delay, p.jitter, p.loss
		p.mu.Unlock()
		if delay > 0 || loss > 0 {
			d := delay
			if jitter > 0 {
				d += time.Duration(rand.Int64N(int64(2*jitter))) - jitter
			}
			if loss > 0 && rand.Float64() < loss {
				d += 200 * time.Millisecond // one retransmission timeout
			}
			// Keep the stream's order: a chunk never overtakes the last.
			due := c.at.Add(d)
			if due.Before(last) {
				due = last
			}
			last = due
			time.Sleep(time.Until(due))
		}
		if _, err := to.Write(c.b); err != nil {
			return
		}
	}
}

func (p *proxyNet) Partition(g Grudge) error {
	p.mu.Lock()
	p.blocked = map[link]bool{}
	for dst, srcs := range g {
		for _, src := range srcs {
			p.blocked[link{src, dst}] = true
		}
	}
	p.notify()
	p.mu.Unlock()
	return nil
}

// Reset closes, with a TCP reset, every connection on a blocked link, as
// a middlebox that rejects them would.
func (p *proxyNet) Reset() {
	p.mu.Lock()
	nodes := make([]*nodeProxy, 0, len(p.nodes))
	for _, np := range p.nodes {
		nodes = append(nodes, np)
	}
	p.mu.Unlock()
	for _, np := range nodes {
		np.mu.Lock()
		var victims []*proxyConn
		for pc := range np.conns {
			if p.isBlocked(link{pc.src, pc.dst}) || p.isBlocked(link{pc.dst, pc.src}) {
				victims = append(victims, pc)
			}
		}
		np.mu.Unlock()
		for _, pc := range victims {
			pc.close(true)
		}
	}
}

func (p *proxyNet) Heal() error {
	p.mu.Lock()
	p.blocked = map[link]bool{}
	p.notify()
	p.mu.Unlock()
	return nil
}

func (p *proxyNet) Slow(delay, jitter time.Duration, loss float64) error {
	p.mu.Lock()
	p.delay, p.jitter, p.loss = delay, jitter, loss
	p.mu.Unlock()
	return nil
}

func (p *proxyNet) Fast() error { return p.Slow(0, 0, 0) }

func (p *proxyNet) CanSlow() bool { return true }

func (p *proxyNet) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.notify()
	nodes := p.nodes
	p.mu.Unlock()
	for _, np := range nodes {
		_ = np.ln.Close()
		np.mu.Lock()
		for pc := range np.conns {
			pc.close(true)
		}
		np.mu.Unlock()
	}
	return nil
}
