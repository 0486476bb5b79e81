package client

import (
	"slices"
	"testing"
)

// The resume rules, case by case: where a subscription stands after a
// node's answer, and which notices the application gets.
func TestCursorAnswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		before  cursor
		answer  subscribed
		after   cursor
		notices []notice
	}{
		{"resume in the same incarnation",
			cursor{epoch: 5, epochStr: "5", next: 10},
			subscribed{epoch: 5, epochStr: "5"},
			cursor{epoch: 5, epochStr: "5", next: 10}, nil},
		{"no epoch asked: the room's is the one",
			cursor{next: 1},
			subscribed{epoch: 7, epochStr: "7"},
			cursor{epoch: 7, epochStr: "7", next: 1}, nil},
		{"history cut below next",
			cursor{epoch: 5, epochStr: "5", next: 3},
			subscribed{epoch: 5, epochStr: "5", truncated: true, firstSeq: 8},
			cursor{epoch: 5, epochStr: "5", next: 8}, []notice{{KindTruncated, "5", 8}}},
		{"history cut, but not below next",
			cursor{epoch: 5, epochStr: "5", next: 9},
			subscribed{epoch: 5, epochStr: "5", truncated: true, firstSeq: 8},
			cursor{epoch: 5, epochStr: "5", next: 9}, nil},
		{"room made again since",
			cursor{epoch: 5, epochStr: "5", next: 9},
			subscribed{epoch: 12, epochStr: "12", epochChanged: true},
			cursor{epoch: 12, epochStr: "12", next: 1}, []notice{{KindEpochChanged, "12", 1}}},
		{"room made again, its start already trimmed",
			cursor{epoch: 5, epochStr: "5", next: 9},
			subscribed{epoch: 12, epochStr: "12", epochChanged: true, truncated: true, firstSeq: 4},
			cursor{epoch: 12, epochStr: "12", next: 4}, []notice{{KindEpochChanged, "12", 4}}},
		{"after a deletion notice, the new incarnation starts trimmed",
			cursor{epoch: 5, epochStr: "5", next: 9, deleted: true},
			subscribed{epoch: 12, epochStr: "12", epochChanged: true, truncated: true, firstSeq: 4},
			cursor{epoch: 12, epochStr: "12", next: 4}, []notice{{KindTruncated, "12", 4}}},
		{"room gone, none replaced it",
			cursor{epoch: 5, epochStr: "5", next: 9},
			subscribed{epochChanged: true},
			cursor{epoch: 5, epochStr: "5", next: 9, deleted: true}, []notice{{KindRoomDeleted, "5", 8}}},
		{"room gone, already told",
			cursor{epoch: 5, epochStr: "5", next: 9, deleted: true},
			subscribed{epochChanged: true},
			cursor{epoch: 5, epochStr: "5", next: 9, deleted: true}, nil},
		{"an older incarnation than the one delivered is ignored",
			cursor{epoch: 12, epochStr: "12", next: 3},
			subscribed{epoch: 5, epochStr: "5", epochChanged: true},
			cursor{epoch: 12, epochStr: "12", next: 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.before
			got := c.answered(tc.answer)
			if c != tc.after || !slices.Equal(got, tc.notices) {
				t.Fatalf("cursor %+v, notices %v; want %+v, %v", c, got, tc.after, tc.notices)
			}
		})
	}
}

func TestCursorPushes(t *testing.T) {
	c := cursor{epoch: 5, epochStr: "5", next: 3}
	if v := c.event(2); v != repeat {
		t.Fatalf("seq below next: %v", v)
	}
	if v := c.event(4); v != gap {
		t.Fatalf("seq above next: %v", v)
	}
	if v := c.event(3); v != deliver {
		t.Fatalf("seq owed: %v", v)
	}
	if ok, ns := c.accept(4, "4"); ok || ns != nil {
		t.Fatal("an older incarnation's push was accepted")
	}
	if ns := c.truncated(5, "5", 7); c.next != 7 || !slices.Equal(ns, []notice{{KindTruncated, "5", 7}}) {
		t.Fatalf("truncated push: %+v, %v", c, ns)
	}
	// A newer incarnation's push without a deletion notice first: the
	// application still learns the old one ended.
	ok, ns := c.accept(9, "9")
	if !ok || c != (cursor{epoch: 9, epochStr: "9", next: 1}) || !slices.Equal(ns, []notice{{KindRoomDeleted, "5", 6}}) {
		t.Fatalf("newer push: %v %+v %v", ok, c, ns)
	}
	if ns := c.roomDeleted(9, "9", 4); !c.deleted || !slices.Equal(ns, []notice{{KindRoomDeleted, "9", 4}}) {
		t.Fatalf("room deleted: %+v %v", c, ns)
	}
	if ns := c.roomDeleted(9, "9", 4); ns != nil {
		t.Fatal("a second deletion notice of the same incarnation")
	}
	if ok, _ := c.accept(9, "9"); ok {
		t.Fatal("a push of a deleted incarnation was accepted")
	}
}
