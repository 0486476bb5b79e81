package logstore

import "sort"

// walIndex says where each entry of one group lies. A raft log is a run
// of consecutive indexes, with a gap only where raft stored past a
// snapshot, so the index is a few runs of locations in slices: 16 bytes
// an entry, where a map took about 64 (a busy group keeps up to
// SnapshotThreshold+TrailingLogs entries, and a node hosts hundreds of
// groups).
type walIndex struct {
	runs []walRun // sorted by first, not overlapping
}

// walRun is a run of consecutive entries: locs[i] is where entry first+i
// lies.
type walRun struct {
	first uint64
	locs  []walLoc
}

func (r *walRun) last() uint64 { return r.first + uint64(len(r.locs)) - 1 }

// bounds returns the first and last index held, or zeros.
func (x *walIndex) bounds() (first, last uint64) {
	if len(x.runs) == 0 {
		return 0, 0
	}
	return x.runs[0].first, x.runs[len(x.runs)-1].last()
}

func (x *walIndex) empty() bool { return len(x.runs) == 0 }

// find returns the position of the run holding index, or -1.
func (x *walIndex) find(index uint64) int {
	i := sort.Search(len(x.runs), func(i int) bool { return x.runs[i].last() >= index })
	if i < len(x.runs) && x.runs[i].first <= index {
		return i
	}
	return -1
}

func (x *walIndex) get(index uint64) (walLoc, bool) {
	if i := x.find(index); i >= 0 {
		return x.runs[i].locs[index-x.runs[i].first], true
	}
	return walLoc{}, false
}

// set records where index lies and returns what it replaced, if anything.
func (x *walIndex) set(index uint64, at walLoc) (old walLoc, replaced bool) {
	if n := len(x.runs); n > 0 {
		r := &x.runs[n-1]
		if index == r.last()+1 { // the usual case: the log grows
			r.locs = append(r.locs, at)
			return walLoc{}, false
		}
	}
	if i := x.find(index); i >= 0 {
		loc := &x.runs[i].locs[index-x.runs[i].first]
		old, *loc = *loc, at
		return old, true
	}
	// A new run: past a gap, or before the first entry.
	i := sort.Search(len(x.runs), func(i int) bool { return x.runs[i].first > index })
	if i > 0 && x.runs[i-1].last()+1 == index {
		x.runs[i-1].locs = append(x.runs[i-1].locs, at)
		x.merge(i - 1)
	} else {
		x.runs = append(x.runs, walRun{})
		copy(x.runs[i+1:], x.runs[i:])
		x.runs[i] = walRun{first: index, locs: []walLoc{at}}
		x.merge(i)
	}
	return walLoc{}, false
}

// merge joins the run at i with the next when they touch. Runs only
// touch after a set that filled the gap between them.
func (x *walIndex) merge(i int) {
	if i+1 < len(x.runs) && x.runs[i].last()+1 == x.runs[i+1].first {
		x.runs[i].locs = append(x.runs[i].locs, x.runs[i+1].locs...)
		x.runs = append(x.runs[:i+1], x.runs[i+2:]...)
	}
}

// deleteRange removes the entries from lo to hi, inclusive, and tells
// removed about each one.
func (x *walIndex) deleteRange(lo, hi uint64, removed func(walLoc)) {
	out := x.runs[:0]
	var split []walRun
	for _, r := range x.runs {
		first, last := r.first, r.last()
		if hi < first || lo > last {
			out = append(out, r)
			continue
		}
		from, to := max(lo, first)-first, min(hi, last)-first // positions in r.locs
		for _, loc := range r.locs[from : to+1] {
			removed(loc)
		}
		if from > 0 {
			out = append(out, walRun{first: first, locs: r.locs[:from:from]})
		}
		if to+1 < uint64(len(r.locs)) {
			rest := r.locs[to+1:]
			if len(rest) < cap(rest)/4 {
				// Raft compacts from the front: copy what stays rather
				// than keep the whole array alive for it.
				rest = append([]walLoc(nil), rest...)
			}
			if from > 0 {
				split = append(split, walRun{first: first + to + 1, locs: rest})
			} else {
				out = append(out, walRun{first: first + to + 1, locs: rest})
			}
		}
	}
	clear(x.runs[len(out):])
	x.runs = out
	if len(split) > 0 { // a hole punched inside a run; raft never does
		x.runs = append(x.runs, split...)
		sort.Slice(x.runs, func(i, j int) bool { return x.runs[i].first < x.runs[j].first })
	}
}

// each calls f for every entry, in index order.
func (x *walIndex) each(f func(index uint64, at walLoc)) {
	for _, r := range x.runs {
		for i, loc := range r.locs {
			f(r.first+uint64(i), loc)
		}
	}
}
