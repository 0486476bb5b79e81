package wsfront

import "testing"

// subSet behaves as the map it replaces, through its move from one inline
// subscription to a map.
func TestSubSetActsAsAMap(t *testing.T) {
	var s subSet
	want := map[string]*subscription{}
	check := func(step string) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", step, s.len(), len(want))
		}
		for _, room := range []string{"a", "b", "c"} {
			if got := s.get(room); got != want[room] {
				t.Fatalf("%s: get(%s) = %p, want %p", step, room, got, want[room])
			}
		}
		seen := 0
		s.each(func(sub *subscription) {
			seen++
			if want[sub.room] != sub {
				t.Fatalf("%s: each gave %s's %p, want %p", step, sub.room, sub, want[sub.room])
			}
		})
		if seen != len(want) {
			t.Fatalf("%s: each gave %d, want %d", step, seen, len(want))
		}
	}
	put := func(room string) *subscription {
		sub := &subscription{room: room}
		s.put(sub)
		want[room] = sub
		return sub
	}
	remove := func(sub *subscription) {
		s.remove(sub)
		if want[sub.room] == sub {
			delete(want, sub.room)
		}
	}
	check("empty")
	a1 := put("a")
	check("one")
	a2 := put("a")
	check("one replaced")
	remove(a1) // no longer a's subscription: stays
	check("stale remove inline")
	remove(a2)
	check("emptied inline")
	put("a")
	b := put("b")
	check("two")
	put("c")
	check("three")
	remove(b)
	remove(b)
	check("removed from the map")
	stale := &subscription{room: "c"}
	remove(stale)
	check("stale remove from the map")
}
