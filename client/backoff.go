package client

import (
	"math/rand/v2"
	"time"

	"github.com/heraldhq/herald/internal/fields"
)

// Jitter says how a Backoff randomizes its delays.
type Jitter uint8

const (
	// FullJitter draws each delay uniformly between Min and the
	// exponential bound, which spreads clients that lost the same node the
	// most.
	FullJitter Jitter = iota
	// EqualJitter keeps at least half of the exponential bound and draws
	// the rest.
	EqualJitter
	// NoJitter waits exactly the exponential bound.
	NoJitter
)

// Backoff is the delay between attempts: Min doubled per failed attempt up
// to Max, randomized by Jitter. It applies to reconnecting and to retrying
// requests a node answered with a retryable error.
type Backoff struct {
	Min    time.Duration // default 50ms
	Max    time.Duration // default 5s; below Min it is raised to Min
	Jitter Jitter
}

// DefaultBackoff returns the values a Backoff's zero fields take.
func DefaultBackoff() Backoff {
	return Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
}

// WithDefaults returns b with each zero field set to DefaultBackoff's
// value. A Max below Min is raised to Min, so that setting Min alone
// never makes the default Max wrong.
func (b Backoff) WithDefaults() Backoff {
	fields.Fill(&b, DefaultBackoff())
	if b.Max > 0 {
		b.Max = max(b.Max, b.Min)
	}
	return b
}

// Validate reports a negative Min or Max, by name.
func (b Backoff) Validate() error {
	var p fields.Problems
	fields.NotNegative(&p, "Backoff.Min", b.Min)
	fields.NotNegative(&p, "Backoff.Max", b.Max)
	return p.Err("")
}

// Delay is the wait before attempt+1, after attempt (from 0) failed.
func (b Backoff) Delay(attempt int) time.Duration {
	if b.Min < 0 || b.Max < 0 {
		// Delay has no error to return: a Backoff that Validate refuses
		// waits as the default one does.
		b = Backoff{Jitter: b.Jitter}
	}
	b = b.WithDefaults()
	bound := b.Max
	if attempt >= 0 && attempt < 32 {
		if d := b.Min << attempt; d > 0 && d < b.Max {
			bound = d
		}
	}
	switch b.Jitter {
	case FullJitter:
		return b.Min + rand.N(bound-b.Min+1)
	case EqualJitter:
		half := bound / 2
		return max(b.Min, half+rand.N(bound-half+1))
	}
	return bound
}
