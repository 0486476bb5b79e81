// Package leakcheck is the one goroutine-leak check of Herald's tests:
// a package whose code starts goroutines runs its tests under Main, which
// fails the run when goroutines its tests started are still running once
// they all returned. Every goroutine has an owner and a way to stop, and
// this is where that is checked.
package leakcheck

import (
	"os"
	"testing"

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

// Main runs the package's tests, then the cleanups, then fails if
// goroutines they started are left (goleak waits a moment for goroutines
// on their way out).
func Main(m *testing.M, cleanups ...func()) {
	opts := append([]goleak.Option{goleak.Cleanup(func(code int) {
		for _, c := range cleanups {
			c()
		}
		os.Exit(code)
	})}, ignored...)
	goleak.VerifyTestMain(m, opts...)
}

// After fails t if goroutines that were not running when After was called
// are still running once t's later cleanups have run. Register it before
// the cleanups that stop what the test starts (cleanups run last in, first
// out), so that the check comes after them.
func After(t testing.TB) {
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, ignored...)
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}
