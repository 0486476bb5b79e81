package logstore

import (
	"math/rand/v2"
	"testing"
)

// The run index answers as a map of index to location would, under the
// operations raft makes (appends, compaction from the front, truncation
// from the back, storing past a gap) and the ones it never makes (holes in
// the middle, stores before the first entry).
func TestWALIndexMatchesAMap(t *testing.T) {
	seg := &walSegment{}
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		var x walIndex
		model := map[uint64]walLoc{}
		next := uint64(1 + rng.IntN(5))
		for step := range 300 {
			switch op := rng.IntN(10); {
			case op < 5: // append a batch
				for range 1 + rng.IntN(20) {
					at := walLoc{seg: seg, off: uint32(step), n: uint32(next)}
					x.set(next, at)
					model[next] = at
					next++
				}
			case op == 5: // store past a gap, as after a snapshot
				next += uint64(1 + rng.IntN(30))
			case op == 6: // store somewhere at random, over an entry or not
				i := uint64(rng.IntN(int(next) + 10))
				at := walLoc{seg: seg, off: uint32(step), n: uint32(i) + 1_000_000}
				old, replaced := x.set(i, at)
				if was, ok := model[i]; ok != replaced || (ok && was != old) {
					t.Fatalf("seed %d step %d: set %d replaced %v (%+v), want %v (%+v)", seed, step, i, replaced, old, ok, was)
				}
				model[i] = at
			default: // delete a range: front, back or middle
				lo := uint64(rng.IntN(int(next) + 5))
				hi := lo + uint64(rng.IntN(40))
				gone := 0
				x.deleteRange(lo, hi, func(walLoc) { gone++ })
				want := 0
				for i := range model {
					if i >= lo && i <= hi {
						delete(model, i)
						want++
					}
				}
				if gone != want {
					t.Fatalf("seed %d step %d: delete %d..%d removed %d, want %d", seed, step, lo, hi, gone, want)
				}
			}
			checkIndexAgainst(t, &x, model, next+50)
		}
	}
}

func checkIndexAgainst(t *testing.T, x *walIndex, model map[uint64]walLoc, upTo uint64) {
	t.Helper()
	var first, last uint64
	for i := range model {
		if first == 0 || i < first {
			first = i
		}
		last = max(last, i)
	}
	// Index 0 is never a raft index, but the model may hold it.
	if _, ok := model[0]; ok {
		first = 0
	}
	if f, l := x.bounds(); len(model) > 0 && (f != first || l != last) {
		t.Fatalf("bounds %d..%d, want %d..%d", f, l, first, last)
	}
	if x.empty() != (len(model) == 0) {
		t.Fatalf("empty = %v with %d entries", x.empty(), len(model))
	}
	for i := uint64(0); i <= upTo; i++ {
		got, ok := x.get(i)
		want, wok := model[i]
		if ok != wok || got != want {
			t.Fatalf("get %d = %+v %v, want %+v %v", i, got, ok, want, wok)
		}
	}
	n := 0
	prev := uint64(0)
	x.each(func(i uint64, at walLoc) {
		if n > 0 && i <= prev {
			t.Fatalf("each went from %d to %d", prev, i)
		}
		if model[i] != at {
			t.Fatalf("each gave %d at %+v, want %+v", i, at, model[i])
		}
		prev = i
		n++
	})
	if n != len(model) {
		t.Fatalf("each gave %d entries, want %d", n, len(model))
	}
	for i := 1; i < len(x.runs); i++ {
		if x.runs[i-1].last()+1 >= x.runs[i].first {
			t.Fatalf("runs touch, overlap or are out of order: %d..%d then %d..", x.runs[i-1].first, x.runs[i-1].last(), x.runs[i].first)
		}
	}
	for _, r := range x.runs {
		if len(r.locs) == 0 {
			t.Fatalf("an empty run at %d", r.first)
		}
	}
}
