package jepsen

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer stands for a node's peer port: it answers each line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Swallow the hello, as the transport does, then echo.
				h := make([]byte, 7)
				if _, err := io.ReadFull(c, h); err != nil {
					return
				}
				if _, err := io.ReadFull(c, make([]byte, h[6])); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func hello(id string) []byte {
	return append([]byte{'H', 'R', 'L', 'D', 1, 1, byte(len(id))}, id...)
}

// proxiedEcho is a proxy network with node n2 an echo server; addr is
// n2's address through the proxy.
func proxiedEcho(t *testing.T) (p *proxyNet, addr string) {
	t.Helper()
	p = newProxyNet()
	t.Cleanup(func() { _ = p.Close() })
	addr, err := p.listen("n2", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	return p, addr
}

// dialAs connects to a proxy as node id.
func dialAs(t *testing.T, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(hello(id)); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reports whether it came back within d.
func roundTrip(c net.Conn, r *bufio.Reader, line string, d time.Duration) bool {
	_ = c.SetDeadline(time.Now().Add(d))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return false
	}
	got, err := r.ReadString('\n')
	return err == nil && got == line+"\n"
}

func TestProxyPartitionHoldsAndHeals(t *testing.T) {
	p, addr := proxiedEcho(t)
	c1, r1 := dialAs(t, addr, "n1")
	c3, r3 := dialAs(t, addr, "n3")
	if !roundTrip(c1, r1, "one", time.Second) || !roundTrip(c3, r3, "three", time.Second) {
		t.Fatal("no traffic through a healthy proxy")
	}
	// n2 drops n1: n1's established connection stalls, n3's does not.
	if err := p.Partition(Grudge{"n2": {"n1"}}); err != nil {
		t.Fatal(err)
	}
	if roundTrip(c1, r1, "held", 200*time.Millisecond) {
		t.Fatal("traffic crossed a partition")
	}
	if !roundTrip(c3, r3, "three again", time.Second) {
		t.Fatal("a partition of n1 also cut n3")
	}
	// A new connection from n1 is held before it reaches the node.
	c1b, r1b := dialAs(t, addr, "n1")
	if roundTrip(c1b, r1b, "new", 200*time.Millisecond) {
		t.Fatal("a new connection crossed a partition")
	}
	// After the heal what was held arrives, in order, as TCP would
	// deliver it.
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	_ = c1.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r1.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after the heal: %q, %v", got, err)
	}
	if !roundTrip(c1, r1, "healed", time.Second) {
		t.Fatal("no traffic after the heal")
	}
	_ = c1b.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r1b.ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("held connection after the heal: %q, %v", got, err)
	}
}

func TestProxyOneWayPartitionStallsReplies(t *testing.T) {
	p, addr := proxiedEcho(t)
	c1, r1 := dialAs(t, addr, "n1")
	if !roundTrip(c1, r1, "x", time.Second) {
		t.Fatal("no traffic")
	}
	// n1 drops n2: requests reach n2, its replies do not come back.
	_ = p.Partition(Grudge{"n1": {"n2"}})
	if roundTrip(c1, r1, "y", 200*time.Millisecond) {
		t.Fatal("a reply crossed a one-way partition")
	}
	_ = p.Heal()
}

func TestProxyResetAndDelay(t *testing.T) {
	p, addr := proxiedEcho(t)
	c1, r1 := dialAs(t, addr, "n1")
	if !roundTrip(c1, r1, "x", time.Second) {
		t.Fatal("no traffic")
	}
	if err := p.Slow(100*time.Millisecond, 0, 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !roundTrip(c1, r1, "slow", 2*time.Second) {
		t.Fatal("no traffic while slow")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("round trip took %v with 100ms each way", d)
	}
	_ = p.Fast()
	_ = p.Partition(Grudge{"n2": {"n1"}})
	p.Reset()
	_ = c1.SetDeadline(time.Now().Add(time.Second))
	if _, err := r1.ReadString('\n'); err == nil {
		t.Fatal("a reset connection still reads")
	}
}

func TestCutIsSymmetric(t *testing.T) {
	g := cut(nil, []string{"n1"}, []string{"n2", "n3"})
	if len(g["n1"]) != 2 || len(g["n2"]) != 1 || len(g["n3"]) != 1 || g["n2"][0] != "n1" {
		t.Fatalf("cut: %v", g)
	}
}
