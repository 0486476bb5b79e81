package jepsen

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/admin"
)

// A node's goroutine dump is fetched from the profiler the way a node
// serves it with --pprof: behind the admin token, on its client port.
func TestDumpNodeGoroutines(t *testing.T) {
	const token = "dump-test-token"
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", admin.Guard(admin.Options{Token: token}, http.HandlerFunc(pprof.Index)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	n := &Node{ID: "n1", Net: NodeNet{ClientAddr: ln.Addr().String()}}
	ctx := context.Background()
	c := &Cluster{token: token}
	name := filepath.Join(dir, "n1-goroutines.txt")
	if err := c.dumpNode(ctx, n, name); err != nil {
		t.Fatalf("dump: %v", err)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	// debug=2 is the crash dump's form: every goroutine with its state
	// and full stack, this test's own among them.
	if !strings.Contains(string(b), "goroutine ") || !strings.Contains(string(b), "TestDumpNodeGoroutines") {
		t.Fatalf("the dump is not a goroutine listing:\n%.500s", b)
	}

	bad := &Cluster{token: "wrong"}
	if err := bad.dumpNode(ctx, n, filepath.Join(dir, "refused.txt")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a dump with the wrong token: %v, want the 401 refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused.txt")); !os.IsNotExist(err) {
		t.Fatalf("a refused dump left a file: %v", err)
	}

	if s := allStacks(); !strings.Contains(string(s), "TestDumpNodeGoroutines") {
		t.Fatalf("the harness's stacks miss this test:\n%.500s", s)
	}
}
