// Package kvtest is the state machine multiraft's own tests replicate
// where they need no room semantics: per group, lists of items under keys.
// Appending an item a list already holds changes nothing and answers with
// the position it has, so a writer that retries an item until it is
// acknowledged commits it exactly once, as a client with idempotency keys
// does.
//
// It publishes its appends to subscribers (multiraft.EventSource), so the
// host's event streams can be tested with it too.
//
// An App keeps every group's state in memory across the host's restarts,
// as the node's own storage would on disk: a restarted replica reports
// what it applied and is not handed a snapshot it holds already. Apply is
// deterministic: it reads nothing but the command and the state.
package kvtest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/multiraft"
)

// ErrBadCommand is the result of a command the machine cannot decode.
var ErrBadCommand = errors.New("kvtest: bad command")

// sentinels travel in encoded results.
var sentinels = wire.Sentinels{nil, ErrBadCommand}

const (
	opAppend byte = 1 + iota
	opExpire
)

// expiredKey is the list ExpireNodeCommand appends to.
const expiredKey = "\x00expired"

// Append is the command that appends item to the list under key.
func Append(key, item string) []byte {
	e := wire.Encoder{Buf: []byte{opAppend}}
	e.String(key)
	e.String(item)
	return e.Buf
}

// Result is what a command returns (through Propose).
type Result struct {
	Index uint64 // the command's log index
	// Seq is the item's position in its list, from 1; Dup says it was
	// there already.
	Seq uint64
	Dup bool
	Err error
}

// App is a multiraft.Application of kvtest machines. Its zero value is
// ready to use; it must not be copied.
type App struct {
	mu     sync.Mutex
	groups map[uint64]*state // guarded by mu
}

var (
	_ multiraft.Application = (*App)(nil)
	_ multiraft.EventSource = (*App)(nil)
)

type state struct {
	mu      sync.Mutex // guards applied, lists and subs
	applied uint64
	lists   map[string][]string
	subs    map[*subscriber]struct{}
}

// subscriber receives the appends to one key (ServeEvents).
type subscriber struct {
	key    string
	events chan Event
	lagged bool // closed events because it fell behind
}

// subscriberBuffer is how many events a subscriber may fall behind before
// it is dropped.
const subscriberBuffer = 1024

// NewStateMachine implements multiraft.Application.
func (a *App) NewStateMachine(group uint64) (multiraft.StateMachine, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.groups == nil {
		a.groups = map[uint64]*state{}
	}
	st := a.groups[group]
	if st == nil {
		st = &state{lists: map[string][]string{}}
		a.groups[group] = st
	}
	return &Machine{app: a, group: group, st: st}, nil
}

// EncodeResult implements multiraft.Application.
func (*App) EncodeResult(result any) ([]byte, error) {
	r, ok := result.(*Result)
	if !ok {
		return nil, fmt.Errorf("kvtest: result %T", result)
	}
	var e wire.Encoder
	e.Uvarint(r.Index)
	e.Uvarint(r.Seq)
	e.Bool(r.Dup)
	e.Uvarint(uint64(sentinels.Code(r.Err)))
	msg := ""
	if r.Err != nil {
		msg = r.Err.Error()
	}
	e.String(msg)
	return e.Buf, nil
}

// DecodeResult implements multiraft.Application.
func (*App) DecodeResult(b []byte) (any, error) {
	r := wire.Reader{Buf: b}
	res := &Result{Index: r.Uvarint(), Seq: r.Uvarint(), Dup: r.Bool()}
	code, msg := r.Uvarint(), r.String(1<<16)
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("kvtest: decode result: %w", err)
	}
	if code != 0 || msg != "" {
		res.Err = sentinels.Error(code, msg)
	}
	return res, nil
}

// ExpireNodeCommand implements multiraft.Application: the machine keeps
// no ephemeral state, so it only records the expiry (Expired).
func (*App) ExpireNodeCommand(node string, before uint64) []byte {
	e := wire.Encoder{Buf: []byte{opExpire}}
	e.String(node)
	e.Uvarint(before)
	return e.Buf
}

// MoreToDo implements multiraft.Application.
func (*App) MoreToDo(any) bool { return false }

// Event is one append, as ServeEvents sends it (Encode).
type Event struct {
	Key  string
	Seq  uint64
	Item string
}

// Encode is the event as a stream carries it.
func (e Event) Encode() []byte {
	var w wire.Encoder
	w.String(e.Key)
	w.Uvarint(e.Seq)
	w.String(e.Item)
	return w.Buf
}

// DecodeEvent reads an event Encode wrote.
func DecodeEvent(b []byte) (Event, error) {
	r := wire.Reader{Buf: b}
	e := Event{Key: r.String(1 << 16), Seq: r.Uvarint(), Item: r.String(1 << 20)}
	if err := r.Done(); err != nil {
		return Event{}, fmt.Errorf("kvtest: decode event: %w", err)
	}
	return e, nil
}

// ErrLagged ends a stream of events whose subscriber fell behind.
var ErrLagged = errors.New("kvtest: event subscriber fell behind")

// ServeEvents implements multiraft.EventSource: it sends the appends to
// the key req names that sm applies from now on, until ctx ends.
func (*App) ServeEvents(ctx context.Context, sm multiraft.StateMachine, req []byte, send func([]byte) error) error {
	m, ok := sm.(*Machine)
	if !ok {
		return fmt.Errorf("kvtest: state machine %T", sm)
	}
	sub := &subscriber{key: string(req), events: make(chan Event, subscriberBuffer)}
	m.st.mu.Lock()
	if m.st.subs == nil {
		m.st.subs = map[*subscriber]struct{}{}
	}
	m.st.subs[sub] = struct{}{}
	m.st.mu.Unlock()
	defer func() {
		m.st.mu.Lock()
		delete(m.st.subs, sub)
		m.st.mu.Unlock()
	}()
	for {
		select {
		case e, ok := <-sub.events:
			if !ok {
				return ErrLagged
			}
			if err := send(e.Encode()); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// publishLocked hands e to the subscribers of its key without waiting: one
// that fell behind is dropped.
func (m *Machine) publishLocked(e Event) {
	for sub := range m.st.subs {
		if sub.key != e.Key || sub.lagged {
			continue
		}
		select {
		case sub.events <- e:
		default:
			sub.lagged = true
			close(sub.events)
		}
	}
}

// Machine is one group replica's state machine.
type Machine struct {
	app   *App
	group uint64
	st    *state
}

var _ multiraft.StateMachine = (*Machine)(nil)

// Apply implements raft.FSM.
func (m *Machine) Apply(l *raft.Log) any {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return m.applyLocked(l)
}

// ApplyBatch implements raft.BatchingFSM.
func (m *Machine) ApplyBatch(logs []*raft.Log) []any {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = m.applyLocked(l)
	}
	return out
}

func (m *Machine) applyLocked(l *raft.Log) any {
	if l.Index <= m.st.applied {
		// Held already: raft replays entries after the snapshot it
		// restored, which the kept state applied before the restart.
		return &Result{Index: l.Index}
	}
	m.st.applied = l.Index
	if l.Type != raft.LogCommand {
		return nil
	}
	res := &Result{Index: l.Index}
	r := wire.Reader{Buf: l.Data}
	switch op := r.Byte(); op {
	case opAppend:
		key, item := r.String(1<<16), r.String(1<<20)
		if err := r.Done(); err != nil {
			res.Err = fmt.Errorf("%w: %v", ErrBadCommand, err)
			return res
		}
		list := m.st.lists[key]
		if i := slices.Index(list, item); i >= 0 {
			res.Seq, res.Dup = uint64(i+1), true
			return res
		}
		m.st.lists[key] = append(list, item)
		res.Seq = uint64(len(list) + 1)
		m.publishLocked(Event{Key: key, Seq: res.Seq, Item: item})
	case opExpire:
		node, before := r.String(1<<16), r.Uvarint()
		if err := r.Done(); err != nil {
			res.Err = fmt.Errorf("%w: %v", ErrBadCommand, err)
			return res
		}
		m.st.lists[expiredKey] = append(m.st.lists[expiredKey], fmt.Sprintf("%s<%d", node, before))
	default:
		res.Err = fmt.Errorf("%w: op %d", ErrBadCommand, op)
	}
	return res
}

// AppliedIndex implements multiraft.StateMachine.
func (m *Machine) AppliedIndex() uint64 {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return m.st.applied
}

// Close implements multiraft.StateMachine; the state stays in the App.
func (m *Machine) Close() error { return nil }

// Drop forgets the group's state, as the host asks when the replica
// leaves the node.
func (m *Machine) Drop() error {
	m.app.mu.Lock()
	defer m.app.mu.Unlock()
	if m.app.groups[m.group] == m.st {
		delete(m.app.groups, m.group)
	}
	return nil
}

// Items returns the list under key.
func (m *Machine) Items(key string) []string {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return slices.Clone(m.st.lists[key])
}

// Expired lists the node expiries applied, as "node<before".
func (m *Machine) Expired() []string { return m.Items(expiredKey) }

// Digest is a hash of the state, equal on replicas that applied the same
// commands.
func (m *Machine) Digest() ([32]byte, error) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return sha256.Sum256(encodeLists(m.st.lists)), nil
}

func encodeLists(lists map[string][]string) []byte {
	keys := make([]string, 0, len(lists))
	for k := range lists {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var e wire.Encoder
	e.Uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.String(k)
		e.Uvarint(uint64(len(lists[k])))
		for _, item := range lists[k] {
			e.String(item)
		}
	}
	return e.Buf
}

// Snapshot implements raft.FSM.
func (m *Machine) Snapshot() (raft.FSMSnapshot, error) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	var e wire.Encoder
	e.Uvarint(m.st.applied)
	return snapshot(append(e.Buf, encodeLists(m.st.lists)...)), nil
}

// Restore implements raft.FSM.
func (m *Machine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("kvtest: read snapshot: %w", err)
	}
	r := wire.Reader{Buf: b}
	applied := r.Uvarint()
	lists := map[string][]string{}
	for range r.Count() {
		k := r.String(1 << 16)
		n := r.Count()
		list := make([]string, 0, n)
		for range n {
			list = append(list, r.String(1<<20))
		}
		lists[k] = list
	}
	if err := r.Done(); err != nil {
		return fmt.Errorf("kvtest: decode snapshot: %w", err)
	}
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	m.st.applied, m.st.lists = applied, lists
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshot) Release() {}
