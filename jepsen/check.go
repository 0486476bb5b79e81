package jepsen

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Anomaly is one thing a checker found wrong, with the operations that
// show it.
type Anomaly struct {
	Room   string `json:"room,omitempty"`
	Value  string `json:"value,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Ops    []int  `json:"ops,omitempty"`
	Detail string `json:"detail"`
}

// Finding counts one kind of anomaly and keeps the first examples.
type Finding struct {
	Count    int       `json:"count"`
	Examples []Anomaly `json:"examples,omitempty"`
}

const maxExamples = 20

func (f *Finding) add(a Anomaly) {
	f.Count++
	if len(f.Examples) < maxExamples {
		f.Examples = append(f.Examples, a)
	}
}

// evKey names an event for comparisons: a message by its value, a join
// or leave by its type and member.
func evKey(e Ev) string {
	if e.Type == "" || e.Type == "message" {
		return e.Value
	}
	return e.Type + ":" + e.Member
}

// publication is one value's publish: every attempt, with one key.
type publication struct {
	room     string
	value    string
	attempts []*Op
	acked    *Op // the first successful attempt
	conflict *Op // a conditional publish's definite refusal
	start    int64
}

// status is acked, failed (every attempt certainly failed) or unknown.
func (p *publication) status() string {
	if p.acked != nil {
		return TypeOK
	}
	for _, a := range p.attempts {
		if a.Type == TypeInfo {
			return TypeInfo
		}
	}
	return TypeFail
}

// index is what every checker needs from a history.
type index struct {
	h     History
	pubs  map[string]*publication // by value
	order []string                // values in order of first attempt
	// final is each room's reference final history: the longest
	// linearizable final read.
	final    map[string][]Ev
	finalOp  map[string]*Op
	rooms    []string
	phases   map[string]int64
	maxTime  int64
	byRoomOK map[string][]*Op // successful writes with a seq, per room
	// dupReported holds room and value of the duplicates reported.
	dupReported map[string]bool
}

func newIndex(h History) *index {
	ix := &index{h: h, pubs: map[string]*publication{}, final: map[string][]Ev{}, finalOp: map[string]*Op{},
		phases: map[string]int64{}, byRoomOK: map[string][]*Op{}, dupReported: map[string]bool{}}
	rooms := map[string]bool{}
	for i := range h {
		op := &h[i]
		ix.maxTime = max(ix.maxTime, op.End, op.Start)
		if op.Room != "" {
			rooms[op.Room] = true
		}
		switch op.F {
		case FPhase:
			ix.phases[op.Value] = op.Start
		case FPublish:
			p := ix.pubs[op.Value]
			if p == nil {
				p = &publication{room: op.Room, value: op.Value, start: op.Start}
				ix.pubs[op.Value] = p
				ix.order = append(ix.order, op.Value)
			}
			p.attempts = append(p.attempts, op)
			p.start = min(p.start, op.Start)
			if op.Type == TypeOK && p.acked == nil {
				p.acked = op
			}
			if op.Type == TypeFail && op.Error == "conflict" && p.conflict == nil {
				p.conflict = op
			}
			if op.Type == TypeOK {
				ix.byRoomOK[op.Room] = append(ix.byRoomOK[op.Room], op)
			}
		case FJoin, FLeave:
			if op.Type == TypeOK {
				ix.byRoomOK[op.Room] = append(ix.byRoomOK[op.Room], op)
			}
		case FFinalRead:
			if op.Type != TypeOK {
				continue
			}
			ref := ix.finalOp[op.Room]
			if ref == nil || op.LastSeq > ref.LastSeq || op.LastSeq == ref.LastSeq && len(op.Events) > len(ref.Events) {
				ix.finalOp[op.Room] = op
				ix.final[op.Room] = op.Events
			}
		}
	}
	for r := range rooms {
		ix.rooms = append(ix.rooms, r)
	}
	sort.Strings(ix.rooms)
	return ix
}

// finalAt is the event at seq in a room's final history.
func (ix *index) finalAt(room string, seq uint64) (Ev, bool) {
	evs := ix.final[room]
	i := sort.Search(len(evs), func(i int) bool { return evs[i].Seq >= seq })
	if i < len(evs) && evs[i].Seq == seq {
		return evs[i], true
	}
	return Ev{}, false
}

// observation is one claim that an event is at a seq.
type observation struct {
	key string
	op  int
	how string
}

// LogResult is the verdict of the log checker on every room's messages.
type LogResult struct {
	Publishes int `json:"publishes"`
	Acked     int `json:"acked"`
	Failed    int `json:"failed"`
	// Conflicts are the failed conditional publishes refused with
	// conflict: the competition working, not faults.
	Conflicts int `json:"conflicts"`
	Unknown   int `json:"unknown"`
	// Lost: acknowledged, absent from the final history.
	Lost Finding `json:"lost"`
	// Duplicated: one value at two seqs of one history.
	Duplicated Finding `json:"duplicated"`
	// Inconsistent: two events claimed at one seq, a value at a seq other
	// than its acknowledged one, or a member list that is not the history
	// folded up to the list's seq.
	Inconsistent Finding `json:"inconsistent"`
	// Aborted: a publish that certainly failed, seen.
	Aborted Finding `json:"aborted"`
	// Recovered: a publish of unknown outcome that took effect (not an
	// error).
	Recovered Finding `json:"recovered"`
	// Unexpected: a value seen that nobody published.
	Unexpected Finding `json:"unexpected"`
	// Reordered: a publish acknowledged before another began, at a
	// higher seq.
	Reordered Finding `json:"reordered"`
	// Stale: a linearizable read that misses a write acknowledged before
	// the read began.
	Stale Finding `json:"stale"`
	// Skipped: a read page or final history with a hole.
	Skipped Finding `json:"skipped"`
	// Unchecked lists rooms without a final history.
	Unchecked []string `json:"unchecked,omitempty"`
}

// Safety is the sum of the counts that must be zero.
func (r *LogResult) Safety() int {
	return r.Lost.Count + r.Duplicated.Count + r.Inconsistent.Count + r.Aborted.Count +
		r.Unexpected.Count + r.Reordered.Count + r.Stale.Count + r.Skipped.Count
}

// CheckLog checks every room's messages against the final history and the
// real-time order of operations.
func CheckLog(h History) LogResult {
	return newIndex(h).checkLog()
}

func (ix *index) checkLog() LogResult {
	var r LogResult
	for _, v := range ix.order {
		p := ix.pubs[v]
		r.Publishes++
		switch p.status() {
		case TypeOK:
			r.Acked++
		case TypeFail:
			r.Failed++
			if p.conflict != nil {
				r.Conflicts++
			}
		default:
			r.Unknown++
		}
	}
	for _, room := range ix.rooms {
		if _, ok := ix.finalOp[room]; !ok && ix.hasClientOps(room) {
			r.Unchecked = append(r.Unchecked, room)
		}
	}
	ix.checkSeqs(&r)
	ix.checkFinal(&r)
	ix.checkSeen(&r)
	ix.checkOrder(&r)
	ix.checkMembers(&r)
	return r
}

func (ix *index) hasClientOps(room string) bool {
	for i := range ix.h {
		op := &ix.h[i]
		if op.Room == room && (op.F == FPublish || op.F == FJoin || op.F == FLeave) {
			return true
		}
	}
	return false
}

// checkSeqs gathers every claim of "event E is at seq S" and reports
// seqs claimed by two events, acknowledgements that disagree, and read
// pages with holes or repeats.
func (ix *index) checkSeqs(r *LogResult) {
	claims := map[string]map[uint64]observation{}
	reported := map[string]bool{}
	claim := func(room string, seq uint64, key string, op int, how string) {
		if seq == 0 {
			return
		}
		m := claims[room]
		if m == nil {
			m = map[uint64]observation{}
			claims[room] = m
		}
		prev, ok := m[seq]
		if !ok {
			m[seq] = observation{key, op, how}
			return
		}
		if prev.key == key {
			return
		}
		id := fmt.Sprintf("%s/%d", room, seq)
		if reported[id] {
			return
		}
		reported[id] = true
		r.Inconsistent.add(Anomaly{Room: room, Seq: seq, Ops: []int{prev.op, op},
			Detail: fmt.Sprintf("seq %d holds %q by %s (op %d) and %q by %s (op %d)", seq, prev.key, prev.how, prev.op, key, how, op)})
	}
	// Final histories first, so that claims are reported against them.
	for _, room := range ix.rooms {
		if op := ix.finalOp[room]; op != nil {
			for _, e := range op.Events {
				claim(room, e.Seq, evKey(e), op.ID, "the final read from "+op.Node)
			}
		}
	}
	for i := range ix.h {
		op := &ix.h[i]
		if op.Type != TypeOK {
			continue
		}
		switch op.F {
		case FPublish:
			claim(op.Room, op.Seq, op.Value, op.ID, "its publish's reply")
		case FJoin, FLeave:
			claim(op.Room, op.Seq, op.F+":"+op.Value, op.ID, "its "+op.F+"'s reply")
		case FRead, FFinalRead, FFinalStale:
			for _, e := range op.Events {
				claim(op.Room, e.Seq, evKey(e), op.ID, op.F+" from "+op.Node)
			}
			ix.checkPage(r, op)
		}
	}
	// Every acknowledgement of one publish must name one seq.
	for _, v := range ix.order {
		p := ix.pubs[v]
		for _, a := range p.attempts {
			if a.Type == TypeOK && p.acked != nil && a.Seq != p.acked.Seq {
				r.Inconsistent.add(Anomaly{Room: p.room, Value: v, Seq: a.Seq, Ops: []int{p.acked.ID, a.ID},
					Detail: fmt.Sprintf("%q acknowledged at seq %d and at seq %d", v, p.acked.Seq, a.Seq)})
			}
		}
	}
}

// checkPage checks that a history page has no hole and no repeat; a value
// repeated is reported once, however many reads show it.
func (ix *index) checkPage(r *LogResult, op *Op) {
	seen := map[string]uint64{}
	next := uint64(0)
	if op.F != FFinalStale && op.F != FFinalRead {
		next = max(op.FromSeq, 1)
	} else {
		next = 1
	}
	for i, e := range op.Events {
		if i == 0 && op.Truncated {
			next = e.Seq
		}
		if e.Seq != next {
			r.Skipped.add(Anomaly{Room: op.Room, Seq: next, Ops: []int{op.ID},
				Detail: fmt.Sprintf("%s from %s (op %d) has seq %d where %d belongs", op.F, op.Node, op.ID, e.Seq, next)})
			next = e.Seq
		}
		next++
		if e.Type == "" {
			if s, dup := seen[e.Value]; dup && !ix.dupReported[op.Room+"\x00"+e.Value] {
				ix.dupReported[op.Room+"\x00"+e.Value] = true
				r.Duplicated.add(Anomaly{Room: op.Room, Value: e.Value, Seq: e.Seq, Ops: []int{op.ID},
					Detail: fmt.Sprintf("%q at seqs %d and %d of %s from %s (op %d)", e.Value, s, e.Seq, op.F, op.Node, op.ID)})
			}
			seen[e.Value] = e.Seq
		}
	}
	full := op.F == FRead && len(op.Events) >= 1000
	if !full && len(op.Events) > 0 && op.Events[len(op.Events)-1].Seq < op.LastSeq {
		r.Skipped.add(Anomaly{Room: op.Room, Seq: op.LastSeq, Ops: []int{op.ID},
			Detail: fmt.Sprintf("%s from %s (op %d) ends at seq %d but says the room is at %d", op.F, op.Node, op.ID,
				op.Events[len(op.Events)-1].Seq, op.LastSeq)})
	}
}

// checkFinal compares what was acknowledged with the final history.
func (ix *index) checkFinal(r *LogResult) {
	for _, v := range ix.order {
		p := ix.pubs[v]
		op := ix.finalOp[p.room]
		if op == nil {
			continue
		}
		var at []uint64
		for _, e := range op.Events {
			if e.Type == "" && e.Value == v {
				at = append(at, e.Seq)
			}
		}
		switch p.status() {
		case TypeOK:
			if len(at) == 0 {
				r.Lost.add(Anomaly{Room: p.room, Value: v, Seq: p.acked.Seq, Ops: []int{p.acked.ID, op.ID},
					Detail: fmt.Sprintf("%q acknowledged at seq %d (op %d), absent from the final history (op %d, %d events)",
						v, p.acked.Seq, p.acked.ID, op.ID, len(op.Events))})
			} else if at[0] != p.acked.Seq {
				r.Inconsistent.add(Anomaly{Room: p.room, Value: v, Seq: at[0], Ops: []int{p.acked.ID, op.ID},
					Detail: fmt.Sprintf("%q acknowledged at seq %d (op %d), at seq %d in the final history", v, p.acked.Seq, p.acked.ID, at[0])})
			}
		case TypeInfo:
			if len(at) > 0 {
				r.Recovered.add(Anomaly{Room: p.room, Value: v, Seq: at[0],
					Detail: fmt.Sprintf("%q, of unknown outcome, is at seq %d", v, at[0])})
			}
		}
		if len(at) > 1 && !ix.dupReported[p.room+"\x00"+v] {
			ix.dupReported[p.room+"\x00"+v] = true
			r.Duplicated.add(Anomaly{Room: p.room, Value: v, Seq: at[1], Ops: []int{op.ID},
				Detail: fmt.Sprintf("%q at seqs %v of the final history (op %d)", v, at, op.ID)})
		}
	}
}

// checkSeen looks at every value any read, subscription or final read
// saw: certainly failed publishes and values never sent must not appear.
func (ix *index) checkSeen(r *LogResult) {
	reported := map[string]bool{}
	for i := range ix.h {
		op := &ix.h[i]
		if op.Type != TypeOK {
			continue
		}
		switch op.F {
		case FRead, FFinalRead, FFinalStale, FDeliver:
		default:
			continue
		}
		for _, e := range op.Events {
			if e.Type != "" || reported[e.Value] {
				continue
			}
			p := ix.pubs[e.Value]
			switch {
			case p == nil:
				reported[e.Value] = true
				r.Unexpected.add(Anomaly{Room: op.Room, Value: e.Value, Seq: e.Seq, Ops: []int{op.ID},
					Detail: fmt.Sprintf("%q at seq %d in %s (op %d) was never published", e.Value, e.Seq, op.F, op.ID)})
			case p.status() == TypeFail:
				reported[e.Value] = true
				ids := []int{op.ID}
				for _, a := range p.attempts {
					ids = append(ids, a.ID)
				}
				r.Aborted.add(Anomaly{Room: op.Room, Value: e.Value, Seq: e.Seq, Ops: ids,
					Detail: fmt.Sprintf("%q failed for certain (%s) yet is at seq %d in %s (op %d)",
						e.Value, attemptErrors(p), e.Seq, op.F, op.ID)})
			case p.room != op.Room:
				reported[e.Value] = true
				r.Unexpected.add(Anomaly{Room: op.Room, Value: e.Value, Seq: e.Seq, Ops: []int{op.ID},
					Detail: fmt.Sprintf("%q was published to %s, seen in %s (op %d)", e.Value, p.room, op.Room, op.ID)})
			}
		}
	}
}

func attemptErrors(p *publication) string {
	var codes []string
	for _, a := range p.attempts {
		codes = append(codes, a.Error)
	}
	return strings.Join(codes, ", ")
}

// write is an acknowledged write's seq and when it was acknowledged.
type write struct {
	seq uint64
	end int64
	op  int
}

// checkOrder checks real time against seqs: a write acknowledged before
// another write began has the lower seq, and a linearizable read sees
// every write acknowledged before it began.
func (ix *index) checkOrder(r *LogResult) {
	for _, room := range ix.rooms {
		var ws []write
		for _, op := range ix.byRoomOK[room] {
			ws = append(ws, write{op.Seq, op.End, op.ID})
		}
		sort.Slice(ws, func(i, j int) bool { return ws[i].end < ws[j].end })
		// prefix[i] is the write with the highest seq among ws[:i+1].
		best := make([]write, len(ws))
		for i, w := range ws {
			best[i] = w
			if i > 0 && best[i-1].seq > w.seq {
				best[i] = best[i-1]
			}
		}
		before := func(t int64) (write, bool) {
			i := sort.Search(len(ws), func(i int) bool { return ws[i].end >= t })
			if i == 0 {
				return write{}, false
			}
			return best[i-1], true
		}
		for _, op := range ix.byRoomOK[room] {
			start := op.Start
			if op.F == FPublish {
				start = ix.pubs[op.Value].start
			}
			if w, ok := before(start); ok && w.seq >= op.Seq {
				r.Reordered.add(Anomaly{Room: room, Seq: op.Seq, Ops: []int{w.op, op.ID},
					Detail: fmt.Sprintf("op %d got seq %d, after op %d had been acknowledged at seq %d", op.ID, op.Seq, w.op, w.seq)})
			}
		}
		for i := range ix.h {
			op := &ix.h[i]
			if op.Room != room || op.Type != TypeOK {
				continue
			}
			var seen uint64
			switch op.F {
			case FRead, FFinalRead:
				seen = op.LastSeq
			case FMembers, FFinalMembers:
				seen = op.Seq
			default:
				continue
			}
			if w, ok := before(op.Start); ok && w.seq > seen {
				r.Stale.add(Anomaly{Room: room, Seq: seen, Ops: []int{w.op, op.ID},
					Detail: fmt.Sprintf("%s (op %d, %s) saw the room at seq %d, but seq %d was acknowledged (op %d) before it began",
						op.F, op.ID, op.Node, seen, w.seq, w.op)})
			}
		}
	}
}

// membersAt folds a history's joins and leaves up to seq.
func membersAt(evs []Ev, seq uint64) []string {
	set := map[string]bool{}
	for _, e := range evs {
		if e.Seq > seq {
			break
		}
		switch e.Type {
		case "join":
			set[e.Member] = true
		case "leave":
			delete(set, e.Member)
		}
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// checkMembers checks every member list against the final history.
func (ix *index) checkMembers(r *LogResult) {
	for i := range ix.h {
		op := &ix.h[i]
		if op.Type != TypeOK || (op.F != FMembers && op.F != FFinalMembers) {
			continue
		}
		ref := ix.finalOp[op.Room]
		if ref == nil {
			continue
		}
		if op.Seq > ref.LastSeq {
			r.Inconsistent.add(Anomaly{Room: op.Room, Seq: op.Seq, Ops: []int{op.ID, ref.ID},
				Detail: fmt.Sprintf("%s (op %d) is at seq %d, beyond the final history's %d", op.F, op.ID, op.Seq, ref.LastSeq)})
			continue
		}
		got := slices.Clone(op.Members)
		sort.Strings(got)
		want := membersAt(ref.Events, op.Seq)
		if !slices.Equal(got, want) {
			r.Inconsistent.add(Anomaly{Room: op.Room, Seq: op.Seq, Ops: []int{op.ID, ref.ID},
				Detail: fmt.Sprintf("%s (op %d, %s) at seq %d lists %v; the history up to that seq has %v", op.F, op.ID, op.Node, op.Seq, got, want)})
		}
	}
}

// StreamResult is the verdict on subscriptions.
type StreamResult struct {
	Subscribers int `json:"subscribers"`
	Streams     int `json:"streams"`
	Delivered   int `json:"delivered"`
	// Skipped: a hole in a stream (a seq after from_seq never delivered
	// before a later one).
	Skipped Finding `json:"skipped"`
	// Reordered: a seq delivered after a higher one.
	Reordered Finding `json:"reordered"`
	// Duplicated: a seq delivered twice to one subscriber.
	Duplicated Finding `json:"duplicated"`
	// Inconsistent: a delivered event that differs from the final history.
	Inconsistent Finding `json:"inconsistent"`
	// Notices: truncated, room_deleted or unsubscribed pushes.
	Notices Finding `json:"notices"`
	// Lagging: a subscriber that never got to the room's last seq.
	Lagging Finding `json:"lagging"`
}

// Safety is the sum of the counts that must be zero.
func (r *StreamResult) Safety() int {
	return r.Skipped.Count + r.Reordered.Count + r.Duplicated.Count + r.Inconsistent.Count
}

// CheckStreams checks every subscription: each socket's stream is gap-free
// and in order from where it subscribed, a subscriber gets no seq twice
// across its sockets, and every event is the final history's.
func CheckStreams(h History) StreamResult {
	return newIndex(h).checkStreams()
}

func (ix *index) checkStreams() StreamResult {
	var r StreamResult
	subscribes := map[int]*Op{}
	subRoom := map[int]string{}
	streams := map[int][]*Op{}
	var streamIDs []int
	for i := range ix.h {
		op := &ix.h[i]
		switch {
		case op.F == FSubscribe && op.Type == TypeOK:
			subscribes[op.ID] = op
			subRoom[op.Sub] = op.Room
		case op.F == FDeliver:
			if _, ok := streams[op.Stream]; !ok {
				streamIDs = append(streamIDs, op.Stream)
			}
			streams[op.Stream] = append(streams[op.Stream], op)
		}
	}
	r.Subscribers = len(subRoom)
	r.Streams = len(subscribes)
	seen := map[int]map[uint64]int{} // subscriber → seq → deliver op
	maxSeq := map[int]uint64{}
	for _, sid := range streamIDs {
		sop := subscribes[sid]
		next := uint64(1)
		if sop != nil {
			next = max(sop.FromSeq, 1)
		}
		first := true
		for _, op := range streams[sid] {
			if op.Error != "" {
				r.Notices.add(Anomaly{Room: op.Room, Seq: op.Seq, Ops: []int{op.ID},
					Detail: fmt.Sprintf("subscription %d got a %s push (op %d)", op.Sub, op.Error, op.ID)})
				if op.Error == "truncated" {
					next = op.Seq
				}
				continue
			}
			r.Delivered++
			s := op.Seq
			if first && sop != nil && sop.Truncated {
				next = s
			}
			first = false
			if seen[op.Sub] == nil {
				seen[op.Sub] = map[uint64]int{}
			}
			prev, dup := seen[op.Sub][s]
			switch {
			case dup:
				r.Duplicated.add(Anomaly{Room: op.Room, Seq: s, Ops: []int{prev, op.ID},
					Detail: fmt.Sprintf("subscription %d got seq %d twice (ops %d and %d)", op.Sub, s, prev, op.ID)})
			case s == next:
			case s > next:
				r.Skipped.add(Anomaly{Room: op.Room, Seq: next, Ops: []int{sid, op.ID},
					Detail: fmt.Sprintf("subscription %d (stream op %d on %s) got seq %d where %d was due", op.Sub, sid, op.Node, s, next)})
			default:
				r.Reordered.add(Anomaly{Room: op.Room, Seq: s, Ops: []int{op.ID},
					Detail: fmt.Sprintf("subscription %d got seq %d after seq %d (op %d)", op.Sub, s, next-1, op.ID)})
			}
			if !dup {
				seen[op.Sub][s] = op.ID
			}
			next = max(next, s+1)
			maxSeq[op.Sub] = max(maxSeq[op.Sub], s)
			if ref := ix.finalOp[op.Room]; ref != nil && len(op.Events) == 1 {
				if want, ok := ix.finalAt(op.Room, s); !ok {
					r.Inconsistent.add(Anomaly{Room: op.Room, Seq: s, Ops: []int{op.ID, ref.ID},
						Detail: fmt.Sprintf("subscription %d got seq %d, which the final history (op %d) lacks", op.Sub, s, ref.ID)})
				} else if got := evKey(op.Events[0]); got != evKey(want) {
					r.Inconsistent.add(Anomaly{Room: op.Room, Seq: s, Ops: []int{op.ID, ref.ID},
						Detail: fmt.Sprintf("subscription %d got %q at seq %d; the final history has %q", op.Sub, got, s, evKey(want))})
				}
			}
		}
	}
	subs := make([]int, 0, len(subRoom))
	for s := range subRoom {
		subs = append(subs, s)
	}
	sort.Ints(subs)
	for _, s := range subs {
		ref := ix.finalOp[subRoom[s]]
		if ref != nil && maxSeq[s] < ref.LastSeq {
			r.Lagging.add(Anomaly{Room: subRoom[s], Seq: maxSeq[s],
				Detail: fmt.Sprintf("subscription %d got up to seq %d of %d", s, maxSeq[s], ref.LastSeq)})
		}
	}
	return r
}

// DivergenceResult compares the final reads of every node.
type DivergenceResult struct {
	Rooms int `json:"rooms"`
	Reads int `json:"reads"`
	// Divergent: two final reads of a room that are not prefixes of one
	// another: replicas that disagree on the log.
	Divergent Finding `json:"divergent"`
	// Behind: a replica still short of the final history after the
	// cluster was given time to settle (not a safety violation).
	Behind Finding `json:"behind"`
	// Unread: a node that never answered a final read of a room.
	Unread Finding `json:"unread"`
}

// CheckDivergence checks that every node's final reads, linearizable and
// of its own replica, are prefixes of one history.
func CheckDivergence(h History) DivergenceResult {
	return newIndex(h).checkDivergence()
}

func (ix *index) checkDivergence() DivergenceResult {
	var r DivergenceResult
	answered := map[string]map[string]bool{} // room → node
	asked := map[string]map[string]bool{}
	for i := range ix.h {
		op := &ix.h[i]
		if op.F != FFinalRead && op.F != FFinalStale {
			continue
		}
		if asked[op.Room] == nil {
			asked[op.Room], answered[op.Room] = map[string]bool{}, map[string]bool{}
		}
		key := op.F + " " + op.Node
		asked[op.Room][key] = true
		if op.Type != TypeOK {
			continue
		}
		answered[op.Room][key] = true
		r.Reads++
		ref := ix.final[op.Room]
		n := min(len(ref), len(op.Events))
		for j := range n {
			if evKey(ref[j]) != evKey(op.Events[j]) || ref[j].Seq != op.Events[j].Seq {
				r.Divergent.add(Anomaly{Room: op.Room, Seq: op.Events[j].Seq, Ops: []int{ix.finalOp[op.Room].ID, op.ID},
					Detail: fmt.Sprintf("%s from %s (op %d) has %q at seq %d; %s from %s (op %d) has %q",
						op.F, op.Node, op.ID, evKey(op.Events[j]), op.Events[j].Seq,
						ix.finalOp[op.Room].F, ix.finalOp[op.Room].Node, ix.finalOp[op.Room].ID, evKey(ref[j]))})
				break
			}
		}
		if len(op.Events) < len(ref) && op.F == FFinalStale {
			r.Behind.add(Anomaly{Room: op.Room, Seq: op.LastSeq, Ops: []int{op.ID},
				Detail: fmt.Sprintf("%s's replica answered %d of %d events (op %d)", op.Node, len(op.Events), len(ref), op.ID)})
		}
	}
	rooms := make([]string, 0, len(asked))
	for room := range asked {
		rooms = append(rooms, room)
	}
	sort.Strings(rooms)
	r.Rooms = len(rooms)
	for _, room := range rooms {
		var keys []string
		for k := range asked[room] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !answered[room][k] {
				r.Unread.add(Anomaly{Room: room, Detail: fmt.Sprintf("no answer to %s", k)})
			}
		}
	}
	return r
}
