package transport

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testLogger logs to stderr only when TRANSPORT_TEST_LOG is set, so test
// output stays readable while connection errors can still be inspected.
func testLogger() *slog.Logger {
	if os.Getenv("TRANSPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func newTestManager(t testing.TB, id string, mod ...func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		NodeID:      id,
		ListenAddr:  "127.0.0.1:0",
		DialTimeout: time.Second,
		RPCTimeout:  2 * time.Second,
		Logger:      testLogger(),
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", id, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func mustGroup(t testing.TB, m *Manager, id uint64) *GroupTransport {
	t.Helper()
	g, err := m.Group(id)
	if err != nil {
		t.Fatalf("Group(%d): %v", id, err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// pair returns two managers with group gid registered on both: a is the
// consumer side, b makes requests.
func pair(t testing.TB, gid uint64) (a, b *Manager, ga, gb *GroupTransport) {
	t.Helper()
	a = newTestManager(t, "a")
	b = newTestManager(t, "b")
	return a, b, mustGroup(t, a, gid), mustGroup(t, b, gid)
}

// serveAll answers every request on g with one success until stop closes.
func serveAll(g *GroupTransport, stop <-chan struct{}) {
	respondAll(g, &raft.AppendEntriesResponse{Term: 1, LastLog: 1, Success: true}, stop)
}

// respondAll answers every request on g with resp until stop closes: the
// consumer channel is never closed, so stop is what ends it.
func respondAll(g *GroupTransport, resp *raft.AppendEntriesResponse, stop <-chan struct{}) {
	for {
		select {
		case rpc := <-g.Consumer():
			rpc.Respond(resp, nil)
		case <-stop:
			return
		}
	}
}

func makeAppendRPC() raft.AppendEntriesRequest {
	return raft.AppendEntriesRequest{
		Term:         10,
		PrevLogEntry: 100,
		PrevLogTerm:  4,
		Entries: []*raft.Log{
			{
				Index: 101,
				Term:  4,
				Type:  raft.LogNoop,
			},
		},
		LeaderCommitIndex: 90,
		RPCHeader:         raft.RPCHeader{Addr: []byte("cartman")},
	}
}

func makeAppendRPCResponse() raft.AppendEntriesResponse {
	return raft.AppendEntriesResponse{
		Term:    4,
		LastLog: 90,
		Success: true,
	}
}

func heartbeatRPC() raft.AppendEntriesRequest {
	return raft.AppendEntriesRequest{
		Term:      10,
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte("cartman")},
		Leader:    []byte("cartman"),
	}
}

// checkGoroutines fails if the goroutine count does not return to within
// slack of baseline, and prints the leftovers.
func checkGoroutines(t testing.TB, baseline, slack int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+slack {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			var ours []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "multiraft/transport.") {
					ours = append(ours, g)
				}
			}
			t.Fatalf("goroutine leak: %d running, baseline %d\n%s", n, baseline, strings.Join(ours, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func managerConns(m *Manager) (outbound, inbound int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for c := range m.conns {
		if c.outbound {
			outbound++
		} else {
			inbound++
		}
	}
	return
}

// pendingCalls counts the requests m sent that wait for an answer.
func pendingCalls(m *Manager) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for c := range m.conns {
		if c.outbound {
			c.mu.Lock()
			n += len(c.pending)
			c.mu.Unlock()
		}
	}
	return n
}

func describe(v any) string { return fmt.Sprintf("%#v", v) }
