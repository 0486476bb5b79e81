// Package testnet holds TCP helpers for tests that attack, observe or
// stall a real port: a proxy that records what a dialer sent and can
// freeze, a one-shot exchange of raw bytes, and a buffer for the logs of
// the nodes under test. It is for tests only.
package testnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy to one target, for tests that watch or stall a
// real connection. It records every byte its dialers send, so a test can
// replay a real conversation; and it can freeze, as a paused peer process
// would: connections stay open, and nothing moves until it thaws.
type Proxy struct {
	ln     net.Listener // set at construction, read-only after
	frozen atomic.Bool
	// mu guards buf and conns.
	mu    sync.Mutex
	buf   bytes.Buffer
	conns []net.Conn // closed at cleanup, so the copies end
}

// NewProxy listens on loopback and forwards each connection to target
// until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		p.Thaw()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				p.pipe(c, u, true)
			}()
			go func() {
				defer wg.Done()
				p.pipe(u, c, false)
			}()
		}
	}()
	return p
}

// pipe copies from one end to the other, holding what it read while the
// proxy is frozen, and records it if record. When either end fails it
// closes to, as the end of a direct connection would be seen.
func (p *Proxy) pipe(from, to net.Conn, record bool) {
	defer func() { _ = to.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			for p.frozen.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			if record {
				p.mu.Lock()
				p.buf.Write(buf[:n])
				p.mu.Unlock()
			}
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Bytes returns a copy of what the dialers sent so far.
func (p *Proxy) Bytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.buf.Bytes())
}

// Freeze stops moving bytes in both directions; what is read meanwhile is
// held until Thaw.
func (p *Proxy) Freeze() { p.frozen.Store(true) }

// Thaw moves bytes again.
func (p *Proxy) Thaw() { p.frozen.Store(false) }

// Exchange sends b on a fresh connection to addr and returns everything
// the other end sent until it closed. It fails the test if the other end
// keeps the connection open for longer than d.
func Exchange(t testing.TB, addr string, b []byte, d time.Duration) []byte {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Close() }()
	_, _ = nc.Write(b)
	_ = nc.SetReadDeadline(time.Now().Add(d))
	got, err := io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s kept the connection open for %v after %q...; read %q", addr, d, b[:min(len(b), 16)], got)
	}
	return got
}

// LogBuffer collects log output that many goroutines write at once.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
