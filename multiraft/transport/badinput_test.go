package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testnet"
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// rawHello is a dialer's hello with a zero nonce; against a node without
// a cluster secret it needs no proof, so frames may follow it at once.
func rawHello(kind byte, version byte, id string) []byte {
	b := append([]byte{}, handshakeMagic[:]...)
	b = append(b, version, kind, byte(len(id)))
	b = append(b, id...)
	return append(b, make([]byte, nonceLen)...)
}

func rawFrame(typ byte, group, id uint64, payload []byte) []byte {
	b, _ := finishFrame(append(newFrame(typ, group, id, len(payload)), payload...))
	return b
}

// expectDisconnect writes input on a fresh raw connection and expects the
// server to hang up within d, returning what it sent before that.
func expectDisconnect(t *testing.T, addr string, input []byte, halfClose bool, d time.Duration) []byte {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Close() }()
	if _, err := nc.Write(input); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(d))
	got, err := io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server kept the connection open for %v after %q...", d, input[:min(len(input), 16)])
	}
	return got
}

func TestBadInput(t *testing.T) {
	logs := &testnet.LogBuffer{}
	a := newTestManager(t, "a", func(c *Config) {
		c.RPCTimeout = 300 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	// Log every rejection here; TestRejectionsLogRateLimited covers the
	// once-a-minute summary.
	a.rejected.every.Store(int64(time.Nanosecond))
	b := newTestManager(t, "b")
	a.Handle("ping", func(context.Context, string, uint64, []byte) ([]byte, error) { return []byte("pong"), nil })
	addr := string(a.Addr())
	ok := rawHello(kindMux, protocolVersion, "raw")
	// The challenge (magic, version, status, length byte, "a", flags,
	// nonce) and the verdict (status, length byte).
	ack := func() int { return 7 + 1 + 1 + nonceLen + 2 }

	huge := binary.BigEndian.AppendUint32(bytes.Clone(ok), 0xfffffff0)
	short := binary.BigEndian.AppendUint32(bytes.Clone(ok), 3)
	truncated := append(bytes.Clone(ok), rawFrame(ftCall, 1, 1, []byte("\x04pingpayload"))[:12]...)
	unknownType := append(bytes.Clone(ok), rawFrame(200, 1, 1, nil)...)
	responseInbound := append(bytes.Clone(ok), rawFrame(ftCallResp, 1, 1, []byte{0})...)

	_ = mustGroup(t, a, 5)
	garbageSnapshot := append(rawHello(kindSnapshot, protocolVersion, "raw"), rawFrame(ftInstallSnapshot, 5, 0, []byte{1, 2, 3})...)

	cases := []struct {
		name      string
		input     []byte
		halfClose bool
		check     func(t *testing.T, got []byte)
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, nil},
		{"bad magic", append([]byte("XXXX"), ok[4:]...), false, nil},
		{"bad version", rawHello(kindMux, 99, "raw"), false, func(t *testing.T, got []byte) {
			if !bytes.Contains(got, []byte("unsupported protocol version 99")) {
				t.Errorf("no explanation for the version mismatch: %q", got)
			}
		}},
		{"bad kind", rawHello(9, protocolVersion, "raw"), false, nil},
		{"empty node id", rawHello(kindMux, protocolVersion, ""), false, nil},
		{"huge length prefix", huge, false, nil},
		{"length below header", short, false, nil},
		{"truncated frame then EOF", truncated, true, nil},
		{"unknown frame type", unknownType, false, nil},
		{"response on inbound connection", responseInbound, false, nil},
		{"garbage snapshot request", garbageSnapshot, false, func(t *testing.T, got []byte) {
			if !bytes.Contains(got, []byte("decoding InstallSnapshotRequest")) {
				t.Errorf("no error reply for an undecodable snapshot request: %q", got)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			got := expectDisconnect(t, addr, c.input, c.halfClose, 3*time.Second)
			// None of these needs a timeout to be detected.
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Errorf("disconnect took %v", d)
			}
			if c.check != nil {
				c.check(t, got)
			}
		})
	}

	// A frame that stalls halfway is cut off after the read timeout even
	// though the peer keeps the connection open.
	// So is one that stalls inside its length.
	stalledLength := append(bytes.Clone(ok), rawFrame(ftCall, 1, 1, []byte("\x04pingpayload"))[:2]...)
	for name, in := range map[string][]byte{"stalled frame": truncated, "stalled length": stalledLength} {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = nc.Close() }()
			_, _ = nc.Write(in)
			_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
			got, err := io.ReadAll(nc)
			if err != nil {
				t.Fatalf("%s not cut off: %v", name, err)
			}
			if len(got) != ack() {
				t.Fatalf("unexpected bytes before disconnect: %q", got)
			}
		})
	}

	// Undecodable raft payloads get an error reply and the connection stays.
	t.Run("garbage raft payload", func(t *testing.T) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nc.Close() }()
		in := append(bytes.Clone(ok), rawFrame(ftAppendEntries, 5, 77, []byte{0xff, 0xff})...)
		in = append(in, rawFrame(ftCall, 0, 78, appendServiceReq(nil, "ping", nil))...)
		_, _ = nc.Write(in)
		_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, ack())
		if _, err := io.ReadFull(nc, buf); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct {
			id  uint64
			err bool
		}{{77, true}, {78, false}} {
			var hdr [4]byte
			if _, err := io.ReadFull(nc, hdr[:]); err != nil {
				t.Fatalf("reading reply %d: %v", want.id, err)
			}
			rest := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(nc, rest); err != nil {
				t.Fatal(err)
			}
			id := binary.BigEndian.Uint64(rest[9:17])
			_, perr := parseStatus(rest[17:])
			if id != want.id || (perr != nil) != want.err {
				t.Fatalf("reply id %d err %v, want id %d err %v", id, perr, want.id, want.err)
			}
		}
	})

	// Rejections are logged as errors.
	for _, want := range []string{"bad handshake magic", "unsupported protocol version 99", "exceeds the", "shorter than a frame header", "unexpected EOF", "i/o timeout"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// The manager still serves proper peers.
	got, err := b.Call(context.Background(), a.Addr(), "ping", 0, nil)
	if err != nil || string(got) != "pong" {
		t.Fatalf("after bad input: %q %v", got, err)
	}
}

// One host that opens connections and sends nothing holds at most
// maxHandshakesPerHost of them in the handshake; more are closed at once,
// and another host is still served.
func TestHandshakesBoundedPerHost(t *testing.T) {
	a := newTestManager(t, "a", func(c *Config) { c.DialTimeout = 10 * time.Second })
	a.rejected.every.Store(int64(time.Hour))
	addr := string(a.Addr())
	dialFrom := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		return nc
	}
	for range maxHandshakesPerHost {
		dialFrom("127.0.0.1")
	}
	// The accept loop counts connections in order; wait until it has
	// counted all of them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		n := a.handshaking["127.0.0.1"]
		a.mu.Unlock()
		if n == maxHandshakesPerHost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections in the handshake, want %d", n, maxHandshakesPerHost)
		}
		time.Sleep(10 * time.Millisecond)
	}
	one := dialFrom("127.0.0.1")
	_ = one.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadAll(one); err != nil {
		t.Fatalf("connection %d from one host still open: %v", maxHandshakesPerHost+1, err)
	}
	other := dialFrom("127.0.0.2")
	if _, err := other.Write(rawHello(kindMux, protocolVersion, "raw")); err != nil {
		t.Fatal(err)
	}
	_ = other.SetReadDeadline(time.Now().Add(3 * time.Second))
	challenge := make([]byte, 7+1+1+nonceLen+2)
	if _, err := io.ReadFull(other, challenge); err != nil {
		t.Fatalf("another host is not served: %v", err)
	}
}
