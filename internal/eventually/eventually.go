// Package eventually is how Herald's tests wait for what happens
// asynchronously (a metric that follows a close, a leadership that moves):
// they poll a check until it passes, within a bound, and fail naming what
// did not happen; or they give the calls that wait a context with a bound.
package eventually

import (
	"context"
	"errors"
	"testing"
	"time"
)

// interval is the pause between two checks: short against the bounds
// tests give (seconds), long against what one check costs.
const interval = 20 * time.Millisecond

var errNotYet = errors.New("condition not met")

// Nil polls check until it returns nil. After d it fails t with what and
// check's last error.
func Nil(t testing.TB, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(interval)
	}
}

// True polls cond until it holds. After d it fails t with what.
func True(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	Nil(t, d, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// Within returns a context that ends after d, or when the test ends,
// whichever comes first: the bound of a test's calls that wait on a
// cluster.
func Within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
