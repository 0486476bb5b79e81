package logstore

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-runs the test binary as a child that writes until it is
// killed with SIGKILL; the parent then checks that everything the child saw
// acknowledged is on disk.
const (
	crashEnvDir    = "LOGSTORE_CRASH_DIR"
	crashEnvKind   = "LOGSTORE_CRASH_KIND"
	crashGroups    = 4
	crashBatch     = 8
	crashAcksToRun = 300
)

func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	for _, kind := range testKinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			cmd, out := startChild(t, "TestCrashChild", crashEnvDir+"="+dir, crashEnvKind+"="+string(kind))
			acked := map[uint64]uint64{} // group -> highest acknowledged index
			terms := map[uint64]uint64{} // group -> highest acknowledged term
			sc := bufio.NewScanner(out)
			n, killed := 0, false
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) != 4 || f[0] != "ack" {
					continue // test framework chatter
				}
				g, _ := strconv.ParseUint(f[1], 10, 64)
				idx, _ := strconv.ParseUint(f[2], 10, 64)
				term, _ := strconv.ParseUint(f[3], 10, 64)
				acked[g] = max(acked[g], idx)
				terms[g] = max(terms[g], term)
				if n++; n == crashAcksToRun && !killed {
					// Keep reading: acks already written to the pipe
					// were acknowledged before the kill.
					if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					killed = true
				}
			}
			err := cmd.Wait()
			if !killed {
				t.Fatalf("child exited before being killed: %v", err)
			}
			t.Logf("child killed after %d acks (%v)", n, err)

			b := openTest(t, kind, dir)
			defer b.Close()
			for g := uint64(1); g <= crashGroups; g++ {
				s := mustGroup(t, b, g)
				last, err := s.LastIndex()
				if err != nil {
					t.Fatal(err)
				}
				if last < acked[g] {
					t.Fatalf("group %d: last index %d, but %d was acknowledged", g, last, acked[g])
				}
				for i := uint64(1); i <= acked[g]; i++ {
					checkLog(t, s, fullLog(i, 200))
				}
				term, err := s.GetUint64([]byte("CurrentTerm"))
				if terms[g] > 0 && (err != nil || term < terms[g]) {
					t.Fatalf("group %d: term %d, %v; %d was acknowledged", g, term, err, terms[g])
				}
			}
		})
	}
}

// TestCrashChild is the child side of TestCrashDurability; it does nothing
// unless started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashDurability")
	}
	b := openTest(t, Kind(os.Getenv(crashEnvKind)), dir)
	var mu sync.Mutex // one ack line per write(2)
	var wg sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second) // never outlive a lost parent
	for g := uint64(1); g <= crashGroups; g++ {
		s := mustGroup(t, b, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); time.Now().Before(deadline); i += crashBatch {
				if err := s.StoreLogs(logsRange(i, i+crashBatch-1, 200)); err != nil {
					fmt.Fprintln(os.Stderr, "child store:", err)
					os.Exit(2)
				}
				term := i/crashBatch + 1
				if err := s.SetUint64([]byte("CurrentTerm"), term); err != nil {
					fmt.Fprintln(os.Stderr, "child set:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ack %d %d %d\n", g, i+crashBatch-1, term)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(3)
}
