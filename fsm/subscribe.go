package fsm

// DefaultSubscriptionBuffer is the buffer of a subscription made with 0.
const DefaultSubscriptionBuffer = 1024

// Subscription receives a room's committed events (or every room's, for a
// group subscription) in seq order, starting right after the LastSeq that
// Subscribe returned. Delivery never blocks apply: when the buffer is full
// the subscription ends with ErrLagged, and the subscriber catches up from
// history and subscribes again. C is closed when the subscription ends;
// Err then says why.
type Subscription struct {
	C <-chan Event

	f    *FSM
	ch   chan Event
	room string // "" for the whole group
	err  error  // guarded by f.mu
}

type subscribers struct {
	byRoom map[string]map[*Subscription]struct{}
	all    map[*Subscription]struct{}
}

func (s *subscribers) init() {
	s.byRoom = make(map[string]map[*Subscription]struct{})
	s.all = make(map[*Subscription]struct{})
}

// Subscribe registers for a room's events ("" for every room of the
// group) with a buffer of the given size (0: DefaultSubscriptionBuffer).
// It returns the room's state at registration: every event after
// info.LastSeq of info.Epoch will be delivered. A room that does not exist
// yet has a zero Epoch; its first events are delivered when it is created.
func (f *FSM) Subscribe(room string, buffer int) (*Subscription, RoomInfo, error) {
	if err := f.checkReadable(); err != nil {
		return nil, RoomInfo{}, err
	}
	if buffer <= 0 {
		buffer = DefaultSubscriptionBuffer
	}
	ch := make(chan Event, buffer)
	s := &Subscription{C: ch, f: f, ch: ch, room: room}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return nil, RoomInfo{}, ErrClosed
	}
	info := RoomInfo{Room: room}
	if r := f.rooms[room]; r != nil {
		info = r.info(f, room)
	}
	if room == "" {
		f.subs.all[s] = struct{}{}
	} else {
		set := f.subs.byRoom[room]
		if set == nil {
			set = make(map[*Subscription]struct{})
			f.subs.byRoom[room] = set
		}
		set[s] = struct{}{}
	}
	return s, info, nil
}

// Err returns why the subscription ended (ErrLagged or ErrClosed), or nil
// while it is active.
func (s *Subscription) Err() error {
	s.f.mu.RLock()
	defer s.f.mu.RUnlock()
	return s.err
}

// Close ends the subscription; it is safe to call more than once.
func (s *Subscription) Close() {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.subs.endLocked(s, ErrClosed)
}

func (s *subscribers) endLocked(sub *Subscription, err error) {
	if sub.err != nil {
		return
	}
	sub.err = err
	if sub.room == "" {
		delete(s.all, sub)
	} else if set := s.byRoom[sub.room]; set != nil {
		delete(set, sub)
		if len(set) == 0 {
			delete(s.byRoom, sub.room)
		}
	}
	close(sub.ch)
}

func (s *subscribers) deliverLocked(ev Event) {
	for sub := range s.byRoom[ev.Room] {
		s.sendLocked(sub, ev)
	}
	for sub := range s.all {
		s.sendLocked(sub, ev)
	}
}

func (s *subscribers) sendLocked(sub *Subscription, ev Event) {
	select {
	case sub.ch <- ev:
	default:
		s.endLocked(sub, ErrLagged)
	}
}

func (s *subscribers) closeAll(err error) {
	for _, set := range s.byRoom {
		for sub := range set {
			s.endLocked(sub, err)
		}
	}
	for sub := range s.all {
		s.endLocked(sub, err)
	}
}
