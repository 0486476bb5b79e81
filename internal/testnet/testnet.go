// Package testnet holds TCP helpers for tests that attack or observe a
// real port: a proxy that records what a dialer sent, a one-shot
// exchange of raw bytes, and a buffer for the logs of the nodes under
// test. It is for tests only.
package testnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Recorder is a TCP proxy to one target that records every byte its
// dialers sent, so a test can replay a real conversation.
type Recorder struct {
	ln net.Listener // set at construction, read-only after
	// mu guards buf and conns.
	mu    sync.Mutex
	buf   bytes.Buffer
	conns []net.Conn // closed at cleanup, so the copies end
}

// NewRecorder listens on loopback and forwards each connection to target
// until the test ends.
func NewRecorder(t testing.TB, target string) *Recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
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
			r.mu.Lock()
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.MultiWriter(u, r), c)
				_ = u.Close()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, u)
				_ = c.Close()
			}()
		}
	}()
	return r
}

// Addr is the address to dial instead of the target.
func (r *Recorder) Addr() string { return r.ln.Addr().String() }

func (r *Recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(b)
}

// Bytes returns a copy of what the dialers sent so far.
func (r *Recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

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
