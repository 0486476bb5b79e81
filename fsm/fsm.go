package fsm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/sstcheck"
)

// FSM is the state machine of one raft group: every room whose name hashes
// to the group. It implements raft.BatchingFSM. Apply, ApplyBatch, Snapshot
// and Restore must be called from one goroutine at a time (raft's FSM
// goroutine); the read methods (History, Members, Room, Rooms, Subscribe)
// are safe for concurrent use with them and with each other.
type FSM struct {
	// db to logger are set at construction, read-only after.
	db     *badger.DB
	cuts   *sstcheck.Ledger // the store's record of cut table blocks
	keys   keyspace
	group  uint64
	cfg    Config
	logger *slog.Logger

	// applyMu serializes the apply-side methods. The fields below it are
	// owned by whoever holds it.
	applyMu  sync.Mutex
	applied  appliedState
	defaults RoomConfig
	// defaults and ns are written under mu too, for the readers that
	// resolve a room's config. ns is the group's namespace rules; nil until
	// a namespaces command, and while nil every room's stored config is its
	// whole config, as before rules existed.
	ns *Namespaces
	// dirty names rooms with swept-but-not-yet-deleted keys below their
	// windows; graves lists deleted incarnations whose keys remain.
	dirty  map[string]struct{}
	graves map[string]graveRef
	// failed is the storage error that stopped the FSM, if any.
	failed error
	// spare is the last committed tx, kept for newTx to reuse its maps
	// and slices.
	spare *tx
	// damaged is the first corruption found in the group's stored data
	// (ErrCorrupt), by a read or an apply; nil while none was.
	damaged atomic.Pointer[error]

	// needsRestore is set while the state is incomplete (see ErrNeedsRestore).
	needsRestore atomic.Bool
	appliedIndex atomic.Uint64
	closed       atomic.Bool

	// mu guards rooms (and every room's fields and members), nodes and subs.
	// The apply goroutine is the only writer; it takes mu only to install a
	// committed batch, and reads without it.
	mu    sync.RWMutex
	rooms map[string]*room
	// nodes indexes ephemeral members by the node holding them.
	nodes map[string]map[memberRef]struct{}
	subs  subscribers
}

// room is a room's committed state in memory.
type room struct {
	roomRecord
	members map[string]*Member
}

type memberRef struct {
	room   string
	member string
}

type graveRef struct {
	room  string
	epoch uint64
}

var (
	_ raft.BatchingFSM = (*FSM)(nil)
	_ raft.FSMSnapshot = (*snapshot)(nil)
)

// New opens the state machine of cfg.Group on store (zero fields of cfg
// take DefaultConfig's values), loading what is already applied, so a
// restarted node does not apply entries twice.
func New(store *Store, cfg Config) (*FSM, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &FSM{
		db:     store.db,
		cuts:   store.cuts,
		keys:   keyspace{prefix: groupPrefix(cfg.Group)},
		group:  cfg.Group,
		cfg:    cfg,
		logger: cfg.Logger.With("group", cfg.Group),
	}
	f.subs.init()
	err := f.load()
	if why := store.cuts.Damaged(f.group, f.keyPrefixes()...); why != "" {
		// What loaded may be incomplete, or older versions of cut keys.
		err = fmt.Errorf("%w: %s", ErrCorrupt, why)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("fsm: load group %d: %w", cfg.Group, err)
		}
		// A damaged group still opens, refusing reads and applies, so its
		// host can report it and rebuild it from the other replicas; an
		// error here would only keep the replica from starting at all.
		f.failed = f.noteCorrupt(err)
		f.appliedIndex.Store(0)
	}
	return f, nil
}

// Damaged returns the corruption that damaged the group's stored data
// (wrapping ErrCorrupt and naming the group), or nil. Once damaged the FSM
// refuses reads and applies until a snapshot restore replaces its state.
func (f *FSM) Damaged() error {
	if p := f.damaged.Load(); p != nil {
		return *p
	}
	return nil
}

// noteCorrupt records err as the group's damage when it is corruption,
// and returns err naming the group.
func (f *FSM) noteCorrupt(err error) error {
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return err
	}
	if p := f.damaged.Load(); p != nil && err == *p {
		return err
	}
	err = fmt.Errorf("group %d: %w", f.group, err)
	if f.damaged.CompareAndSwap(nil, &err) {
		f.logger.Error("stored data is corrupt; the replica refuses reads and applies until it is repaired from its peers", "error", err)
	}
	return err
}

// NamespacesRevision is the revision of the group's namespace rules as
// applied on this replica, 0 before the first.
func (f *FSM) NamespacesRevision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.ns == nil {
		return 0
	}
	return f.ns.Revision
}

// effectiveConfig is the config a room follows: its stored config while the
// group has no namespace rules, else the rule for its name with the fields
// the room set itself on top. A combination that would not validate (a
// rule and a room's own setting together leaving the key window without
// bounds) keeps the room's stored config, which was valid when stored.
func effectiveConfig(ns *Namespaces, defaults RoomConfig, name string, r *roomRecord) RoomConfig {
	if ns == nil {
		return r.Config
	}
	c := ns.Resolve(name, defaults).merge(r.Config, r.OwnMask)
	if c.Validate() != nil {
		return r.Config
	}
	return c
}

// AppliedIndex is the index of the last log entry whose effects are stored.
// It is 0 while the FSM needs a restore. A host that starts raft with
// NoSnapshotRestoreOnStart must restore the latest snapshot when this is
// below the snapshot's index.
func (f *FSM) AppliedIndex() uint64 { return f.appliedIndex.Load() }

// Err returns the storage error that stopped the FSM, or nil.
func (f *FSM) Err() error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	return f.failed
}

// Close ends every subscription with ErrClosed; later applies and reads
// fail with ErrClosed. It does not close the Store, which other groups
// share. Close is idempotent.
func (f *FSM) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.mu.Lock()
	f.subs.closeAll(ErrClosed)
	f.mu.Unlock()
	return nil
}

// Drop closes the FSM and deletes the group's state from the store, for a
// replica that has been moved off this node or is rebuilt.
func (f *FSM) Drop() error {
	f.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if err := f.clearGroup(); err != nil {
		return fmt.Errorf("fsm: drop group %d: %w", f.group, err)
	}
	mark := restoreMarkKey(f.group)
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Delete(mark) }); err != nil {
		return fmt.Errorf("fsm: drop group %d: %w", f.group, err)
	}
	return f.forgetCuts()
}

// keyPrefixes are the prefixes of every key the group owns in the store.
func (f *FSM) keyPrefixes() [][]byte {
	return [][]byte{f.keys.prefix, restoreMarkKey(f.group)}
}

// forgetCuts records that the group's keys were all replaced, so table
// blocks cut out before no longer damage it. The replacement is made
// durable first (the store does not sync its writes): were the record
// to outlive a lost replacement, older versions of cut keys would be
// served as the group's state.
func (f *FSM) forgetCuts() error {
	if f.cuts.Damaged(f.group, f.keyPrefixes()...) == "" {
		return nil
	}
	if err := f.db.Sync(); err != nil {
		return fmt.Errorf("fsm: group %d: sync the store: %w", f.group, err)
	}
	if err := f.cuts.Dropped(f.group, f.keyPrefixes()...); err != nil {
		return fmt.Errorf("fsm: group %d: %w", f.group, err)
	}
	return nil
}

// Apply applies one committed entry; see ApplyBatch.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order and returns one *Result per
// command entry (nil for raft's own entries and for entries applied before
// a restart). Entries at or below AppliedIndex are skipped: raft replays
// them after a restart and they are already stored.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if err := f.refuseApply(); err != nil {
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				results[i] = &Result{Err: err}
			}
		}
		return results
	}
	t := f.newTx()
	firstInTx := 0
	for i, l := range logs {
		if l.Index <= t.applied.Index {
			continue
		}
		if t.full() {
			if !f.commit(t, results[firstInTx:i], logs[firstInTx:i]) {
				return f.failRest(results, logs, i)
			}
			t = f.newTx()
			firstInTx = i
		}
		t.begin(l)
		if l.Type == raft.LogCommand {
			results[i] = t.applyEntry(l.Data)
		}
	}
	if !f.commit(t, results[firstInTx:], logs[firstInTx:]) {
		return f.failRest(results, logs, len(logs))
	}
	return results
}

func (f *FSM) refuseApply() error {
	switch {
	case f.closed.Load():
		return ErrClosed
	case f.failed != nil:
		return fmt.Errorf("%w: %v", ErrStorage, f.failed)
	case f.needsRestore.Load():
		return ErrNeedsRestore
	}
	return nil
}

// failRest marks the commands from index i on as not applied after a
// storage failure; commit already marked its own.
func (f *FSM) failRest(results []any, logs []*raft.Log, i int) []any {
	for ; i < len(logs); i++ {
		if logs[i].Type == raft.LogCommand {
			results[i] = &Result{Err: fmt.Errorf("%w: %v", ErrStorage, f.failed)}
		}
	}
	return results
}

// commit writes t to badger in one transaction, then installs it in memory
// and tells subscribers. On failure it marks the FSM failed, replaces the
// results of t's commands with ErrStorage and returns false.
func (f *FSM) commit(t *tx, results []any, logs []*raft.Log) bool {
	defer f.release(t)
	defer t.read.Discard()
	if t.applied.Index == f.applied.Index {
		return true // nothing was applied
	}
	t.sweep(f.cfg.SweepBudget)
	err := t.write()
	if err != nil {
		err = f.noteCorrupt(err)
		f.failed = err
		f.logger.Error("state machine stopped: storage write failed; the group must be recovered from a snapshot",
			"error", err, "index", t.applied.Index)
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				results[i] = &Result{Err: fmt.Errorf("%w: %v", ErrStorage, err)}
			}
		}
		return false
	}
	f.install(t)
	return true
}

// install makes a written tx visible to readers and delivers its events.
func (f *FSM) install(t *tx) {
	f.mu.Lock()
	for name, tr := range t.rooms {
		cur := f.rooms[name]
		if cur != nil && (!tr.exists || cur.Epoch != tr.rec.Epoch) {
			f.unindexRoomLocked(name, cur)
			delete(f.rooms, name)
			cur = nil
		}
		if !tr.exists {
			continue
		}
		if cur == nil {
			cur = &room{members: make(map[string]*Member)}
			f.rooms[name] = cur
		}
		cur.roomRecord = tr.rec
	}
	for ref, m := range t.members {
		r := f.rooms[ref.room]
		if r == nil || r.Epoch != ref.epoch {
			continue // the incarnation was deleted later in the same tx
		}
		if old := r.members[ref.member]; old != nil {
			f.unindexMemberLocked(ref.room, old)
		}
		if m == nil {
			delete(r.members, ref.member)
			continue
		}
		r.members[ref.member] = m
		f.indexMemberLocked(ref.room, m)
	}
	for _, ev := range t.events {
		f.subs.deliverLocked(ev)
	}
	if t.defaults != nil {
		f.defaults = *t.defaults
	}
	if t.ns != nil {
		f.ns = t.ns
	}
	f.mu.Unlock()
	f.applied = t.applied
	f.appliedIndex.Store(t.applied.Index)
}

func (f *FSM) indexMemberLocked(roomName string, m *Member) {
	if !m.Ephemeral {
		return
	}
	set := f.nodes[m.NodeID]
	if set == nil {
		set = make(map[memberRef]struct{})
		f.nodes[m.NodeID] = set
	}
	set[memberRef{room: roomName, member: m.Name}] = struct{}{}
}

func (f *FSM) unindexMemberLocked(roomName string, m *Member) {
	if !m.Ephemeral {
		return
	}
	set := f.nodes[m.NodeID]
	delete(set, memberRef{room: roomName, member: m.Name})
	if len(set) == 0 {
		delete(f.nodes, m.NodeID)
	}
}

func (f *FSM) unindexRoomLocked(name string, r *room) {
	for _, m := range r.members {
		f.unindexMemberLocked(name, m)
	}
}

// load reads the group's state from badger into memory.
func (f *FSM) load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms = make(map[string]*room)
	f.nodes = make(map[string]map[memberRef]struct{})
	f.dirty = make(map[string]struct{})
	f.graves = make(map[string]graveRef)
	f.applied = appliedState{}
	f.defaults = DefaultRoomConfig
	f.ns = nil
	f.appliedIndex.Store(0)

	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	if _, err := txn.Get(restoreMarkKey(f.group)); err == nil {
		f.needsRestore.Store(true)
		f.logger.Warn("a snapshot restore did not finish; the group needs a new restore")
		return nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	f.needsRestore.Store(false)
	if v, err := getValue(txn, f.keys.applied()); err != nil {
		return err
	} else if v != nil {
		if f.applied, err = decodeApplied(v); err != nil {
			return corrupt("applied state", f.keys.applied(), err)
		}
	}
	if v, err := getValue(txn, f.keys.defaults()); err != nil {
		return err
	} else if v != nil {
		if f.defaults, err = decodeRoomConfig(v); err != nil {
			return corrupt("group defaults", f.keys.defaults(), err)
		}
	}
	if v, err := getValue(txn, f.keys.namespaces()); err != nil {
		return err
	} else if v != nil {
		if f.ns, err = decodeNamespaces(v); err != nil {
			return corrupt("namespaces", f.keys.namespaces(), err)
		}
	}
	if err := f.loadRooms(txn); err != nil {
		return err
	}
	tail := f.newTails(txn, true)
	for name, r := range f.rooms {
		tail.recover(name, &r.roomRecord)
	}
	tail.close()
	if err := f.loadMembers(txn); err != nil {
		return err
	}
	for name, r := range f.rooms {
		if uint64(len(r.members)) != r.MemberCount {
			return corrupt("room", f.keys.room(name), fmt.Errorf("member count %d, %d members stored", r.MemberCount, len(r.members)))
		}
		if r.PhysFirstSeq < r.FirstSeq || r.PhysKeyFirst < r.KeyFirst {
			f.dirty[name] = struct{}{}
		}
	}
	err := scanPrefix(txn, f.keys.kind(kindGrave), false, func(k, _ []byte) error {
		name, rest, ok := f.keys.parseRoomKey(k, kindGrave)
		if !ok || len(rest) != 8 {
			return corrupt("grave", k, errors.New("bad key"))
		}
		f.graves[string(k)] = graveRef{room: name, epoch: beUint64(rest)}
		return nil
	})
	if err != nil {
		return err
	}
	f.appliedIndex.Store(f.applied.Index)
	return nil
}

func (f *FSM) loadRooms(txn *badger.Txn) error {
	return scanPrefix(txn, f.keys.kind(kindRoom), true, func(k, v []byte) error {
		name, rest, ok := f.keys.parseRoomKey(k, kindRoom)
		if !ok || len(rest) != 0 {
			return corrupt("room", k, errors.New("bad key"))
		}
		rec, err := decodeRoom(v)
		if err != nil {
			return corrupt("room", k, err)
		}
		f.rooms[name] = &room{roomRecord: rec, members: make(map[string]*Member)}
		return nil
	})
}

func (f *FSM) loadMembers(txn *badger.Txn) error {
	return scanPrefix(txn, f.keys.kind(kindMember), true, func(k, v []byte) error {
		name, rest, ok := f.keys.parseRoomKey(k, kindMember)
		if !ok || len(rest) < 8 {
			return corrupt("member", k, errors.New("bad key"))
		}
		r := f.rooms[name]
		if r == nil || r.Epoch != beUint64(rest) {
			return nil // left over from a deleted incarnation, not yet swept
		}
		m, err := decodeMember(string(rest[8:]), v)
		if err != nil {
			return corrupt("member", k, err)
		}
		r.members[m.Name] = &m
		f.indexMemberLocked(name, &m)
		return nil
	})
}

// tails finds the last stored event and key ordinal of room incarnations.
// A commit rewrites a room record only when more than its LastSeq and
// KeyNext changed, so the stored ones may lag: the room's true LastSeq is
// the seq of its last stored event when that is larger, and its true
// KeyNext is one past its last stored key ordinal. That event and that
// ordinal are always stored, because everything that could delete them
// (trimming them out of their window, deleting the room) also rewrites or
// deletes the record.
type tails struct {
	events, order *badger.Iterator // order is nil when KeyNext is not needed
	keys          keyspace
	seek          []byte
}

func (f *FSM) newTails(txn *badger.Txn, withKeys bool) *tails {
	reverse := func(kind byte) *badger.Iterator {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = f.keys.kind(kind)
		opts.PrefetchValues = false
		opts.Reverse = true
		return txn.NewIterator(opts)
	}
	t := &tails{events: reverse(kindEvent), keys: f.keys}
	if withKeys {
		t.order = reverse(kindOrder)
	}
	return t
}

// recover raises r.LastSeq (and r.KeyNext, if asked for) to what the
// incarnation's stored events and key ordinals show.
func (t *tails) recover(name string, r *roomRecord) {
	if seq, ok := t.last(t.events, kindEvent, name, r.Epoch); ok && seq > r.LastSeq {
		r.LastSeq = seq
	}
	if t.order == nil {
		return
	}
	if ord, ok := t.last(t.order, kindOrder, name, r.Epoch); ok && ord >= r.KeyNext {
		r.KeyNext = ord + 1
	}
}

// last returns the largest seq or ordinal stored under an incarnation.
func (t *tails) last(it *badger.Iterator, kind byte, name string, epoch uint64) (uint64, bool) {
	prefix := t.keys.incarnation(kind, name, epoch)
	// A reverse seek lands on the largest key at or below its target, so
	// aim past every seq of the incarnation.
	t.seek = append(append(t.seek[:0], prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it.Seek(t.seek)
	if !it.ValidForPrefix(prefix) {
		return 0, false
	}
	k := it.Item().Key()
	if len(k) != len(prefix)+8 {
		return 0, false
	}
	return beUint64(k[len(prefix):]), true
}

func (t *tails) close() {
	t.events.Close()
	if t.order != nil {
		t.order.Close()
	}
}
