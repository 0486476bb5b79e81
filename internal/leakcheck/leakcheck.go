// Package leakcheck is the one goroutine-leak check of Herald's tests:
// a package whose code starts goroutines runs its tests under Main, which
// fails the run when goroutines its tests started are still running once
// they all returned. Every goroutine has an owner and a way to stop, and
// this is where that is checked.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// ignored are goroutines that libraries start once per process and never
// stop; they are not the tests' to stop.
var ignored = []goleak.Option{
	// badger's metrics and the opencensus worker its dependencies start.
	goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	// glog's flush daemon (through badger's ristretto).
	goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
}

// settle is how long goroutines on their way out get before they count as
// leaked. goleak's own wait is under half a second, which a loaded machine
// (the race detector, two cores, packages tested in parallel) can exceed
// for a goroutine that is only slow to return; a leaked one stays blocked
// however long the wait.
const settle = 10 * time.Second

// Main runs the package's tests, then the cleanups, then fails if
// goroutines they started are still running settle later.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if code == 0 {
		if err := find(ignored); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// After fails t if goroutines that were not running when After was called
// are still running once t's later cleanups have run. Register it before
// the cleanups that stop what the test starts (cleanups run last in, first
// out), so that the check comes after them.
func After(t testing.TB) {
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, ignored...)
	t.Cleanup(func() {
		if err := find(opts); err != nil {
			t.Error(err)
		}
	})
}

// find is goleak.Find retried until settle has passed.
func find(opts []goleak.Option) error {
	deadline := time.Now().Add(settle)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
