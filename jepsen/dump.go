package jepsen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Goroutine dumps.
//
// A replica out of contact after the final heal is a liveness failure:
// nothing in the history shows where the stuck side waits. The nodes run
// with the profiler on (--pprof, behind the admin token), so when the
// contact check fails the harness saves every member's goroutine stacks,
// taken while the fault still shows, and its own: every I/O of a lazy disk
// is served by a FUSE server in the harness, so a request stalled there
// shows in the harness's stacks and as a node goroutine in a syscall.

// dumpLimit bounds one node's goroutine dump, read into memory first.
const dumpLimit = 64 << 20

// dumpGoroutines writes each member node's goroutine dump to
// <dir>/<id>-goroutines.txt and the harness's to harness-goroutines.txt.
// It returns the files written and what could not be taken.
func dumpGoroutines(ctx context.Context, c *Cluster, dir string) (files, failed []string) {
	for _, n := range c.Members() {
		name := filepath.Join(dir, n.ID+"-goroutines.txt")
		if err := c.dumpNode(ctx, n, name); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", n.ID, err))
			continue
		}
		files = append(files, filepath.Base(name))
	}
	name := filepath.Join(dir, "harness-goroutines.txt")
	if err := os.WriteFile(name, allStacks(), 0o644); err != nil {
		failed = append(failed, fmt.Sprintf("harness: %v", err))
	} else {
		files = append(files, filepath.Base(name))
	}
	return files, failed
}

// dumpNode saves node n's goroutine stacks, in the form of a crash dump
// (debug=2), to name.
func (c *Cluster) dumpNode(ctx context.Context, n *Node, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Net.ClientAddr+"/debug/pprof/goroutine?debug=2", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, dumpLimit))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %.200s", resp.Status, b)
	}
	return os.WriteFile(name, b, 0o644)
}

// allStacks returns the stacks of every goroutine of this process.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= dumpLimit {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}
