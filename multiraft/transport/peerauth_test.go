package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testnet"
)

var (
	testSecret  = []byte("0123456789abcdef-test-secret")
	otherSecret = []byte("fedcba9876543210-other-secret")
)

func withSecret(s []byte) func(*Config) { return func(c *Config) { c.ClusterSecret = s } }

func echoHandler(_ context.Context, from string, _ uint64, req []byte) ([]byte, error) {
	return append([]byte(from+":"), req...), nil
}

func TestClusterSecret(t *testing.T) {
	ctx := context.Background()
	a := newTestManager(t, "a", withSecret(testSecret))
	b := newTestManager(t, "b", withSecret(testSecret))
	a.Handle("echo", echoHandler)
	b.Handle("echo", echoHandler)
	if got, err := b.Call(ctx, a.Addr(), "echo", 1, []byte("x")); err != nil || string(got) != "b:x" {
		t.Fatalf("b->a with the same secret: %q %v", got, err)
	}
	if got, err := a.Call(ctx, b.Addr(), "echo", 1, []byte("y")); err != nil || string(got) != "a:y" {
		t.Fatalf("a->b with the same secret: %q %v", got, err)
	}
	// Snapshot connections authenticate too.
	ga, gb := mustGroup(t, a, 1), mustGroup(t, b, 1)
	go func() {
		rpc := <-ga.Consumer()
		buf := make([]byte, 3)
		_, _ = io.ReadFull(rpc.Reader, buf)
		rpc.Respond(&raft.InstallSnapshotResponse{Success: string(buf) == "abc"}, nil)
	}()
	var sresp raft.InstallSnapshotResponse
	if err := gb.InstallSnapshot("a", a.Addr(), &raft.InstallSnapshotRequest{Term: 1, Size: 3}, &sresp, stringsReader("abc")); err != nil || !sresp.Success {
		t.Fatalf("snapshot with the secret: %+v %v", sresp, err)
	}

	for _, c := range []struct {
		name    string
		secret  []byte
		wantErr string
	}{
		{"wrong secret", otherSecret, "did not prove the cluster secret"},
		{"no secret", nil, "requires a cluster secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestManager(t, "intruder-"+strings.ReplaceAll(c.name, " ", "-"), withSecret(c.secret))
			_, err := m.Call(ctx, a.Addr(), "echo", 1, nil)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("call with %s: %v", c.name, err)
			}
		})
	}

	// A node with a secret refuses to dial one without: the acceptor could
	// be anyone.
	open := newTestManager(t, "open")
	open.Handle("echo", echoHandler)
	if _, err := a.Call(ctx, open.Addr(), "echo", 1, nil); err == nil || !strings.Contains(err.Error(), "does not use a cluster secret") {
		t.Fatalf("a node with a secret dialing one without: %v", err)
	}
	// And a node whose acceptor proves a different secret is refused by
	// the dialer before it proves anything itself.
	wrong := newTestManager(t, "wrong", withSecret(otherSecret))
	wrong.Handle("echo", echoHandler)
	if _, err := a.Call(ctx, wrong.Addr(), "echo", 1, nil); err == nil || !strings.Contains(err.Error(), "did not prove the cluster secret") {
		t.Fatalf("dialing a node with another secret: %v", err)
	}
	if got, err := b.Call(ctx, a.Addr(), "echo", 1, []byte("z")); err != nil || string(got) != "b:z" {
		t.Fatalf("legitimate peer after the refusals: %q %v", got, err)
	}
}

func TestClusterSecretTooShort(t *testing.T) {
	_, err := New(Config{NodeID: "a", ListenAddr: "127.0.0.1:0", ClusterSecret: []byte("short")})
	if err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("short secret: %v", err)
	}
}

// TestReplayedHandshakeRefused replays, byte for byte, what a legitimate
// peer sent: the acceptor's fresh nonce makes the recorded proof useless.
func TestReplayedHandshakeRefused(t *testing.T) {
	logs := &testnet.LogBuffer{}
	a := newTestManager(t, "a", withSecret(testSecret), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	b := newTestManager(t, "b", withSecret(testSecret))
	var calls atomic.Int32
	a.Handle("echo", func(ctx context.Context, from string, g uint64, req []byte) ([]byte, error) {
		calls.Add(1)
		return echoHandler(ctx, from, g, req)
	})
	rec := testnet.NewProxy(t, string(a.Addr()))
	if _, err := b.Call(context.Background(), raft.ServerAddress(rec.Addr()), "echo", 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	recorded := rec.Bytes()
	if calls.Load() != 1 || len(recorded) == 0 {
		t.Fatalf("recording failed: %d calls, %d bytes", calls.Load(), len(recorded))
	}
	got := testnet.Exchange(t, string(a.Addr()), recorded, 3*time.Second)
	if !bytes.Contains(got, []byte("authentication failed")) {
		t.Fatalf("replayed handshake: want a refusal, got %q", got)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the replayed call ran: %d calls", n)
	}
	eventually.True(t, 2*time.Second, "the rejection in the log", func() bool {
		return strings.Contains(logs.String(), "did not prove the cluster secret")
	})
}

// TestCertificateMustNameNode: a certificate signed by the cluster's CA
// for n3 cannot be used to speak as n1, in either direction.
func TestCertificateMustNameNode(t *testing.T) {
	ctx := context.Background()
	ca := newTestCA(t, "herald test CA")
	a := newTestManager(t, "a", mtls(t, ca, ca, "a"))
	a.Handle("echo", echoHandler)

	impostor := newTestManager(t, "a2", mtls(t, ca, ca, "n3"))
	_, err := impostor.Call(ctx, a.Addr(), "echo", 1, nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `does not name node "a2"`) {
		t.Fatalf("client certificate for another node: %v", err)
	}
	// The acceptor's certificate is checked by the dialer too.
	fake := newTestManager(t, "b", mtls(t, ca, ca, "someone-else"))
	fake.Handle("echo", echoHandler)
	_, err = a.Call(ctx, fake.Addr(), "echo", 1, nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `server certificate (CN=someone-else) does not name node "b"`) {
		t.Fatalf("server certificate for another node: %v", err)
	}
	good := newTestManager(t, "c", mtls(t, ca, ca, "c"), withSecret(testSecret))
	a2 := newTestManager(t, "d", mtls(t, ca, ca, "d"), withSecret(testSecret))
	a2.Handle("echo", echoHandler)
	if got, err := good.Call(ctx, a2.Addr(), "echo", 1, []byte("ok")); err != nil || string(got) != "c:ok" {
		t.Fatalf("mutual TLS and a secret together: %q %v", got, err)
	}
}

func TestCertNames(t *testing.T) {
	ca := newTestCA(t, "herald test CA")
	for _, c := range []struct {
		name string
		mod  func(*testCertSpec)
		id   string
		want bool
	}{
		{"cn", nil, "n1", true},
		{"cn of another", nil, "n2", false},
		{"dns san", func(s *testCertSpec) { s.dns = []string{"n2"} }, "n2", true},
		{"spiffe uri", func(s *testCertSpec) { s.uris = []string{"spiffe://prod/herald/n2"} }, "n2", true},
		{"urn", func(s *testCertSpec) { s.uris = []string{"urn:herald:node:n2"} }, "n2", true},
		{"uri of another", func(s *testCertSpec) { s.uris = []string{"spiffe://prod/herald/n3"} }, "n2", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := testCertSpec{cn: "n1"}
			if c.mod != nil {
				c.mod(&spec)
			}
			cert := ca.issueSpec(t, spec)
			if got := certNames(cert, c.id); got != c.want {
				t.Fatalf("certNames(%s) = %v, want %v", certIdentities(cert), got, c.want)
			}
		})
	}
}

// TestAuthorizeMembership: an authenticated peer that is not a member may
// only call the join services until it becomes one; a refused identity
// (a removed node) cannot connect at all.
func TestAuthorizeMembership(t *testing.T) {
	ctx := context.Background()
	var members sync.Map
	members.Store("b", true)
	var refuseJoiner atomic.Bool
	a := newTestManager(t, "a", withSecret(testSecret), func(c *Config) {
		c.JoinServices = []string{"join"}
		c.Authorize = func(id string) (PeerAccess, error) {
			if id == "removed" || (id == "joiner" && refuseJoiner.Load()) {
				return 0, errors.New("node removed was removed from the cluster")
			}
			if _, ok := members.Load(id); ok {
				return AccessFull, nil
			}
			return AccessJoin, nil
		}
	})
	a.Handle("echo", echoHandler)
	a.Handle("join", echoHandler)
	ga := mustGroup(t, a, 1)

	joiner := newTestManager(t, "joiner", withSecret(testSecret))
	if got, err := joiner.Call(ctx, a.Addr(), "join", 0, []byte("hi")); err != nil || string(got) != "joiner:hi" {
		t.Fatalf("join call: %q %v", got, err)
	}
	if _, err := joiner.Call(ctx, a.Addr(), "echo", 0, nil); !errors.Is(err, ErrNotMember) {
		t.Fatalf("non-join call from a joiner: %v", err)
	}
	gj := mustGroup(t, joiner, 1)
	args := makeAppendRPC()
	if err := gj.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse)); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("raft RPC from a joiner: %v", err)
	}
	var sresp raft.InstallSnapshotResponse
	if err := gj.InstallSnapshot("a", a.Addr(), &raft.InstallSnapshotRequest{Term: 1, Size: 3}, &sresp, stringsReader("abc")); err == nil {
		t.Fatal("a joiner sent a snapshot")
	}
	select {
	case rpc := <-ga.Consumer():
		t.Fatalf("raft saw an RPC from a non-member: %T", rpc.Command)
	default:
	}

	// Once it is a member, the same connection carries everything.
	members.Store("joiner", true)
	if got, err := joiner.Call(ctx, a.Addr(), "echo", 0, []byte("in")); err != nil || string(got) != "joiner:in" {
		t.Fatalf("call after joining: %q %v", got, err)
	}

	// A member removed later loses the connection it has.
	members.Delete("joiner")
	refuseJoiner.Store(true)
	a.Reauthorize()
	if _, err := joiner.Call(ctx, a.Addr(), "join", 0, nil); err == nil {
		t.Fatal("a removed member kept calling")
	}

	removed := newTestManager(t, "removed", withSecret(testSecret))
	if _, err := removed.Call(ctx, a.Addr(), "join", 0, nil); err == nil || !strings.Contains(err.Error(), "was removed from the cluster") {
		t.Fatalf("removed node: %v", err)
	}
}

func TestRejectionsLogRateLimited(t *testing.T) {
	logs := &testnet.LogBuffer{}
	a := newTestManager(t, "a", withSecret(testSecret), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	a.rejected.every.Store(int64(300 * time.Millisecond))
	intruder := newTestManager(t, "x", withSecret(otherSecret))
	attempt := func() {
		nc, err := net.Dial("tcp", string(a.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write([]byte("not a hello"))
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.ReadAll(nc)
		_ = nc.Close()
	}
	start := time.Now()
	for range 10 {
		attempt()
	}
	if time.Since(start) > 250*time.Millisecond {
		t.Skip("the machine is too slow to fit 10 rejections in one log window")
	}
	if n := strings.Count(logs.String(), "rejecting connection"); n != 1 {
		t.Fatalf("%d log lines for 10 rejections in one window, want 1:\n%s", n, logs.String())
	}
	time.Sleep(350 * time.Millisecond)
	_, _ = intruder.Call(context.Background(), a.Addr(), "echo", 0, nil)
	eventually.True(t, 2*time.Second, "the summary line", func() bool {
		return strings.Contains(logs.String(), "rejected_since_last_log=9")
	})
}

// FuzzAcceptHandshake feeds arbitrary bytes to the acceptor's side of the
// handshake: it must refuse or accept without panicking or hanging, and
// never accept a peer that did not prove the secret.
func FuzzAcceptHandshake(f *testing.F) {
	f.Add(rawHello(kindMux, protocolVersion, "n1"))
	f.Add(append(rawHello(kindSnapshot, protocolVersion, "n2"), make([]byte, macLen)...))
	f.Add([]byte("HRLD\x01\x01\x02n1"))
	f.Add([]byte{})
	m := &Manager{cfg: Config{NodeID: "a", ClusterSecret: testSecret}}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, _, err := m.acceptHandshake(&scriptConn{r: bytes.NewReader(in)}); err == nil {
			t.Fatalf("accepted %q without a proof", in)
		}
	})
}

// scriptConn is a connection whose peer sends a fixed script and swallows
// whatever it is sent.
type scriptConn struct {
	net.Conn // nil: only Read and Write are used
	r        io.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }
