package fsm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// applyEntry decodes and applies one command entry. A command that cannot
// be decoded changes nothing, on every replica alike.
func (t *tx) applyEntry(data []byte) *Result {
	c, err := decodeCommand(data, true)
	if err != nil {
		t.f.logger.Warn("skipping undecodable log entry", "index", t.applied.Index, "error", err)
		return &Result{Err: err}
	}
	res := t.apply(&c)
	res.Op = c.Op
	if t.err != nil {
		res.Err = fmt.Errorf("%w: %v", ErrStorage, t.err)
	}
	return res
}

func (t *tx) apply(c *Command) *Result {
	switch c.Op {
	case OpJoin:
		return t.join(c)
	case OpLeave:
		return t.leave(c)
	case OpPublish:
		return t.publish(c)
	case OpRoomConfig:
		return t.roomConfig(c)
	case OpRoomDelete:
		return t.roomDelete(c)
	case OpExpireNode:
		return t.expireNode(c)
	case OpTick:
		return t.tick(c)
	case OpGroupDefaults:
		return t.groupDefaults(c)
	case OpNamespaces:
		return t.setNamespaces(c)
	}
	return &Result{Err: fmt.Errorf("%w: unknown op %d", ErrBadCommand, uint8(c.Op))}
}

func invalid(format string, args ...any) *Result {
	return &Result{Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)}
}

// checkName validates a room or member name: non-empty UTF-8 without C0
// control characters or DEL, so it prints and keys safely everywhere. It is
// part of the replicated behaviour and must not tighten; the entry points
// refuse more (CheckRoomName).
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalid, what)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s name is not valid UTF-8", ErrInvalid, what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s name %q contains a control character", ErrInvalid, what, s)
		}
	}
	return nil
}

func checkNames(room, member string) *Result {
	if err := checkName("room", room); err != nil {
		return &Result{Room: room, Err: err}
	}
	if err := checkName("member", member); err != nil {
		return &Result{Room: room, Err: err}
	}
	return nil
}

func (t *tx) join(c *Command) *Result {
	if res := checkNames(c.Room, c.Member); res != nil {
		return res
	}
	if c.Ephemeral && c.NodeID == "" {
		return invalid("ephemeral member %q needs a node id", c.Member)
	}
	rec, exists := t.lookup(c.Room)
	if exists && t.member(c.Room, rec.Epoch, c.Member) == nil {
		if max := t.config(c.Room, &rec).MaxMembers; max > 0 && rec.MemberCount >= max {
			return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
				Err: fmt.Errorf("%w: room %q has its maximum of %d members", ErrRoomFull, c.Room, max)}
		}
	}
	tr := t.touch(c.Room)
	if !tr.exists {
		tr = t.create(c.Room)
	}
	r := &tr.rec
	m := &Member{Name: c.Member, Meta: c.Meta, Ephemeral: c.Ephemeral}
	if t.config(c.Room, r).TransientPresence {
		m.JoinedSeq, m.JoinToken = r.LastSeq, joinToken(t.applied.Index)
		t.presenceEvent(c.Room, r, EventPresenceJoin, c.Member, c.Meta)
	} else {
		m.JoinedSeq = t.appendEvent(c.Room, r, EventJoin, c.Member, c.Meta)
	}
	if t.member(c.Room, r.Epoch, c.Member) == nil {
		r.MemberCount++
	}
	if c.Ephemeral {
		m.NodeID, m.NodeEpoch = c.NodeID, c.NodeEpoch
	}
	t.putMember(c.Room, r.Epoch, m)
	return &Result{Room: c.Room, Epoch: r.Epoch, Seq: m.JoinedSeq, JoinToken: m.JoinToken, LastSeq: r.LastSeq}
}

// joinToken names a join that took no seq. Seqs stay far below 2^63, so
// the top bit keeps tokens and seqs apart; the entry's index is unique in
// the group.
func joinToken(index uint64) uint64 { return 1<<63 | index }

// joinName shows a join's seq, or the index of a join that took none.
func joinName(token uint64) string {
	if token&(1<<63) != 0 {
		return fmt.Sprintf("at index %d (no seq)", token&^(1<<63))
	}
	return fmt.Sprintf("at seq %d", token)
}

// presenceEvent delivers a join or leave that takes no seq and is not
// stored.
func (t *tx) presenceEvent(name string, r *roomRecord, typ EventType, member string, data []byte) {
	t.events = append(t.events, Event{Room: name, Epoch: r.Epoch, Seq: r.LastSeq, Type: typ, Member: member,
		Data: data, Time: time.Unix(0, t.now).UTC()})
}

// leaveEvent records a member's leave the way the room's config says.
func (t *tx) leaveEvent(name string, r *roomRecord, member string) uint64 {
	if t.config(name, r).TransientPresence {
		t.presenceEvent(name, r, EventPresenceLeave, member, nil)
		return r.LastSeq
	}
	return t.appendEvent(name, r, EventLeave, member, nil)
}

func (t *tx) leave(c *Command) *Result {
	if res := checkNames(c.Room, c.Member); res != nil {
		return res
	}
	rec, ok := t.lookup(c.Room)
	var m *Member
	if ok {
		m = t.member(c.Room, rec.Epoch, c.Member)
	}
	if m == nil {
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
			Err: fmt.Errorf("%w: %q is not in room %q", ErrNotMember, c.Member, c.Room)}
	}
	if c.HasExpectSeq && m.token() != c.ExpectSeq {
		// The member joined again since the join this leave undoes (from
		// another socket, maybe another node): that membership stays.
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
			Err: fmt.Errorf("%w: %q joined room %q again %s, after the join %s", ErrConflict, c.Member, c.Room, joinName(m.token()), joinName(c.ExpectSeq))}
	}
	r := &t.touch(c.Room).rec
	seq := t.leaveEvent(c.Room, r, c.Member)
	t.removeMember(c.Room, r.Epoch, c.Member)
	r.MemberCount--
	return &Result{Room: c.Room, Epoch: r.Epoch, Seq: seq, LastSeq: r.LastSeq}
}

var plantedNoDedup func(key string) bool // see jepsenbug_nodedup.go

func (t *tx) publish(c *Command) *Result {
	if res := checkNames(c.Room, c.Member); res != nil {
		return res
	}
	rec, exists := t.lookup(c.Room)
	var config RoomConfig
	if exists {
		config = t.config(c.Room, &rec)
	} else {
		config = t.config(c.Room, &roomRecord{Config: t.currentDefaults()})
	}
	if c.FromClient && config.NoClientPublish {
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
			Err: fmt.Errorf("%w: room %q takes publishes from the backend only", ErrForbidden, c.Room)}
	}
	// A repeated key answers first: a retry of a conditional publish that
	// succeeded must see its own success, not a conflict with itself.
	if exists && c.Key != "" && (plantedNoDedup == nil || !plantedNoDedup(c.Key)) {
		if kr, ok := t.liveKey(c.Room, &rec, c.Key); ok {
			return &Result{Room: c.Room, Epoch: rec.Epoch, Seq: kr.Seq, Duplicate: true, LastSeq: rec.LastSeq}
		}
	}
	if config.MembersOnly && (!exists || t.member(c.Room, rec.Epoch, c.Member) == nil) {
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
			Err: fmt.Errorf("%w: room %q takes messages from members only and %q has not joined", ErrNotMember, c.Room, c.Member)}
	}
	if c.HasExpectSeq && rec.LastSeq != c.ExpectSeq {
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq,
			Err: fmt.Errorf("%w: room %q is at seq %d, expected %d", ErrConflict, c.Room, rec.LastSeq, c.ExpectSeq)}
	}
	tr := t.touch(c.Room)
	if !tr.exists {
		tr = t.create(c.Room)
	}
	r := &tr.rec
	seq := t.appendEvent(c.Room, r, EventMessage, c.Member, c.Data)
	if c.Key != "" {
		t.rememberKey(c.Room, r, c.Key, seq)
	}
	return &Result{Room: c.Room, Epoch: r.Epoch, Seq: seq, LastSeq: r.LastSeq}
}

// appendEvent gives the room its next seq, stores the event and trims the
// history to its count limit.
func (t *tx) appendEvent(name string, r *roomRecord, typ EventType, member string, data []byte) uint64 {
	r.LastSeq++
	seq := r.LastSeq
	if r.FirstSeq == seq { // the history was empty
		r.FirstTime = t.now
	}
	ev := Event{Room: name, Epoch: r.Epoch, Seq: seq, Type: typ, Member: member, Data: data, Time: time.Unix(0, t.now).UTC()}
	// One allocation holds both the key and the value.
	buf := make([]byte, 0, t.f.keys.eventKeyLen(name)+eventValueCap(&ev))
	key := t.f.keys.appendEvent(buf, name, r.Epoch, seq)
	t.set(key[:len(key):len(key)], appendEvent(key[len(key):], &ev, t.now))
	t.events = append(t.events, ev)
	t.trimCount(name, r)
	return seq
}

// trimCount enforces HistoryMaxCount and KeyWindowCount. Trimming moves
// the windows only; sweep deletes what falls out of them. FirstTime and
// KeyFirstTime stay valid lower bounds because times grow with seq.
func (t *tx) trimCount(name string, r *roomRecord) {
	config := t.config(name, r)
	if max := config.HistoryMaxCount; max > 0 && r.LastSeq-r.FirstSeq+1 > max {
		r.FirstSeq = r.LastSeq - max + 1
		t.f.dirty[name] = struct{}{}
	}
	if max := config.KeyWindowCount; max > 0 && r.KeyNext-r.KeyFirst > max {
		r.KeyFirst = r.KeyNext - max
		t.f.dirty[name] = struct{}{}
	}
}

// liveKey finds a key inside the room's window (by count and by age).
func (t *tx) liveKey(name string, r *roomRecord, key string) (keyRecord, bool) {
	v := t.get(t.f.keys.idemKey(name, r.Epoch, key))
	if v == nil {
		return keyRecord{}, false
	}
	kr, err := decodeKeyRecord(v)
	if err != nil {
		t.fail(corrupt("key", t.f.keys.idemKey(name, r.Epoch, key), err))
		return keyRecord{}, false
	}
	if kr.Ordinal < r.KeyFirst || kr.Ordinal >= r.KeyNext {
		return keyRecord{}, false
	}
	if age := t.config(name, r).KeyWindowAge; age > 0 && kr.Time < t.now-int64(age) {
		return keyRecord{}, false
	}
	return kr, true
}

func (t *tx) rememberKey(name string, r *roomRecord, key string, seq uint64) {
	ord := r.KeyNext
	r.KeyNext++
	if r.KeyFirst == ord {
		r.KeyFirstTime = t.now
	}
	t.set(t.f.keys.idemKey(name, r.Epoch, key), keyRecord{Seq: seq, Ordinal: ord, Time: t.now}.encode())
	t.set(t.f.keys.order(name, r.Epoch, ord), encodeOrder(key, t.now))
	t.trimCount(name, r)
}

func (t *tx) roomConfig(c *Command) *Result {
	if err := checkName("room", c.Room); err != nil {
		return &Result{Room: c.Room, Err: err}
	}
	rec, exists := t.lookup(c.Room)
	if !exists {
		rec = roomRecord{Config: t.currentDefaults()}
	}
	own := rec.Config.merge(c.Config, c.ConfigMask)
	next := own
	if ns := t.namespaces(); ns != nil {
		next = ns.Resolve(c.Room, t.currentDefaults()).merge(own, rec.OwnMask|c.ConfigMask)
	}
	if err := next.Validate(); err != nil {
		return &Result{Room: c.Room, Epoch: rec.Epoch, LastSeq: rec.LastSeq, Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	tr := t.touch(c.Room)
	if !tr.exists {
		tr = t.create(c.Room)
	}
	tr.rec.Config = own
	tr.rec.OwnMask |= c.ConfigMask
	t.trimCount(c.Room, &tr.rec)
	return &Result{Room: c.Room, Epoch: tr.rec.Epoch, LastSeq: tr.rec.LastSeq}
}

func (t *tx) groupDefaults(c *Command) *Result {
	next := t.currentDefaults().merge(c.Config, c.ConfigMask)
	if err := next.Validate(); err != nil {
		return &Result{Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	t.defaults = &next
	return &Result{}
}

// setNamespaces replaces the group's rules. They hold for every room from
// this entry on: configs are resolved when used, so no room record is
// rewritten, and histories over a new count limit are cut by the next
// append or tick.
func (t *tx) setNamespaces(c *Command) *Result {
	if cur := t.namespaces(); cur != nil && c.Namespaces.Revision <= cur.Revision {
		return &Result{} // an older or repeated set: already superseded
	}
	if err := c.Namespaces.Validate(t.currentDefaults()); err != nil {
		return invalid("%v", err)
	}
	ns := c.Namespaces
	ns.Rules = append([]Namespace(nil), ns.Rules...)
	t.ns = &ns
	return &Result{}
}

// roomDelete ends the room's incarnation at once; its stored keys become a
// grave that sweep removes over the next commits.
func (t *tx) roomDelete(c *Command) *Result {
	if err := checkName("room", c.Room); err != nil {
		return &Result{Room: c.Room, Err: err}
	}
	tr := t.touch(c.Room)
	if !tr.exists {
		return &Result{Room: c.Room, Err: fmt.Errorf("%w: %q", ErrRoomNotFound, c.Room)}
	}
	old := tr.rec
	tr.exists = false
	tr.rec = roomRecord{}
	// Keys this tx wrote for the incarnation are not in badger yet, where
	// the grave sweep looks; turn them into deletes here.
	for _, kind := range incarnationKinds {
		prefix := string(t.f.keys.incarnation(kind, c.Room, old.Epoch))
		for i := range t.writes {
			if p := &t.writes[i]; p.value != nil && strings.HasPrefix(string(p.key), prefix) {
				p.value = nil
			}
		}
	}
	g := t.f.keys.grave(c.Room, old.Epoch)
	t.set(g, []byte{graveVersion})
	t.f.graves[string(g)] = graveRef{room: c.Room, epoch: old.Epoch}
	delete(t.f.dirty, c.Room)
	t.events = append(t.events, Event{Room: c.Room, Epoch: old.Epoch, Seq: old.LastSeq, Type: EventRoomDeleted,
		Time: time.Unix(0, t.now).UTC()})
	return &Result{Room: c.Room, Epoch: old.Epoch, LastSeq: old.LastSeq}
}

// expireNode removes, in (room, member) order, up to Limit ephemeral
// members held by sessions of NodeID older than NodeEpoch.
func (t *tx) expireNode(c *Command) *Result {
	if c.NodeID == "" {
		return invalid("expire_node needs a node id")
	}
	limit := int(c.Limit)
	if limit == 0 || limit > MaxExpireLimit {
		limit = MaxExpireLimit
	}
	candidates := make(map[memberRef]struct{})
	for ref := range t.f.nodes[c.NodeID] {
		candidates[ref] = struct{}{}
	}
	for key, m := range t.members {
		if m != nil && m.Ephemeral && m.NodeID == c.NodeID {
			candidates[memberRef{room: key.room, member: key.member}] = struct{}{}
		}
	}
	var victims []memberRef
	for ref := range candidates {
		rec, ok := t.lookup(ref.room)
		if !ok {
			continue
		}
		m := t.member(ref.room, rec.Epoch, ref.member)
		if m != nil && m.Ephemeral && m.NodeID == c.NodeID && m.NodeEpoch < c.NodeEpoch {
			victims = append(victims, ref)
		}
	}
	sort.Slice(victims, func(i, j int) bool {
		if victims[i].room != victims[j].room {
			return victims[i].room < victims[j].room
		}
		return victims[i].member < victims[j].member
	})
	res := &Result{}
	if len(victims) > limit {
		victims, res.More = victims[:limit], true
	}
	for _, v := range victims {
		r := &t.touch(v.room).rec
		t.leaveEvent(v.room, r, v.member)
		t.removeMember(v.room, r.Epoch, v.member)
		r.MemberCount--
	}
	res.Removed = len(victims)
	return res
}

// tick enforces the age limits of history and key windows at the tx's
// clock, in room name order, for up to Limit rooms.
func (t *tx) tick(c *Command) *Result {
	limit := int(c.Limit)
	if limit == 0 || limit > MaxTickRooms {
		limit = MaxTickRooms
	}
	var due []string
	consider := func(name string, r *roomRecord) {
		if t.ageDue(name, r) || t.countDue(name, r) {
			due = append(due, name)
		}
	}
	for name, r := range t.f.rooms {
		if _, ok := t.rooms[name]; !ok {
			consider(name, &r.roomRecord)
		}
	}
	for name, tr := range t.rooms {
		if tr.exists {
			consider(name, &tr.rec)
		}
	}
	sort.Strings(due)
	res := &Result{}
	if len(due) > limit {
		due, res.More = due[:limit], true
	}
	for _, name := range due {
		r := &t.touch(name).rec
		t.trimAge(name, r)
		t.trimCount(name, r)
	}
	res.Removed = len(due)
	return res
}

// ageDue reports whether a window's lower time bound says its front may
// have expired; only then does tick read stored times.
func (t *tx) ageDue(name string, r *roomRecord) bool {
	config := t.config(name, r)
	if age := config.HistoryMaxAge; age > 0 && r.FirstSeq <= r.LastSeq && r.FirstTime < t.now-int64(age) {
		return true
	}
	if age := config.KeyWindowAge; age > 0 && r.KeyFirst < r.KeyNext && r.KeyFirstTime < t.now-int64(age) {
		return true
	}
	return false
}

// countDue reports a window over its count limit, which only a namespace
// rule lowering the limit leaves behind (appends and room_config trim at
// once).
func (t *tx) countDue(name string, r *roomRecord) bool {
	config := t.config(name, r)
	return (config.HistoryMaxCount > 0 && r.LastSeq+1-r.FirstSeq > config.HistoryMaxCount) ||
		(config.KeyWindowCount > 0 && r.KeyNext-r.KeyFirst > config.KeyWindowCount)
}

// trimAge advances the room's windows past every entry older than its age
// limits. Times grow with seq, so a binary search finds the new front in a
// logarithmic number of reads, and the lower bounds become exact.
func (t *tx) trimAge(name string, r *roomRecord) {
	config := t.config(name, r)
	if age := config.HistoryMaxAge; age > 0 && r.FirstSeq <= r.LastSeq {
		cutoff := t.now - int64(age)
		first, firstTime := t.searchTime(r.FirstSeq, r.LastSeq+1, cutoff, func(seq uint64) int64 {
			return t.eventTime(name, r.Epoch, seq)
		})
		r.FirstSeq = first
		if first <= r.LastSeq {
			r.FirstTime = firstTime
		}
	}
	if age := config.KeyWindowAge; age > 0 && r.KeyFirst < r.KeyNext {
		cutoff := t.now - int64(age)
		first, firstTime := t.searchTime(r.KeyFirst, r.KeyNext, cutoff, func(ord uint64) int64 {
			return t.orderTime(name, r.Epoch, ord)
		})
		r.KeyFirst = first
		if first < r.KeyNext {
			r.KeyFirstTime = firstTime
		}
	}
	if r.PhysFirstSeq < r.FirstSeq || r.PhysKeyFirst < r.KeyFirst {
		t.f.dirty[name] = struct{}{}
	}
}

// searchTime returns the first position in [lo, hi) whose time is at least
// cutoff (hi if none) and that time.
func (t *tx) searchTime(lo, hi uint64, cutoff int64, timeAt func(uint64) int64) (uint64, int64) {
	found := int64(0)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if ts := timeAt(mid); ts < cutoff {
			lo = mid + 1
		} else {
			hi, found = mid, ts
		}
	}
	return lo, found
}

func (t *tx) eventTime(name string, epoch, seq uint64) int64 {
	key := t.f.keys.event(name, epoch, seq)
	v := t.get(key)
	if v == nil {
		t.fail(corrupt("event", key, errors.New("missing inside the room's window")))
		return 0
	}
	var ev Event
	ts, err := decodeEvent(v, &ev)
	if err != nil {
		t.fail(corrupt("event", key, err))
	}
	return ts
}

func (t *tx) orderTime(name string, epoch, ord uint64) int64 {
	key := t.f.keys.order(name, epoch, ord)
	v := t.get(key)
	if v == nil {
		t.fail(corrupt("key order", key, errors.New("missing inside the room's key window")))
		return 0
	}
	_, ts, err := decodeOrder(v)
	if err != nil {
		t.fail(corrupt("key order", key, err))
	}
	return ts
}
