package jepsen

import (
	"bytes"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// builder makes handmade histories: each op gets the next id and, unless
// given, a time span after the previous op's.
type builder struct {
	h History
	t int64
}

func (b *builder) add(o Op) *Op {
	o.ID = len(b.h) + 1
	if o.Start == 0 && o.End == 0 {
		b.t += 10
		o.Start = b.t
		b.t += 10
		o.End = b.t
	}
	b.t = max(b.t, o.End)
	b.h = append(b.h, o)
	return &b.h[len(b.h)-1]
}

func msgs(from uint64, values ...string) []Ev {
	evs := make([]Ev, len(values))
	for i, v := range values {
		evs[i] = Ev{Seq: from + uint64(i), Value: v}
	}
	return evs
}

func u64(v uint64) *uint64 { return &v }

// deliver adds an event delivered to the latest subscription.
func (b *builder) deliver(seq uint64, value string) {
	var stream *Op
	for i := range b.h {
		if b.h[i].F == FSubscribe {
			stream = &b.h[i]
		}
	}
	b.add(Op{Process: stream.Process, Node: stream.Node, F: FDeliver, Room: stream.Room, Sub: stream.Sub, Stream: stream.ID,
		Type: TypeOK, Seq: seq, Events: msgs(seq, value)})
}

// valid builds a history with nothing wrong in it: publishes (acked,
// failed, unknown), conditional publishes, reads, a subscription that
// resubscribes, joins and leaves (with a leave the node made for a closed
// socket), a fault, and final reads from two nodes.
//
// final tweaks the final state of the log room "r" (its events) before
// the final reads are made from it; extra adds operations before them.
func valid(final func(r []Ev) []Ev, extra func(b *builder)) History {
	var b builder
	b.add(Op{Process: NemesisProcess, F: FPhase, Value: PhaseWorkload, Type: TypeOK})
	// A fault, healed: every write below comes after it.
	b.add(Op{Process: NemesisProcess, F: FFault, Fault: FaultKill, Value: "kill -9 n3", Nodes: []string{"n3"}, Type: TypeOK})
	b.add(Op{Process: NemesisProcess, F: FPhase, Value: PhaseFinalHeal, Type: TypeOK})
	// Room r: a, b, c acknowledged in order; f certainly failed; u unknown.
	b.add(Op{Process: 1, Node: "n1", F: FPublish, Room: "r", Value: "a", Key: "a", Type: TypeOK, Seq: 1, LastSeq: 1})
	b.add(Op{Process: 2, Node: "n2", F: FPublish, Room: "r", Value: "b", Key: "b", Type: TypeInfo, Error: "timeout"})
	b.add(Op{Process: 2, Node: "n1", F: FPublish, Room: "r", Value: "b", Key: "b", Type: TypeOK, Seq: 2, LastSeq: 2})
	b.add(Op{Process: 3, Node: "n1", F: FRead, Room: "r", FromSeq: 1, Type: TypeOK, Events: msgs(1, "a", "b"), LastSeq: 2})
	b.add(Op{Process: 4, Node: "n3", F: FPublish, Room: "r", Value: "f", Key: "f", Type: TypeFail, Error: "unavailable"})
	b.add(Op{Process: 1, Node: "n2", F: FPublish, Room: "r", Value: "c", Key: "c", Type: TypeOK, Seq: 3, LastSeq: 3})
	b.add(Op{Process: 4, Node: "n3", F: FPublish, Room: "r", Value: "u", Key: "u", Type: TypeInfo, Error: "unknown_outcome"})
	b.add(Op{Process: 3, Node: "n2", F: FRead, Room: "r", FromSeq: 2, Type: TypeOK, Events: msgs(2, "b", "c"), LastSeq: 3})
	// A subscription to r over two sockets.
	s1 := b.add(Op{Process: 5, Node: "n1", F: FSubscribe, Room: "r", FromSeq: 1, Sub: 1, Type: TypeOK})
	b.add(Op{Process: 5, Node: "n1", F: FDeliver, Room: "r", Sub: 1, Stream: s1.ID, Type: TypeOK, Seq: 1, Events: msgs(1, "a")})
	b.add(Op{Process: 5, Node: "n1", F: FDeliver, Room: "r", Sub: 1, Stream: s1.ID, Type: TypeOK, Seq: 2, Events: msgs(2, "b")})
	s2 := b.add(Op{Process: 5, Node: "n2", F: FSubscribe, Room: "r", FromSeq: 3, Sub: 1, Type: TypeOK})
	b.add(Op{Process: 5, Node: "n2", F: FDeliver, Room: "r", Sub: 1, Stream: s2.ID, Type: TypeOK, Seq: 3, Events: msgs(3, "c")})
	// Room c: conditional publishes.
	b.add(Op{Process: 6, Node: "n1", F: FRead, Room: "c", FromSeq: 1 << 40, Type: TypeOK, LastSeq: 0})
	b.add(Op{Process: 6, Node: "n1", F: FPublish, Room: "c", Value: "x", Key: "x", ExpectSeq: u64(0), Type: TypeOK, Seq: 1, LastSeq: 1})
	b.add(Op{Process: 7, Node: "n2", F: FPublish, Room: "c", Value: "y", Key: "y", ExpectSeq: u64(0), Type: TypeFail, Error: "conflict", LastSeq: 1})
	b.add(Op{Process: 7, Node: "n2", F: FPublish, Room: "c", Value: "z", Key: "z", ExpectSeq: u64(1), Type: TypeInfo, Error: "conn"})
	b.add(Op{Process: 7, Node: "n3", F: FPublish, Room: "c", Value: "z", Key: "z", ExpectSeq: u64(1), Type: TypeOK, Seq: 2, LastSeq: 2, Duplicate: true})
	// Room m: membership; u2's socket closes and its node leaves for it.
	b.add(Op{Process: 8, Node: "n1", F: FJoin, Room: "m", Value: "u1", Type: TypeOK, Seq: 1})
	b.add(Op{Process: 9, Node: "n2", F: FJoin, Room: "m", Value: "u2", Type: TypeOK, Seq: 2})
	b.add(Op{Process: 8, Node: "n1", F: FMembers, Room: "m", Type: TypeOK, Seq: 2, Members: []string{"u2", "u1"}})
	b.add(Op{Process: 8, Node: "n1", F: FLeave, Room: "m", Value: "u1", Type: TypeOK, Seq: 3})
	b.add(Op{Process: 8, Node: "n1", F: FLeave, Room: "m", Value: "u1", Type: TypeFail, Error: "not_found"})
	b.add(Op{Process: 9, Node: "n2", F: FJoin, Room: "m", Value: "u2", Type: TypeInfo, Error: "timeout"})
	b.add(Op{Process: 8, Node: "n3", F: FMembers, Room: "m", Type: TypeOK, Seq: 5})
	b.add(Op{Process: 1, Node: "n1", F: FPublish, Room: "o", Value: "o1", Key: "o1", Type: TypeOK, Seq: 1})
	b.add(Op{Process: 2, Node: "n2", F: FPublish, Room: "o", Value: "o2", Key: "o2", Type: TypeOK, Seq: 2})
	if extra != nil {
		extra(&b)
	}
	b.add(Op{Process: NemesisProcess, F: FPhase, Value: PhaseQuiesce, Type: TypeOK})
	b.add(Op{Process: NemesisProcess, F: FPhase, Value: PhaseFinal, Type: TypeOK})
	r := msgs(1, "a", "b", "c")
	if final != nil {
		r = final(r)
	}
	rooms := map[string][]Ev{
		"r": r,
		"c": msgs(1, "x", "z"),
		"m": {{Seq: 1, Type: "join", Member: "u1"}, {Seq: 2, Type: "join", Member: "u2"}, {Seq: 3, Type: "leave", Member: "u1"},
			{Seq: 4, Type: "join", Member: "u2"}, {Seq: 5, Type: "leave", Member: "u2"}},
		"o": msgs(1, "o1", "o2"),
	}
	for _, node := range []string{"n1", "n2"} {
		for _, room := range []string{"c", "m", "o", "r"} {
			evs := rooms[room]
			last := uint64(0)
			if len(evs) > 0 {
				last = evs[len(evs)-1].Seq
			}
			b.add(Op{Process: FinalProcess, Node: node, F: FFinalRead, Room: room, FromSeq: 1, Type: TypeOK, Events: evs, LastSeq: last})
			b.add(Op{Process: FinalProcess, Node: node, F: FFinalStale, Room: room, FromSeq: 1, Type: TypeOK, Events: evs, LastSeq: last})
		}
		b.add(Op{Process: FinalProcess, Node: node, F: FFinalMembers, Room: "m", Type: TypeOK, Seq: 5})
	}
	return b.h
}

// anomalies runs every checker and names what they found.
func anomalies(t *testing.T, h History) map[string]int {
	t.Helper()
	lr, sr, dr := CheckLog(h), CheckStreams(h), CheckDivergence(h)
	lin := CheckLinear(h, 10*time.Second, "")
	got := map[string]int{
		"lost": lr.Lost.Count, "duplicated": lr.Duplicated.Count, "inconsistent": lr.Inconsistent.Count,
		"aborted": lr.Aborted.Count, "unexpected": lr.Unexpected.Count, "reordered": lr.Reordered.Count,
		"stale": lr.Stale.Count, "skipped": lr.Skipped.Count, "recovered": lr.Recovered.Count,
		"unchecked":      len(lr.Unchecked),
		"stream-skipped": sr.Skipped.Count, "stream-reordered": sr.Reordered.Count,
		"stream-duplicated": sr.Duplicated.Count, "stream-inconsistent": sr.Inconsistent.Count,
		"stream-notices": sr.Notices.Count, "stream-lagging": sr.Lagging.Count,
		"divergent": dr.Divergent.Count, "behind": dr.Behind.Count, "unread": dr.Unread.Count,
		"nonlinearizable": lin.Illegal, "inconclusive": lin.Unknown,
	}
	maps.DeleteFunc(got, func(_ string, n int) bool { return n == 0 })
	if t.Failed() || testing.Verbose() {
		for _, f := range []Finding{lr.Lost, lr.Duplicated, lr.Inconsistent, lr.Aborted, lr.Unexpected, lr.Reordered,
			lr.Stale, lr.Skipped, sr.Skipped, sr.Reordered, sr.Duplicated, sr.Inconsistent, dr.Divergent} {
			for _, e := range f.Examples {
				t.Logf("  %s", e.Detail)
			}
		}
	}
	return got
}

func kinds(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

func expect(t *testing.T, h History, want ...string) {
	t.Helper()
	got := anomalies(t, h)
	slices.Sort(want)
	if kinds(got) != strings.Join(want, " ") {
		t.Fatalf("checkers found %v, want exactly [%s]", got, strings.Join(want, " "))
	}
}

func TestValidHistoryPassesEveryChecker(t *testing.T) {
	h := valid(nil, nil)
	expect(t, h)
	lin := CheckLinear(h, 10*time.Second, "")
	if lin.OK != 4 {
		t.Fatalf("linearizability: %+v", lin)
	}
	lr := CheckLog(h)
	if lr.Acked != 7 || lr.Failed != 2 || lr.Unknown != 1 {
		t.Fatalf("publishes: acked %d failed %d unknown %d", lr.Acked, lr.Failed, lr.Unknown)
	}
	res := Check(h, RunInfo{Ready: true}, "", 10*time.Second)
	if !res.Valid {
		t.Fatalf("Check: %v", res.Problems)
	}
}

func TestLost(t *testing.T) {
	// The node dropped c before anyone could see it: only its
	// acknowledgement remains.
	h := valid(func(r []Ev) []Ev { return r[:2] }, nil)
	h = slices.DeleteFunc(h, func(o Op) bool { return o.F == FDeliver && o.Seq == 3 || o.F == FRead && o.LastSeq == 3 })
	expect(t, h, "lost", "stale", "nonlinearizable")
	if lr := CheckLog(h); lr.Lost.Examples[0].Value != "c" {
		t.Fatalf("lost: %+v", lr.Lost)
	}
}

func TestDuplicated(t *testing.T) {
	h := valid(func(r []Ev) []Ev { return append(r, Ev{Seq: 4, Value: "a"}) }, func(b *builder) {
		b.deliver(4, "a")
	})
	expect(t, h, "duplicated", "nonlinearizable")
}

func TestInconsistentRead(t *testing.T) {
	// A read that has b and c swapped.
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 3, Node: "n3", F: FRead, Room: "r", FromSeq: 1, Type: TypeOK, Events: msgs(1, "a", "c", "b"), LastSeq: 3})
	})
	expect(t, h, "inconsistent", "nonlinearizable")
}

func TestInconsistentAck(t *testing.T) {
	// b's acknowledgement names seq 3, which is c's: so c, begun after b
	// was acknowledged, did not get a higher seq, and the read after b
	// did not see b's seq.
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FPublish && h[i].Value == "b" && h[i].Type == TypeOK {
			h[i].Seq = 3
		}
	}
	expect(t, h, "inconsistent", "reordered", "stale", "nonlinearizable")
}

func TestAborted(t *testing.T) {
	h := valid(func(r []Ev) []Ev { return append(r, Ev{Seq: 4, Value: "f"}) }, func(b *builder) {
		b.deliver(4, "f")
	})
	expect(t, h, "aborted", "nonlinearizable")
}

func TestRecoveredIsNotAnError(t *testing.T) {
	h := valid(func(r []Ev) []Ev { return append(r, Ev{Seq: 4, Value: "u"}) }, func(b *builder) {
		b.deliver(4, "u")
	})
	expect(t, h, "recovered")
}

func TestUnexpected(t *testing.T) {
	h := valid(func(r []Ev) []Ev { return append(r, Ev{Seq: 4, Value: "never-sent"}) }, func(b *builder) {
		b.deliver(4, "never-sent")
	})
	expect(t, h, "unexpected", "nonlinearizable")
}

func TestReordered(t *testing.T) {
	// o1 was acknowledged before o2 began, yet o2 came first.
	h := valid(nil, nil)
	for i := range h {
		if h[i].Room == "o" {
			switch h[i].Value {
			case "o1":
				h[i].Seq = 2
			case "o2":
				h[i].Seq = 1
			}
			if h[i].F == FFinalRead || h[i].F == FFinalStale {
				h[i].Events = msgs(1, "o2", "o1")
			}
		}
	}
	expect(t, h, "reordered", "nonlinearizable")
}

func TestStaleRead(t *testing.T) {
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 3, Node: "n3", F: FRead, Room: "r", FromSeq: 1, Type: TypeOK, Events: msgs(1, "a", "b"), LastSeq: 2})
	})
	expect(t, h, "stale", "nonlinearizable")
}

func TestSkippedInRead(t *testing.T) {
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 3, Node: "n3", F: FRead, Room: "r", FromSeq: 1, Type: TypeOK,
			Events: []Ev{{Seq: 1, Value: "a"}, {Seq: 3, Value: "c"}}, LastSeq: 3})
	})
	expect(t, h, "skipped", "nonlinearizable")
}

// stream replaces the second socket's deliveries.
func stream(seqs ...uint64) History {
	vals := map[uint64]string{1: "a", 2: "b", 3: "c"}
	h := valid(nil, nil)
	var out History
	var sid int
	for _, o := range h {
		if o.F == FSubscribe && o.FromSeq == 3 {
			sid = o.ID
		}
		if o.F == FDeliver && o.Stream == sid && sid != 0 {
			for _, s := range seqs {
				d := o
				d.Seq, d.Events = s, msgs(s, vals[s])
				out = append(out, d)
			}
			continue
		}
		out = append(out, o)
	}
	return out
}

func TestStreamValid(t *testing.T) { expect(t, stream(3)) }

func TestStreamSkipped(t *testing.T) {
	// The first socket got 1 and then 3.
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FDeliver && h[i].Seq == 2 {
			h[i].Seq, h[i].Events = 3, msgs(3, "c")
		}
	}
	h = slices.DeleteFunc(h, func(o Op) bool { return o.F == FSubscribe && o.FromSeq == 3 || o.F == FDeliver && o.Node == "n2" })
	expect(t, h, "stream-skipped")
}

func TestStreamDuplicatedAcrossSockets(t *testing.T) {
	expect(t, stream(2, 3), "stream-duplicated")
}

func TestStreamDuplicatedInOneSocket(t *testing.T) {
	expect(t, stream(3, 3), "stream-duplicated")
}

func TestStreamReordered(t *testing.T) {
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FDeliver && h[i].Seq == 1 {
			h[i].Seq, h[i].Events = 2, msgs(2, "b")
		} else if h[i].F == FDeliver && h[i].Seq == 2 {
			h[i].Seq, h[i].Events = 1, msgs(1, "a")
		}
	}
	expect(t, h, "stream-skipped", "stream-reordered")
}

func TestStreamInconsistent(t *testing.T) {
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FDeliver && h[i].Seq == 2 {
			h[i].Events = msgs(2, "c")
		}
	}
	expect(t, h, "stream-inconsistent")
}

func TestStreamLagging(t *testing.T) {
	h := valid(nil, nil)
	h = slices.DeleteFunc(h, func(o Op) bool { return o.F == FDeliver && o.Seq == 3 })
	expect(t, h, "stream-lagging")
}

func TestDivergentReplica(t *testing.T) {
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FFinalStale && h[i].Node == "n2" && h[i].Room == "r" {
			h[i].Events = msgs(1, "a", "c", "b")
		}
	}
	expect(t, h, "divergent", "inconsistent")
}

func TestReplicaBehindIsNotDivergent(t *testing.T) {
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FFinalStale && h[i].Node == "n2" && h[i].Room == "r" {
			h[i].Events, h[i].LastSeq = msgs(1, "a", "b"), 2
		}
	}
	expect(t, h, "behind")
}

func TestUnreadFinal(t *testing.T) {
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FFinalRead && h[i].Node == "n2" && h[i].Room == "c" {
			h[i].Type, h[i].Events, h[i].Error = TypeFail, nil, "final"
		}
	}
	expect(t, h, "unread")
}

func TestMembersInconsistent(t *testing.T) {
	// A member list at seq 2 without u2, who joined at 2.
	h := valid(nil, nil)
	for i := range h {
		if h[i].F == FMembers && h[i].Seq == 2 {
			h[i].Members = []string{"u1"}
		}
	}
	expect(t, h, "inconsistent", "nonlinearizable")
}

func TestMembersStale(t *testing.T) {
	// A member list that missed u1's acknowledged leave, but says so
	// honestly (seq 2).
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 8, Node: "n2", F: FMembers, Room: "m", Type: TypeOK, Seq: 2, Members: []string{"u1", "u2"}})
	})
	expect(t, h, "stale", "nonlinearizable")
}

func TestLeaveOfNonMemberIsChecked(t *testing.T) {
	// A leave refused as not_found while u2 was a member (after its
	// join at seq 2, before the node's leave at 5, which no list after
	// the refusal could have preceded).
	h := valid(nil, func(b *builder) {
		b.add(Op{Process: 9, Node: "n1", F: FLeave, Room: "m", Value: "u2", Type: TypeFail, Error: "not_found"})
		b.add(Op{Process: 8, Node: "n1", F: FMembers, Room: "m", Type: TypeOK, Seq: 4, Members: []string{"u2"}})
	})
	expect(t, h, "nonlinearizable")
}

func TestCrashMakesRunInvalid(t *testing.T) {
	res := Check(valid(nil, nil), RunInfo{Ready: true, Started: time.Now(), Crashes: []string{"n2 exited on its own"}}, "", 10*time.Second)
	if res.Valid {
		t.Fatal("a run with a crashed node is valid")
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	h := valid(nil, nil)
	var buf bytes.Buffer
	if err := h.WriteJSONL(&buf); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 2*len(h) {
		t.Fatalf("%d lines for %d ops", n, len(h))
	}
	back, err := ReadJSONL(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(h) {
		t.Fatalf("read %d ops, wrote %d", len(back), len(h))
	}
	for i := range h {
		if back[i].ID != h[i].ID || back[i].Value != h[i].Value || back[i].Seq != h[i].Seq || len(back[i].Events) != len(h[i].Events) {
			t.Fatalf("op %d: %+v, wrote %+v", i, back[i], h[i])
		}
	}
	expect(t, back)
}
