package wsfront

// subSet is a socket's subscriptions by room. Most sockets subscribe to
// one room, so that one is held inline and a map is made only for a
// second: the map cost each such socket about 250 bytes
// (docs/benchmarks.md). The zero value is empty; it is guarded by its
// session's mu.
type subSet struct {
	one  *subscription // the only subscription while many is nil
	many map[string]*subscription
}

func (s *subSet) get(room string) *subscription {
	if s.many != nil {
		return s.many[room]
	}
	if s.one != nil && s.one.room == room {
		return s.one
	}
	return nil
}

// put makes sub the subscription of its room, replacing any other.
func (s *subSet) put(sub *subscription) {
	switch {
	case s.many != nil:
		s.many[sub.room] = sub
	case s.one == nil || s.one.room == sub.room:
		s.one = sub
	default:
		s.many = map[string]*subscription{s.one.room: s.one, sub.room: sub}
		s.one = nil
	}
}

// remove drops sub if it is still its room's subscription.
func (s *subSet) remove(sub *subscription) {
	switch {
	case s.many != nil:
		if s.many[sub.room] == sub {
			delete(s.many, sub.room)
		}
	case s.one == sub:
		s.one = nil
	}
}

func (s *subSet) len() int {
	if s.many != nil {
		return len(s.many)
	}
	if s.one != nil {
		return 1
	}
	return 0
}

// each calls fn for every subscription, in no particular order.
func (s *subSet) each(fn func(*subscription)) {
	if s.one != nil {
		fn(s.one)
	}
	for _, sub := range s.many {
		fn(sub)
	}
}
