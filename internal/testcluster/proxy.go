package testcluster

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// PeerProxy is a TCP proxy in front of one node's peer port; the node
// advertises it, so every connection another node dials to it passes
// through. It reads the dialer's node id from the peer transport's
// plaintext hello (magic "HRLD", version, kind, id length, id), so it can
// cut the links from chosen nodes only, as a firewall rule on the node
// would: their connections are reset and new ones refused until Unblock.
type PeerProxy struct {
	ln     net.Listener // ln and target are set at construction, read-only after
	target string

	mu      sync.Mutex
	blocked map[string]bool          // guarded by mu
	corrupt *corruption              // armed by CorruptOnce; guarded by mu
	changed int                      // bytes changed; guarded by mu
	conns   map[net.Conn]proxiedConn // accepted connections, by their client side; guarded by mu
	closed  bool                     // guarded by mu
	wg      sync.WaitGroup
}

type proxiedConn struct {
	from   string
	server net.Conn
}

// NewPeerProxy listens on a free loopback port and forwards to target. It
// stops when Close is called.
func NewPeerProxy(target string) (*PeerProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &PeerProxy{ln: ln, target: target, blocked: map[string]bool{}, conns: map[net.Conn]proxiedConn{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address nodes reach the proxy at.
func (p *PeerProxy) Addr() string { return p.ln.Addr().String() }

// Block cuts every link from the given nodes to the proxied node: their
// connections are reset now, and new ones are reset after their hello.
func (p *PeerProxy) Block(from ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range from {
		p.blocked[id] = true
	}
	for c, pc := range p.conns {
		if p.blocked[pc.from] {
			resetConn(c)
			resetConn(pc.server)
		}
	}
}

// Unblock lets every node through again.
func (p *PeerProxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.blocked)
}

// Close stops the proxy and closes every connection through it, and
// waits for its goroutines.
func (p *PeerProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c, pc := range p.conns {
		_ = c.Close()
		if pc.server != nil {
			_ = pc.server.Close()
		}
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func resetConn(c net.Conn) {
	if c == nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *PeerProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[c] = proxiedConn{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards one connection until either side closes it.
func (p *PeerProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		pc := p.conns[c]
		delete(p.conns, c)
		p.mu.Unlock()
		_ = c.Close()
		if pc.server != nil {
			_ = pc.server.Close()
		}
	}()
	from, head, err := readHello(c)
	if err != nil {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.closed || p.blocked[from] {
		p.mu.Unlock()
		resetConn(c)
		_ = s.Close()
		return
	}
	p.conns[c] = proxiedConn{from: from, server: s}
	p.mu.Unlock()
	if _, err := s.Write(head); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(c, s)
		_ = c.Close()
	}()
	p.forward(s, c)
	_ = s.Close()
	<-done
}

// corruption is one armed CorruptOnce.
type corruption struct {
	pattern []byte
	skip    int
}

// CorruptOnce has the proxy change one byte of what it forwards to the
// node, once: the byte skip bytes past the end of the next occurrence of
// pattern. It models a flip on the way that the network's checksums did
// not catch (they are weak, and a proxy recomputes them).
func (p *PeerProxy) CorruptOnce(pattern []byte, skip int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.corrupt = &corruption{pattern: pattern, skip: skip}
}

// Corrupted returns how many bytes CorruptOnce changed so far.
func (p *PeerProxy) Corrupted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// forward copies src to dst, changing a byte where CorruptOnce says.
func (p *PeerProxy) forward(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	var tail []byte // the end of what was forwarded, to find a pattern across reads
	togo := -1      // bytes left before the one to change; -1: none found
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		if togo < 0 && n > 0 {
			togo = p.find(tail, chunk)
		}
		if togo >= 0 && togo < n {
			chunk[togo] ^= 0x5a
			togo = -1
		} else if togo >= 0 {
			togo -= n
		}
		if n > 0 {
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
			tail = append(tail, chunk[max(0, n-64):]...)
			tail = tail[max(0, len(tail)-64):]
		}
		if err != nil {
			return
		}
	}
}

// find returns, if a CorruptOnce is armed and its pattern ends in chunk,
// the offset in chunk of the byte to change (it may lie past chunk's end),
// and disarms it; else -1.
func (p *PeerProxy) find(tail, chunk []byte) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.corrupt == nil {
		return -1
	}
	hay := append(append([]byte(nil), tail...), chunk...)
	i := bytes.Index(hay, p.corrupt.pattern)
	if i < 0 || i+len(p.corrupt.pattern) <= len(tail) {
		return -1
	}
	at := i + len(p.corrupt.pattern) + p.corrupt.skip - len(tail)
	p.corrupt = nil
	p.changed++
	return at
}

// readHello reads the start of the peer transport's hello and returns the
// dialer's node id and the bytes read, to pass on.
func readHello(c net.Conn) (string, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	head := make([]byte, 7)
	if _, err := io.ReadFull(c, head); err != nil {
		return "", nil, err
	}
	if string(head[:4]) != "HRLD" {
		return "", nil, errors.New("not a peer transport hello")
	}
	id := make([]byte, int(head[6]))
	if _, err := io.ReadFull(c, id); err != nil {
		return "", nil, err
	}
	return string(id), append(head, id...), nil
}
