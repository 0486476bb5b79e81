package jepsen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"time"
)

// Functions of operations. A publish with ExpectSeq is a conditional
// publish; the others name what the request did.
const (
	FPublish      = "publish"
	FRead         = "read"    // a linearizable history page
	FMembers      = "members" // a linearizable member list
	FJoin         = "join"
	FLeave        = "leave"
	FSubscribe    = "subscribe" // one (re)subscribe of a subscriber
	FDeliver      = "deliver"   // one event pushed to a subscription
	FFinalRead    = "final-read"
	FFinalStale   = "final-stale" // a replica's own view, after the cluster settled
	FFinalMembers = "final-members"
	FFault        = "fault" // a nemesis action: Value says what, [Start, End] when
	FPhase        = "phase" // a point in the run: Value names it
)

// Phases of a run, recorded as FPhase operations.
const (
	PhaseWorkload  = "workload"   // clients start
	PhaseFinalHeal = "final-heal" // every fault healed for good
	PhaseQuiesce   = "quiesce"    // clients stop starting operations
	PhaseFinal     = "final"      // final reads begin
)

// Outcomes of operations, as in Jepsen: ok took effect, fail certainly did
// not, info may or may not have.
const (
	TypeOK   = "ok"
	TypeFail = "fail"
	TypeInfo = "info"
)

// Processes that are not clients.
const (
	NemesisProcess = -1 // faults and phases
	FinalProcess   = -2 // the final reads
)

// Ev is one room event as a client saw it.
type Ev struct {
	Seq    uint64 `json:"seq"`
	Type   string `json:"type,omitempty"` // message (default), join, leave
	Member string `json:"member,omitempty"`
	Value  string `json:"value,omitempty"` // a message's data, as the string the harness published
}

// Op is one request and its outcome, or one delivered event, or one fault.
// Times are nanoseconds since the run began.
type Op struct {
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Node    string `json:"node,omitempty"`
	F       string `json:"f"`
	Room    string `json:"room,omitempty"`
	Type    string `json:"type"`
	Start   int64  `json:"start"`
	End     int64  `json:"end"`

	// Value is what a publish published (and its key is the same), the
	// member a join or leave was for, or a fault's description.
	Value     string  `json:"value,omitempty"`
	Key       string  `json:"key,omitempty"`
	ExpectSeq *uint64 `json:"expect_seq,omitempty"`
	FromSeq   uint64  `json:"from_seq,omitempty"`

	Seq       uint64   `json:"seq,omitempty"`
	LastSeq   uint64   `json:"last_seq,omitempty"`
	Duplicate bool     `json:"duplicate,omitempty"`
	Error     string   `json:"error,omitempty"` // protocol code, or timeout / conn
	Message   string   `json:"message,omitempty"`
	Events    []Ev     `json:"events,omitempty"`
	Members   []string `json:"members,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`

	// Sub is the logical subscriber of a subscribe or deliver; Stream is
	// the subscribe op whose socket subscription delivered the event.
	Sub    int `json:"sub,omitempty"`
	Stream int `json:"stream,omitempty"`
	// Fault names a fault's kind (partition, kill, ...); Nodes its targets.
	Fault string   `json:"fault,omitempty"`
	Nodes []string `json:"nodes,omitempty"`
	// Failover, for a pause of a node that led data groups: seconds from
	// the SIGSTOP until every one of them had a leader on another node
	// (-1: not before the heal).
	Failover float64 `json:"failover,omitempty"`
}

// Conditional reports whether op is a conditional publish.
func (op *Op) Conditional() bool { return op.F == FPublish && op.ExpectSeq != nil }

// History is every operation of a run, in the order they were invoked.
type History []Op

// Recorder collects a run's history from many goroutines.
type Recorder struct {
	t0 time.Time // set at construction, read-only after
	// mu guards next, ops and open.
	mu   sync.Mutex
	next int
	ops  []Op
	// open holds invoked operations until they complete.
	open map[int]*Op
}

// NewRecorder starts a history whose times count from now.
func NewRecorder() *Recorder {
	return &Recorder{t0: time.Now(), open: map[int]*Op{}}
}

// Now is the time since the run began.
func (r *Recorder) Now() int64 { return int64(time.Since(r.t0)) }

// Invoke records the start of op and returns its id.
func (r *Recorder) Invoke(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	op.ID = r.next
	op.Start = r.Now()
	r.open[op.ID] = &op
	return op.ID
}

// Complete records the outcome of an invoked operation; fill sets its
// result fields.
func (r *Recorder) Complete(id int, typ string, fill func(*Op)) {
	end := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	op := r.open[id]
	if op == nil {
		return
	}
	delete(r.open, id)
	op.Type = typ
	op.End = end
	if fill != nil {
		fill(op)
	}
	r.ops = append(r.ops, *op)
}

// Record adds an operation that completed at once (a delivered event).
func (r *Recorder) Record(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	op.ID = r.next
	if op.Start == 0 {
		op.Start = r.Now()
	}
	if op.End == 0 {
		op.End = op.Start
	}
	r.ops = append(r.ops, op)
}

// History returns what was recorded, sorted by ID; operations still open
// are reported as info, ending now.
func (r *Recorder) History() History {
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	h := slices.Clone(r.ops)
	for _, op := range r.open {
		o := *op
		o.Type, o.End, o.Error = TypeInfo, now, "unfinished"
		h = append(h, o)
	}
	sort.Slice(h, func(i, j int) bool { return h[i].ID < h[j].ID })
	return h
}

// line is one line of history.jsonl: an operation's invocation or its
// completion, as Jepsen writes them.
type line struct {
	Index int    `json:"index"`
	Time  int64  `json:"time"`
	Phase string `json:"phase"` // invoke or complete
	Op
}

// WriteJSONL writes h as alternating invocations and completions in time
// order, one JSON object a line. Invocations carry the request, completions
// the whole operation.
func (h History) WriteJSONL(w io.Writer) error {
	var lines []line
	for _, op := range h {
		inv := Op{ID: op.ID, Process: op.Process, Node: op.Node, F: op.F, Room: op.Room, Type: "invoke",
			Start: op.Start, Value: op.Value, Key: op.Key, ExpectSeq: op.ExpectSeq, FromSeq: op.FromSeq,
			Sub: op.Sub, Stream: op.Stream, Fault: op.Fault, Nodes: op.Nodes}
		lines = append(lines, line{Time: op.Start, Phase: "invoke", Op: inv}, line{Time: op.End, Phase: "complete", Op: op})
	}
	sort.SliceStable(lines, func(i, j int) bool {
		if lines[i].Time != lines[j].Time {
			return lines[i].Time < lines[j].Time
		}
		return lines[i].Phase == "invoke" && lines[j].Phase != "invoke"
	})
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range lines {
		lines[i].Index = i
		if err := enc.Encode(&lines[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadJSONL reads a history written by WriteJSONL: the completions, which
// hold every field.
func ReadJSONL(r io.Reader) (History, error) {
	var h History
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	n := 0
	for sc.Scan() {
		n++
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("history line %d: %w", n, err)
		}
		if l.Phase == "complete" {
			h = append(h, l.Op)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(h, func(i, j int) bool { return h[i].ID < h[j].ID })
	return h, nil
}

// LoadHistory reads a run folder's history.jsonl.
func LoadHistory(path string) (History, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadJSONL(f)
}
