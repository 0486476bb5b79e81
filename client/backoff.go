package client

import (
	"math/rand/v2"
	"time"
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
	Max    time.Duration // default 5s
	Jitter Jitter
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = 50 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	b.Max = max(b.Max, b.Min)
	return b
}

// Delay is the wait before attempt+1, after attempt (from 0) failed.
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
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
