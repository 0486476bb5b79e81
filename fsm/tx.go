package fsm

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// tx is the overlay one commit builds: the commands of a run of log entries
// read through it (their own earlier writes first, then the committed
// state) and write into it. Nothing reaches badger or readers until commit,
// so a batch is atomic with the applied index written beside it.
type tx struct {
	f    *FSM
	read *badger.Txn // the committed state as of the tx's start
	// applied is the progress after the latest entry in the tx; now is its
	// clock, the log time commands see.
	applied appliedState
	now     int64

	// writes are the pending changes in order, at most one per key;
	// written indexes them by key.
	writes     []pending
	written    map[string]int
	writeBytes int
	rooms      map[string]*txRoom
	// roomSlab backs the txRooms, a batch's worth per allocation rather
	// than one per touched room.
	roomSlab []txRoom
	members  map[memberKey]*Member // nil: removed
	events   []Event
	defaults *RoomConfig
	ns       *Namespaces
	// err is the first read failure; the tx is then not committed.
	err error

	maxWrites, maxBytes int
}

// pending is one change of a tx: a set, or a delete when value is nil.
type pending struct {
	key, value []byte
}

type txRoom struct {
	rec    roomRecord
	exists bool
}

type memberKey struct {
	room   string
	epoch  uint64
	member string
}

// newTx starts the tx of the next commit. It reuses the maps and slices
// of the previous one: most commits carry one or a few entries, and making
// a batch's worth of them per commit was most of the garbage a node made
// while publishing (and so most of its GC work).
func (f *FSM) newTx() *tx {
	t := f.spare
	f.spare = nil
	if t == nil {
		t = &tx{
			written: make(map[string]int),
			rooms:   make(map[string]*txRoom),
			members: make(map[memberKey]*Member),
		}
	}
	*t = tx{
		f:        f,
		read:     f.db.NewTransaction(false),
		applied:  f.applied,
		now:      f.applied.Clock,
		writes:   t.writes[:0],
		written:  t.written,
		rooms:    t.rooms,
		roomSlab: t.roomSlab[:0],
		members:  t.members,
		events:   t.events[:0],
		// Leave half of badger's transaction limits as headroom: a tx is
		// cut before an entry once past this, and no one command (bounded
		// by the Max* constants) writes more than the rest.
		maxWrites: int(f.db.MaxBatchCount() / 2),
		maxBytes:  int(f.db.MaxBatchSize() / 2),
	}
	return t
}

// reuseLimit bounds what a tx may have held to be kept for reuse: the
// maps of a large restore-sized batch would otherwise stay allocated, and
// clearing them would cost every later commit.
const reuseLimit = 1024

// release keeps a finished tx for the next newTx, dropping its references
// to keys, values, rooms and events so that they can be collected.
func (f *FSM) release(t *tx) {
	if cap(t.writes) > reuseLimit || len(t.written) > reuseLimit || len(t.rooms) > reuseLimit ||
		len(t.members) > reuseLimit || cap(t.events) > reuseLimit || cap(t.roomSlab) > reuseLimit {
		return
	}
	clear(t.writes[:cap(t.writes)])
	clear(t.written)
	clear(t.rooms)
	clear(t.roomSlab[:cap(t.roomSlab)])
	clear(t.members)
	clear(t.events[:cap(t.events)])
	t.read, t.defaults, t.ns, t.err = nil, nil, nil, nil
	f.spare = t
}

// begin starts applying entry l: its index and the log clock.
func (t *tx) begin(l *raft.Log) {
	t.applied.Index, t.applied.Term = l.Index, l.Term
	if !l.AppendedAt.IsZero() {
		if ns := l.AppendedAt.UnixNano(); ns > t.applied.Clock {
			t.applied.Clock = ns
		}
	}
	t.now = t.applied.Clock
}

// full reports that the tx should be committed before another entry.
func (t *tx) full() bool {
	return len(t.written)+len(t.rooms) >= t.maxWrites || t.writeBytes >= t.maxBytes
}

func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *tx) get(key []byte) []byte {
	if i, ok := t.written[string(key)]; ok {
		return t.writes[i].value
	}
	v, err := getValue(t.read, key)
	if err != nil {
		t.fail(fmt.Errorf("read %q: %w", key, err))
	}
	return v
}

// set records a change; the tx owns key and value from here on.
func (t *tx) set(key, value []byte) {
	t.writeBytes += len(key) + len(value)
	if i, ok := t.written[string(key)]; ok {
		t.writes[i].value = value
		return
	}
	t.written[string(key)] = len(t.writes)
	t.writes = append(t.writes, pending{key: key, value: value})
}

func (t *tx) del(key []byte) { t.set(key, nil) }

// lookup returns the room as the tx sees it, without registering a change.
func (t *tx) lookup(name string) (roomRecord, bool) {
	if tr, ok := t.rooms[name]; ok {
		return tr.rec, tr.exists
	}
	if r := t.f.rooms[name]; r != nil {
		return r.roomRecord, true
	}
	return roomRecord{}, false
}

// touch returns the tx's changeable copy of a room (exists is false if
// there is no such room).
func (t *tx) touch(name string) *txRoom {
	if tr, ok := t.rooms[name]; ok {
		return tr
	}
	if len(t.roomSlab) == cap(t.roomSlab) {
		t.roomSlab = make([]txRoom, 0, 64)
	}
	t.roomSlab = append(t.roomSlab, txRoom{})
	tr := &t.roomSlab[len(t.roomSlab)-1]
	if r := t.f.rooms[name]; r != nil {
		tr.rec, tr.exists = r.roomRecord, true
	}
	t.rooms[name] = tr
	return tr
}

func (t *tx) namespaces() *Namespaces {
	if t.ns != nil {
		return t.ns
	}
	return t.f.ns
}

// config is the config the room follows now (see effectiveConfig).
func (t *tx) config(name string, r *roomRecord) RoomConfig {
	return effectiveConfig(t.namespaces(), t.currentDefaults(), name, r)
}

func (t *tx) currentDefaults() RoomConfig {
	if t.defaults != nil {
		return *t.defaults
	}
	return t.f.defaults
}

// create starts a new incarnation of a room; its epoch is the index of the
// entry that created it, so no two incarnations share one.
func (t *tx) create(name string) *txRoom {
	tr := t.touch(name)
	tr.exists = true
	tr.rec = roomRecord{
		Epoch:        t.applied.Index,
		FirstSeq:     1,
		KeyFirst:     1,
		KeyNext:      1,
		PhysFirstSeq: 1,
		PhysKeyFirst: 1,
		Config:       t.currentDefaults(),
	}
	return tr
}

// member returns a member of a room incarnation, or nil.
func (t *tx) member(name string, epoch uint64, member string) *Member {
	if m, ok := t.members[memberKey{name, epoch, member}]; ok {
		return m
	}
	if r := t.f.rooms[name]; r != nil && r.Epoch == epoch {
		return r.members[member]
	}
	return nil
}

func (t *tx) putMember(name string, epoch uint64, m *Member) {
	t.members[memberKey{name, epoch, m.Name}] = m
	t.set(t.f.keys.member(name, epoch, m.Name), m.encode())
}

func (t *tx) removeMember(name string, epoch uint64, member string) {
	t.members[memberKey{name, epoch, member}] = nil
	t.del(t.f.keys.member(name, epoch, member))
}

// write commits the tx to badger: every change, the touched rooms whose
// record changed beyond LastSeq and KeyNext, and the applied state in one
// transaction.
func (t *tx) write() error {
	if t.err != nil {
		return t.err
	}
	keys := t.f.keys
	for name, tr := range t.rooms {
		if !tr.exists {
			t.del(keys.room(name))
		} else if !t.f.storedRecordHolds(name, &tr.rec) {
			t.set(keys.room(name), tr.rec.encode())
		}
	}
	if t.defaults != nil {
		t.set(keys.defaults(), encodeRoomConfig(*t.defaults))
	}
	if t.ns != nil {
		t.set(keys.namespaces(), encodeNamespaces(t.ns))
	}
	t.set(keys.applied(), t.applied.encode())
	w := t.f.db.NewTransaction(true)
	defer w.Discard()
	for _, p := range t.writes {
		var err error
		if p.value == nil {
			err = w.Delete(p.key)
		} else {
			err = w.Set(p.key, p.value)
		}
		if err != nil {
			return fmt.Errorf("write batch of %d keys up to index %d: %w", len(t.writes), t.applied.Index, err)
		}
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("commit batch up to index %d: %w", t.applied.Index, err)
	}
	return nil
}

// storedRecordHolds reports that the stored record of a room still
// describes rec once LastSeq and KeyNext are recovered from the room's last
// event and key ordinal (see tails): only those two moved since the
// committed state, which the stored record matches in every other field.
// Skipping the rewrite saves one badger write per publishing room and
// batch, a third of what an unkeyed publish writes.
func (f *FSM) storedRecordHolds(name string, rec *roomRecord) bool {
	cur := f.rooms[name]
	if cur == nil {
		return false
	}
	stored := cur.roomRecord
	stored.LastSeq, stored.KeyNext = rec.LastSeq, rec.KeyNext
	return stored == *rec
}
