package jepsen

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Linearizability is checked per room: a room's events are one raft
// group's log, so rooms are independent and porcupine's search stays
// small. Rooms with messages use a log model; rooms with members a set
// model.

// logState is a room's log as an immutable list: appending shares the
// prefix, so the states porcupine keeps cost a node each. h hashes the
// whole list, so two states compare in O(1).
type logState struct {
	prev *logState
	key  string
	n    uint64
	h    uint64
}

func (s *logState) len() uint64 {
	if s == nil {
		return 0
	}
	return s.n
}

func (s *logState) hash() uint64 {
	if s == nil {
		return 0
	}
	return s.h
}

func (s *logState) push(key string) *logState {
	f := fnv.New64a()
	var b [8]byte
	h := s.hash()
	for i := range b {
		b[i] = byte(h >> (8 * i))
	}
	_, _ = f.Write(b[:])
	_, _ = f.Write([]byte(key))
	return &logState{prev: s, key: key, n: s.len() + 1, h: f.Sum64()}
}

// at returns the keys at seqs from..from+len(want)-1 match want.
func (s *logState) matches(from uint64, want []string) bool {
	if len(want) == 0 {
		return true
	}
	end := from + uint64(len(want)) - 1
	if from < 1 || end > s.len() {
		return false
	}
	cur := s
	for cur.n > end {
		cur = cur.prev
	}
	for i := len(want) - 1; i >= 0; i-- {
		if cur.key != want[i] {
			return false
		}
		cur = cur.prev
	}
	return true
}

// logInput is an append (a publish, maybe conditional) or a read.
type logInput struct {
	read   bool
	key    string
	expect *uint64
	from   uint64
	keys   []string
}

// logOutput is what the operation returned; unknown means no reply said.
type logOutput struct {
	unknown  bool
	conflict bool
	seq      uint64
	last     uint64
}

var logModel = porcupine.Model{
	Init: func() any { return (*logState)(nil) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(*logState), input.(logInput), output.(logOutput)
		n := s.len()
		if in.read {
			return n == out.last && s.matches(in.from, in.keys), s
		}
		applies := in.expect == nil || *in.expect == n
		switch {
		case out.unknown:
			if applies {
				return true, s.push(in.key)
			}
			return true, s
		case out.conflict:
			return !applies && n == out.last, s
		default:
			return applies && out.seq == n+1, s.push(in.key)
		}
	},
	Equal: func(a, b any) bool {
		x, y := a.(*logState), b.(*logState)
		return x.len() == y.len() && x.hash() == y.hash()
	},
	Hash: func(state any) uint64 { return state.(*logState).hash() },
	DescribeOperation: func(input, output any) string {
		in, out := input.(logInput), output.(logOutput)
		if in.read {
			return fmt.Sprintf("read(from %d) → %s, last %d", in.from, shortList(in.keys), out.last)
		}
		call := fmt.Sprintf("publish(%s)", in.key)
		if in.expect != nil {
			call = fmt.Sprintf("publish(%s, expect %d)", in.key, *in.expect)
		}
		switch {
		case out.unknown:
			return call + " → ?"
		case out.conflict:
			return fmt.Sprintf("%s → conflict, last %d", call, out.last)
		}
		return fmt.Sprintf("%s → seq %d", call, out.seq)
	},
	DescribeState: func(state any) string {
		s := state.(*logState)
		if s == nil {
			return "[]"
		}
		return fmt.Sprintf("[%d events, last %s]", s.n, s.key)
	},
}

func shortList(keys []string) string {
	if len(keys) <= 4 {
		return "[" + strings.Join(keys, " ") + "]"
	}
	return fmt.Sprintf("[%s %s … %s] (%d)", keys[0], keys[1], keys[len(keys)-1], len(keys))
}

// setInput is a join, a leave (by the member's socket, or by the node on
// its own: a closed socket, an expired lease) or a member list.
type setInput struct {
	op     string // join, leave, members
	member string
}

type setOutput struct {
	unknown   bool
	notMember bool // a leave refused because the member was not in
	members   string
}

// setState is a sorted, comma-joined member list.
func setAdd(s, m string) string {
	ms := splitSet(s)
	if !slices.Contains(ms, m) {
		ms = append(ms, m)
		sort.Strings(ms)
	}
	return strings.Join(ms, ",")
}

func setDel(s, m string) string {
	return strings.Join(slices.DeleteFunc(splitSet(s), func(x string) bool { return x == m }), ",")
}

func setHas(s, m string) bool { return slices.Contains(splitSet(s), m) }

func splitSet(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

var setModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(setInput), output.(setOutput)
		switch in.op {
		case FJoin:
			return true, setAdd(s, in.member)
		case FLeave:
			switch {
			case out.unknown:
				return true, setDel(s, in.member)
			case out.notMember:
				return !setHas(s, in.member), s
			}
			return setHas(s, in.member), setDel(s, in.member)
		default:
			return s == out.members, s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(setInput), output.(setOutput)
		switch {
		case in.op == FMembers:
			return fmt.Sprintf("members → {%s}", out.members)
		case out.unknown:
			return fmt.Sprintf("%s(%s) → ?", in.op, in.member)
		case out.notMember:
			return fmt.Sprintf("%s(%s) → not a member", in.op, in.member)
		}
		return fmt.Sprintf("%s(%s) → ok", in.op, in.member)
	},
	DescribeState: func(state any) string { return "{" + state.(string) + "}" },
}

// RoomVerdict is porcupine's answer for one room.
type RoomVerdict struct {
	Room    string  `json:"room"`
	Model   string  `json:"model"`
	Ops     int     `json:"ops"`
	Verdict string  `json:"verdict"` // ok, illegal, unknown (timed out: inconclusive)
	Seconds float64 `json:"seconds"`
	HTML    string  `json:"html,omitempty"`
}

// LinearResult is the linearizability verdict of every room.
type LinearResult struct {
	Rooms   []RoomVerdict `json:"rooms"`
	OK      int           `json:"ok"`
	Illegal int           `json:"illegal"`
	Unknown int           `json:"unknown"`
}

// roomHistory is one room's operations for porcupine.
type roomHistory struct {
	room  string
	model string
	ops   []porcupine.Operation
}

// linearHistories turns a history into porcupine operations per room.
func (ix *index) linearHistories() []roomHistory {
	never := ix.maxTime + 1 // an operation that may take effect at any later time
	byRoom := map[string]*roomHistory{}
	get := func(room, model string) *roomHistory {
		rh := byRoom[room]
		if rh == nil {
			rh = &roomHistory{room: room, model: model}
			byRoom[room] = rh
		}
		return rh
	}
	isSet := map[string]bool{}
	for i := range ix.h {
		op := &ix.h[i]
		if op.F == FJoin || op.F == FLeave || op.F == FMembers || op.F == FFinalMembers {
			isSet[op.Room] = true
		}
	}
	for _, v := range ix.order {
		p := ix.pubs[v]
		if isSet[p.room] {
			continue
		}
		in := logInput{key: v, expect: p.attempts[0].ExpectSeq}
		o := porcupine.Operation{ClientId: max(p.attempts[0].Process, 0), Input: in, Call: p.start}
		switch {
		case p.acked != nil:
			o.Output, o.Return = logOutput{seq: p.acked.Seq}, p.acked.End
		case p.conflict != nil:
			o.Output, o.Return = logOutput{conflict: true, last: p.conflict.LastSeq}, p.conflict.End
		case p.status() == TypeInfo:
			o.Output, o.Return = logOutput{unknown: true}, never
		default:
			continue // certainly failed: no effect to check
		}
		o.Metadata = v
		get(p.room, "log").ops = append(get(p.room, "log").ops, o)
	}
	for i := range ix.h {
		op := &ix.h[i]
		client := max(op.Process, 0)
		switch op.F {
		case FRead, FFinalRead:
			if op.Type != TypeOK || isSet[op.Room] {
				continue
			}
			keys := make([]string, len(op.Events))
			from := max(op.FromSeq, 1)
			for j, e := range op.Events {
				keys[j] = evKey(e)
				if j == 0 {
					from = e.Seq
				}
			}
			get(op.Room, "log").ops = append(get(op.Room, "log").ops, porcupine.Operation{ClientId: client,
				Input: logInput{read: true, from: from, keys: keys}, Call: op.Start,
				Output: logOutput{last: op.LastSeq}, Return: op.End, Metadata: fmt.Sprintf("op %d on %s", op.ID, op.Node)})
		case FJoin, FLeave:
			out := setOutput{}
			ret := op.End
			switch {
			case op.Type == TypeOK:
			case op.Type == TypeInfo:
				out.unknown, ret = true, never
			case op.F == FLeave && op.Error == "not_found":
				out.notMember = true
			default:
				continue
			}
			get(op.Room, "set").ops = append(get(op.Room, "set").ops, porcupine.Operation{ClientId: client,
				Input: setInput{op: op.F, member: op.Value}, Call: op.Start, Output: out, Return: ret,
				Metadata: fmt.Sprintf("op %d on %s", op.ID, op.Node)})
		case FMembers, FFinalMembers:
			if op.Type != TypeOK {
				continue
			}
			ms := slices.Clone(op.Members)
			sort.Strings(ms)
			get(op.Room, "set").ops = append(get(op.Room, "set").ops, porcupine.Operation{ClientId: client,
				Input: setInput{op: FMembers}, Call: op.Start, Output: setOutput{members: strings.Join(ms, ",")},
				Return: op.End, Metadata: fmt.Sprintf("op %d on %s at seq %d", op.ID, op.Node, op.Seq)})
		}
	}
	for room := range isSet {
		ix.nodeLeaves(get(room, "set"), never)
	}
	var out []roomHistory
	for _, rh := range byRoom {
		out = append(out, *rh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].room < out[j].room })
	return out
}

// nodeLeaves adds the leaves no client asked for (a node leaving rooms for
// a closed socket, or for an expired lease), found in the final history.
// Each may have happened any time after every operation below its seq
// began and before any operation above it (or a member list at or above
// it) ended.
func (ix *index) nodeLeaves(rh *roomHistory, never int64) {
	ref := ix.finalOp[rh.room]
	if ref == nil {
		return
	}
	explicit := map[uint64]bool{}
	type mark struct {
		seq        uint64
		start, end int64
	}
	var marks []mark
	for i := range ix.h {
		op := &ix.h[i]
		if op.Room != rh.room || op.Type != TypeOK {
			continue
		}
		switch op.F {
		case FLeave:
			explicit[op.Seq] = true
			marks = append(marks, mark{op.Seq, op.Start, op.End})
		case FJoin, FPublish:
			marks = append(marks, mark{op.Seq, op.Start, op.End})
		case FMembers, FFinalMembers:
			// A list at seq s was read after s was appended.
			marks = append(marks, mark{op.Seq, -1, op.End})
		}
	}
	for _, e := range ref.Events {
		if e.Type != "leave" || explicit[e.Seq] {
			continue
		}
		lo, hi := int64(0), never
		for _, m := range marks {
			if m.seq < e.Seq && m.start > lo {
				lo = m.start
			}
			if m.seq > e.Seq && m.start >= 0 && m.end < hi {
				hi = m.end
			}
			if m.seq >= e.Seq && m.start < 0 && m.end < hi {
				hi = m.end
			}
		}
		rh.ops = append(rh.ops, porcupine.Operation{ClientId: 0, Input: setInput{op: FLeave, member: e.Member},
			Call: lo, Output: setOutput{}, Return: max(hi, lo), Metadata: fmt.Sprintf("node's leave at seq %d", e.Seq)})
	}
}

// CheckLinear runs porcupine on every room, each within timeout, and
// writes the visualization of every room found illegal into dir (when
// dir is not empty).
func CheckLinear(h History, timeout time.Duration, dir string) LinearResult {
	ix := newIndex(h)
	rhs := ix.linearHistories()
	verdicts := make([]RoomVerdict, len(rhs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(runtime.GOMAXPROCS(0)-1, 1))
	for i, rh := range rhs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			verdicts[i] = checkRoom(rh, timeout, dir)
		}()
	}
	wg.Wait()
	var r LinearResult
	r.Rooms = verdicts
	for _, v := range verdicts {
		switch v.Verdict {
		case "ok":
			r.OK++
		case "illegal":
			r.Illegal++
		default:
			r.Unknown++
		}
	}
	return r
}

func checkRoom(rh roomHistory, timeout time.Duration, dir string) RoomVerdict {
	model := logModel
	if rh.model == "set" {
		model = setModel
	}
	v := RoomVerdict{Room: rh.room, Model: rh.model, Ops: len(rh.ops)}
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(model, rh.ops, timeout)
	v.Seconds = time.Since(start).Seconds()
	switch res {
	case porcupine.Ok:
		v.Verdict = "ok"
	case porcupine.Illegal:
		v.Verdict = "illegal"
		if dir != "" {
			_, info := porcupine.CheckOperationsVerbose(model, rh.ops, timeout)
			path := filepath.Join(dir, "linear-"+safeName(rh.room)+".html")
			if f, err := os.Create(path); err == nil {
				if porcupine.Visualize(model, info, f) == nil {
					v.HTML = filepath.Base(path)
				}
				_ = f.Close()
			}
		}
	default:
		v.Verdict = "unknown"
	}
	return v
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
