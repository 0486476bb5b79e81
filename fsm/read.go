package fsm

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// DefaultHistoryLimit is the page size of a History call with limit 0.
const DefaultHistoryLimit = 100

// RoomInfo describes a room's current state.
type RoomInfo struct {
	Room  string
	Epoch uint64
	// LastSeq is the seq of the room's latest event (0 if none yet).
	LastSeq uint64
	// FirstSeq is the first seq still in history; FirstSeq > LastSeq means
	// the history is empty.
	FirstSeq    uint64
	MemberCount int
	// Config is what the room follows: its namespace's rule with its own
	// settings (OwnFields) on top.
	Config    RoomConfig
	OwnFields ConfigField
}

// EventOverheadBytes is what an event costs in a page beyond its stored
// record and its room's name: the fields a reader frames it with (seq,
// epoch, timestamp, keys). Byte-bounded pages count it so that a page of
// many tiny events is bounded too.
const EventOverheadBytes = 128

// History is one page of a room's events.
type History struct {
	Epoch    uint64
	FirstSeq uint64 // first seq still in history
	LastSeq  uint64 // the room's last seq
	// Truncated is true when the caller asked for seqs below FirstSeq: they
	// were trimmed and the page starts at FirstSeq instead.
	Truncated bool
	Events    []Event // in seq order, without gaps
	// Bytes is what the page's events count against a byte bound: each
	// one's stored record, its room's name and EventOverheadBytes. It is
	// set by the read itself and not carried by an encoded answer.
	Bytes int
}

// More reports whether the room had events after this page when it was
// read: the next page starts at the last event's seq + 1.
func (h *History) More() bool {
	return len(h.Events) > 0 && h.Events[len(h.Events)-1].Seq < h.LastSeq
}

// Members is a room's member list at one seq.
type Members struct {
	Epoch   uint64
	Seq     uint64   // the room's last seq when the list was taken
	Members []Member // sorted by name; Meta is read-only
}

func (f *FSM) checkReadable() error {
	if f.closed.Load() {
		return ErrClosed
	}
	if f.needsRestore.Load() {
		return ErrNeedsRestore
	}
	// A damaged replica serves nothing, not even what it could still read:
	// another replica has all of it right.
	return f.Damaged()
}

// Room returns a room's state, or ErrRoomNotFound.
func (f *FSM) Room(name string) (RoomInfo, error) {
	if err := f.checkReadable(); err != nil {
		return RoomInfo{}, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.rooms[name]
	if r == nil {
		return RoomInfo{}, fmt.Errorf("%w: %q", ErrRoomNotFound, name)
	}
	return r.info(f, name), nil
}

// info needs f.mu held, which guards the rules and defaults it resolves.
func (r *room) info(f *FSM, name string) RoomInfo {
	return RoomInfo{Room: name, Epoch: r.Epoch, LastSeq: r.LastSeq, FirstSeq: r.FirstSeq,
		MemberCount: len(r.members), Config: effectiveConfig(f.ns, f.defaults, name, &r.roomRecord),
		OwnFields: r.OwnMask}
}

// Rooms returns the names of all rooms, sorted.
func (f *FSM) Rooms() ([]string, error) {
	if err := f.checkReadable(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	names := make([]string, 0, len(f.rooms))
	for name := range f.rooms {
		names = append(names, name)
	}
	f.mu.RUnlock()
	sort.Strings(names)
	return names, nil
}

// Members returns a room's members, or ErrRoomNotFound.
func (f *FSM) Members(name string) (Members, error) {
	if err := f.checkReadable(); err != nil {
		return Members{}, err
	}
	f.mu.RLock()
	r := f.rooms[name]
	if r == nil {
		f.mu.RUnlock()
		return Members{}, fmt.Errorf("%w: %q", ErrRoomNotFound, name)
	}
	out := Members{Epoch: r.Epoch, Seq: r.LastSeq, Members: make([]Member, 0, len(r.members))}
	for _, m := range r.members {
		out.Members = append(out.Members, *m)
	}
	f.mu.RUnlock()
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })
	return out, nil
}

// History returns up to limit events of a room starting at fromSeq (0: the
// first available; limit 0: DefaultHistoryLimit). It reads one consistent
// view of the store, so the page and its bounds agree.
func (f *FSM) History(name string, fromSeq uint64, limit int) (History, error) {
	return f.HistoryBytes(name, fromSeq, limit, 0)
}

// HistoryBytes is History with the page also bounded in bytes: it stops
// before the event that would take the page's Bytes over maxBytes (0: no
// bound). The bound is checked against each record's stored size before
// its value is read, so an oversized page is never built. The page always
// holds at least one event when the room has one at or after fromSeq, so
// a reader paging on makes progress even past an event above the bound.
func (f *FSM) HistoryBytes(name string, fromSeq uint64, limit, maxBytes int) (_ History, err error) {
	defer func() { err = f.noteCorrupt(err) }()
	if err := f.checkReadable(); err != nil {
		return History{}, err
	}
	if limit < 0 {
		return History{}, fmt.Errorf("%w: negative history limit %d", ErrInvalid, limit)
	}
	if maxBytes < 0 {
		return History{}, fmt.Errorf("%w: negative history byte bound %d", ErrInvalid, maxBytes)
	}
	if limit == 0 {
		limit = DefaultHistoryLimit
	}
	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	v, err := getValue(txn, f.keys.room(name))
	if err != nil {
		return History{}, err
	}
	if v == nil {
		return History{}, fmt.Errorf("%w: %q", ErrRoomNotFound, name)
	}
	rec, err := decodeRoom(v)
	if err != nil {
		return History{}, corrupt("room", f.keys.room(name), err)
	}
	tail := f.newTails(txn, false)
	tail.recover(name, &rec)
	tail.close()
	h := History{Epoch: rec.Epoch, FirstSeq: rec.FirstSeq, LastSeq: rec.LastSeq}
	start := fromSeq
	if start < rec.FirstSeq {
		h.Truncated = fromSeq != 0
		start = rec.FirstSeq
	}
	if start > rec.LastSeq {
		return h, nil
	}
	end := min(rec.LastSeq, start+uint64(limit)-1)
	if h.Events, h.Bytes, err = f.readEvents(txn, name, rec.Epoch, start, end, maxBytes); err != nil {
		return History{}, err
	}
	return h, nil
}

// readEvents reads events [from, to] of an incarnation, which must all be
// stored: a gap means the store is damaged. With maxBytes > 0 it stops
// early, after at least one event, before the bytes read would pass it.
func (f *FSM) readEvents(txn *badger.Txn, name string, epoch, from, to uint64, maxBytes int) ([]Event, int, error) {
	// The capacity is a guess, not the range: a byte-bounded page of big
	// events holds far fewer than the range, and a range of 1,000 events
	// must not cost a 1,000-slot allocation per tiny page.
	events := make([]Event, 0, min(to-from+1, 64))
	total := 0
	prefix := f.keys.incarnation(kindEvent, name, epoch)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	want := from
	for it.Seek(f.keys.event(name, epoch, from)); it.ValidForPrefix(prefix) && want <= to; it.Next() {
		item := it.Item()
		key := item.Key()
		if len(key) != len(prefix)+8 || beUint64(key[len(prefix):]) != want {
			break
		}
		size := int(item.ValueSize()) + len(name) + EventOverheadBytes
		if maxBytes > 0 && len(events) > 0 && total+size > maxBytes {
			return events, total, nil
		}
		total += size
		ev := Event{Room: name, Epoch: epoch, Seq: want}
		err := item.Value(func(v []byte) error {
			ts, err := decodeEvent(v, &ev)
			ev.Time = time.Unix(0, ts).UTC()
			return err
		})
		if err != nil {
			return nil, 0, corrupt("event", key, err)
		}
		events = append(events, ev)
		want++
	}
	if want <= to {
		return nil, 0, corrupt("event", f.keys.event(name, epoch, want), errors.New("missing inside the room's window"))
	}
	return events, total, nil
}
