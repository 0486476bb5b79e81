package rooms

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/multiraft"
)

func TestRoomQueryRoundTrip(t *testing.T) {
	for _, q := range []Query{
		{Kind: QueryHistory, Room: "lobby", FromSeq: 42, Limit: 10},
		{Kind: QueryHistory, Room: "lobby", FromSeq: 7, Limit: 1000, MaxBytes: 1 << 20},
		{Kind: QueryHistory, Room: "lobby"},
		{Kind: QueryHistory, Room: strings.Repeat("r", fsm.MaxRoomBytes), FromSeq: 1<<64 - 1, Limit: MaxQueryHistoryLimit},
		{Kind: QueryMembers, Room: "lobby"},
		{Kind: QueryRoom, Room: ""},
		{Kind: QueryRooms, Room: "team-", After: "team-b", Limit: 7},
		{Kind: QueryRooms},
	} {
		got, err := DecodeQuery(q.Encode())
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if got != q {
			t.Errorf("round trip of %+v gave %+v", q, got)
		}
	}
	// Limits outside 0..MaxQueryHistoryLimit cannot travel as they are.
	if got, _ := DecodeQuery(Query{Kind: QueryHistory, Room: "r", Limit: 1 << 40}.Encode()); got.Limit != MaxQueryHistoryLimit {
		t.Errorf("limit 1<<40 decoded as %d, want %d", got.Limit, MaxQueryHistoryLimit)
	}
	if got, _ := DecodeQuery(Query{Kind: QueryHistory, Room: "r", Limit: -5}.Encode()); got.Limit != 0 {
		t.Errorf("limit -5 decoded as %d, want 0 (the default page)", got.Limit)
	}
	if got, _ := DecodeQuery(Query{Kind: QueryHistory, Room: "r", MaxBytes: 1 << 40}.Encode()); got.MaxBytes != maxHistoryAnswerBytes {
		t.Errorf("max bytes 1<<40 decoded as %d, want %d", got.MaxBytes, maxHistoryAnswerBytes)
	}
}

// A node that predates the byte bound sends version 1 queries, without
// MaxBytes: they still decode, and get the default bound.
func TestDecodeRoomQueryVersion1(t *testing.T) {
	b := []byte{1, byte(QueryHistory)}
	b = wire.AppendString(b, "lobby")
	b = binary.AppendUvarint(b, 42)
	b = binary.AppendUvarint(b, 1000)
	q, err := DecodeQuery(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Query{Kind: QueryHistory, Room: "lobby", FromSeq: 42, Limit: 1000}
	if q != want {
		t.Fatalf("decoded %+v, want %+v", q, want)
	}
	if q.maxBytes() != DefaultQueryPageBytes {
		t.Errorf("a version 1 query gets a page bound of %d bytes, want %d", q.maxBytes(), DefaultQueryPageBytes)
	}
}

func TestDecodeRoomQueryRejectsMalformed(t *testing.T) {
	valid := Query{Kind: QueryHistory, Room: "lobby", FromSeq: 300, Limit: 20}.Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{9}, valid[1:]...),
		"unknown kind":   Query{Kind: 77, Room: "lobby"}.Encode(),
		"no kind":        Query{Room: "lobby"}.Encode(),
		"trailing bytes": append(bytes.Clone(valid), 0),
		"room too long":  Query{Kind: QueryRoom, Room: strings.Repeat("r", fsm.MaxRoomBytes+1)}.Encode(),
	}
	for i := range len(valid) {
		cases[fmt.Sprintf("cut at %d", i)] = valid[:i]
	}
	for name, b := range cases {
		if q, err := DecodeQuery(b); err == nil {
			t.Errorf("%s: decoded %+v", name, q)
		}
	}
}

// sampleAnswers covers every kind of answer, one of each error code
// included.
func sampleAnswers() []Answer {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123, time.UTC)
	return []Answer{
		{History: &fsm.History{Epoch: 2, FirstSeq: 3, LastSeq: 5, Truncated: true, Events: []fsm.Event{
			{Room: "lobby", Epoch: 2, Seq: 3, Type: fsm.EventJoin, Member: "alice", Data: []byte(`{"a":1}`), Time: at},
			{Room: "lobby", Epoch: 2, Seq: 4, Type: fsm.EventMessage, Member: "alice", Data: []byte("hi"), Time: at.Add(time.Second)},
			{Room: "lobby", Epoch: 2, Seq: 5, Type: fsm.EventLeave, Member: "alice", Time: at.Add(2 * time.Second)},
		}}},
		{History: &fsm.History{Epoch: 1, FirstSeq: 1}},
		{Members: &fsm.Members{Epoch: 2, Seq: 9, Members: []fsm.Member{
			{Name: "alice", Meta: []byte("presence"), Ephemeral: true, NodeID: "n1", NodeEpoch: 17, JoinedSeq: 3},
			{Name: "bob", JoinedSeq: 8},
		}}},
		{Members: &fsm.Members{Epoch: 1, Members: []fsm.Member{}}},
		{Room: &fsm.RoomInfo{Room: "lobby", Epoch: 2, LastSeq: 9, FirstSeq: 3, MemberCount: 2, Config: fsm.DefaultRoomConfig}},
		{Room: &fsm.RoomInfo{Room: "r", Config: fsm.RoomConfig{HistoryMaxAge: -time.Second, KeyWindowAge: time.Hour, MembersOnly: true}}},
		{Rooms: &RoomPage{More: true, Rooms: []fsm.RoomInfo{
			{Room: "a", Epoch: 1, LastSeq: 4, FirstSeq: 1, MemberCount: 3, Config: fsm.DefaultRoomConfig},
			{Room: "b", Config: fsm.RoomConfig{MembersOnly: true}}}}},
		{Rooms: &RoomPage{Rooms: []fsm.RoomInfo{}}},
		{},
	}
}

func TestRoomAnswerRoundTrip(t *testing.T) {
	for _, a := range sampleAnswers() {
		got, err := DecodeAnswer(EncodeAnswer(a))
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(a)) {
			t.Errorf("round trip of %s gave %s", show(a), show(got))
		}
	}
}

// normalize makes empty byte slices nil: the encoding does not tell them
// apart.
func normalize(a Answer) Answer {
	if a.History != nil {
		h := *a.History
		h.Events = nil
		for _, ev := range a.History.Events {
			if len(ev.Data) == 0 {
				ev.Data = nil
			}
			h.Events = append(h.Events, ev)
		}
		a.History = &h
	}
	return a
}

func show(a Answer) string {
	switch {
	case a.History != nil:
		return fmt.Sprintf("history %+v", *a.History)
	case a.Members != nil:
		return fmt.Sprintf("members %+v", *a.Members)
	case a.Room != nil:
		return fmt.Sprintf("room %+v", *a.Room)
	case a.Rooms != nil:
		return fmt.Sprintf("rooms %+v", *a.Rooms)
	}
	return fmt.Sprintf("err %v", a.Err)
}

func TestRoomAnswerErrorsKeepTheirKind(t *testing.T) {
	for _, sentinel := range []error{fsm.ErrRoomNotFound, fsm.ErrInvalid, fsm.ErrClosed, fsm.ErrNeedsRestore, fsm.ErrStorage} {
		for _, err := range []error{sentinel, fmt.Errorf("%w: %q", sentinel, "lobby"), fmt.Errorf("reading lobby: %w", sentinel)} {
			// A history that came with the error is not sent: Err wins.
			got, derr := DecodeAnswer(EncodeAnswer(Answer{Err: err, History: &fsm.History{}}))
			if derr != nil {
				t.Fatalf("%v: %v", err, derr)
			}
			if !errors.Is(got.Err, sentinel) || got.History != nil {
				t.Errorf("%v came back as %v (history %v), want errors.Is %v", err, got.Err, got.History, sentinel)
			}
			if got.Err.Error() != err.Error() {
				t.Errorf("message %q came back as %q", err, got.Err)
			}
		}
	}
	other := errors.New("disk on fire")
	got, err := DecodeAnswer(EncodeAnswer(Answer{Err: other}))
	if err != nil || got.Err == nil || got.Err.Error() != other.Error() {
		t.Fatalf("other error came back as %v (decode error %v)", got.Err, err)
	}
	for _, s := range answerErrors[1:] {
		if errors.Is(got.Err, s) {
			t.Errorf("an unknown error came back matching %v", s)
		}
	}
}

func TestHistoryAnswerKeepsToItsBudget(t *testing.T) {
	h := &fsm.History{Epoch: 1, FirstSeq: 1, LastSeq: 10}
	for i := range 10 {
		h.Events = append(h.Events, fsm.Event{Room: "r", Epoch: 1, Seq: uint64(i + 1), Type: fsm.EventMessage, Data: bytes.Repeat([]byte{'x'}, 100)})
	}
	for budget, want := range map[int]int{0: 1, 250: 2, 1 << 20: 10} {
		got, err := DecodeAnswer(encodeAnswer(Answer{History: h}, budget))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(got.History.Events); n != want || got.History.LastSeq != 10 {
			t.Errorf("budget %d: %d events, last seq %d; want %d events, last seq 10", budget, n, got.History.LastSeq, want)
		}
		for i, ev := range got.History.Events {
			if ev.Seq != uint64(i+1) {
				t.Errorf("budget %d: event %d has seq %d", budget, i, ev.Seq)
			}
		}
	}
}

func TestDecodeRoomAnswerRejectsMalformed(t *testing.T) {
	for _, a := range append(sampleAnswers(), Answer{Err: fsm.ErrRoomNotFound}) {
		b := EncodeAnswer(a)
		for i := range len(b) {
			if got, err := DecodeAnswer(b[:i]); err == nil {
				t.Errorf("%s cut at %d of %d bytes decoded as %s", show(a), i, len(b), show(got))
			}
		}
		if _, err := DecodeAnswer(append(bytes.Clone(b), 0)); err == nil {
			t.Errorf("%s with a trailing byte decoded", show(a))
		}
	}
	for name, b := range map[string][]byte{
		"version":      {9, answerEmpty},
		"unknown kind": {answerVersion, 99},
		// A count of a billion events in three bytes must fail, not allocate.
		"lying count": {answerVersion, answerHistory, 1, 1, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03, 1},
		"bad event":   {answerVersion, answerHistory, 1, 1, 1, 0, 1, 2, 9, 9},
		"bad bool":    {answerVersion, answerHistory, 1, 1, 1, 7, 0},
	} {
		if got, err := DecodeAnswer(b); err == nil {
			t.Errorf("%s: decoded %s", name, show(got))
		}
	}
}

func FuzzDecodeRoomQuery(f *testing.F) {
	f.Add(Query{Kind: QueryHistory, Room: "lobby", FromSeq: 7, Limit: 50}.Encode())
	f.Add(Query{Kind: QueryMembers, Room: "lobby"}.Encode())
	f.Add(Query{Kind: QueryRoom, Room: "x"}.Encode())
	f.Add([]byte{})
	f.Add([]byte{queryVersion, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := DecodeQuery(b)
		if err != nil {
			return
		}
		again, err := DecodeQuery(q.Encode())
		if err != nil || again != q {
			t.Fatalf("%+v re-encoded decodes as %+v (%v)", q, again, err)
		}
	})
}

func FuzzDecodeRoomAnswer(f *testing.F) {
	for _, a := range sampleAnswers() {
		f.Add(EncodeAnswer(a))
	}
	f.Add(EncodeAnswer(Answer{Err: fmt.Errorf("%w: %q", fsm.ErrRoomNotFound, "lobby")}))
	f.Add(EncodeAnswer(Answer{Err: errors.New("other")}))
	f.Add([]byte{})
	f.Add([]byte{answerVersion, answerHistory, 1, 1, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnswer(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to bytes that decode to the same
		// answer, and encode the same again.
		enc := EncodeAnswer(a)
		again, err := DecodeAnswer(enc)
		if err != nil {
			t.Fatalf("re-encoded answer does not decode: %v", err)
		}
		if !bytes.Equal(EncodeAnswer(again), enc) {
			t.Fatalf("%s re-encoded changes again: %s", show(a), show(again))
		}
	})
}

// roomFSM is a room state machine on a store in a temporary directory.
func roomFSM(t *testing.T) *fsm.FSM {
	t.Helper()
	store, err := fsm.OpenStore(fsm.DefaultStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.New(store, fsm.Config{Group: 1})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		store.Close()
	})
	return f
}

// apply applies cmds to f as committed log entries after index.
func apply(t *testing.T, f *fsm.FSM, index uint64, cmds ...fsm.Command) {
	t.Helper()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: index + uint64(i) + 1, Term: 1, Type: raft.LogCommand, Data: c.Encode(), AppendedAt: at.Add(time.Duration(i) * time.Millisecond)}
	}
	for i, res := range f.ApplyBatch(logs) {
		if err := res.(*fsm.Result).Err; err != nil {
			t.Fatalf("apply %s: %v", cmds[i].Op, err)
		}
	}
}

func query(t *testing.T, a *Application, sm multiraft.StateMachine, q Query) Answer {
	t.Helper()
	b, err := a.Query(sm, q.Encode())
	if err != nil {
		t.Fatalf("query %+v: %v", q, err)
	}
	ans, err := DecodeAnswer(b)
	if err != nil {
		t.Fatalf("answer to %+v: %v", q, err)
	}
	return ans
}

func TestApplicationQuery(t *testing.T) {
	f := roomFSM(t)
	cmds := []fsm.Command{
		{Op: fsm.OpJoin, Room: "lobby", Member: "bob", Meta: []byte("b")},
		{Op: fsm.OpJoin, Room: "lobby", Member: "alice", Ephemeral: true, NodeID: "n1", NodeEpoch: 4},
	}
	for i := range 1200 {
		cmds = append(cmds, fsm.Command{Op: fsm.OpPublish, Room: "lobby", Member: "alice", Data: fmt.Appendf(nil, "m%d", i)})
	}
	apply(t, f, 0, cmds...)
	const last = 1202
	a := &Application{}

	ans := query(t, a, f, Query{Kind: QueryHistory, Room: "lobby", FromSeq: 2, Limit: 3})
	if ans.Err != nil || ans.History == nil {
		t.Fatalf("history: %s", show(ans))
	}
	h := ans.History
	if h.LastSeq != last || h.FirstSeq != 1 || len(h.Events) != 3 || h.Events[0].Seq != 2 || h.Events[0].Type != fsm.EventJoin ||
		h.Events[0].Member != "alice" || string(h.Events[2].Data) != "m1" {
		t.Errorf("history from 2, limit 3: %+v", *h)
	}
	for limit, want := range map[int]int{0: fsm.DefaultHistoryLimit, -1: fsm.DefaultHistoryLimit, 5000: MaxQueryHistoryLimit} {
		ans := query(t, a, f, Query{Kind: QueryHistory, Room: "lobby", Limit: limit})
		if ans.History == nil || len(ans.History.Events) != want {
			t.Errorf("history with limit %d: %s, want %d events", limit, show(ans), want)
		}
	}

	ans = query(t, a, f, Query{Kind: QueryMembers, Room: "lobby"})
	want := fsm.Members{Epoch: 1, Seq: last, Members: []fsm.Member{
		{Name: "alice", Ephemeral: true, NodeID: "n1", NodeEpoch: 4, JoinedSeq: 2},
		{Name: "bob", Meta: []byte("b"), JoinedSeq: 1},
	}}
	if ans.Err != nil || ans.Members == nil || !reflect.DeepEqual(*ans.Members, want) {
		t.Errorf("members: %s, want %+v", show(ans), want)
	}

	ans = query(t, a, f, Query{Kind: QueryRoom, Room: "lobby"})
	if ans.Err != nil || ans.Room == nil || ans.Room.Room != "lobby" || ans.Room.LastSeq != last || ans.Room.MemberCount != 2 ||
		ans.Room.Config != fsm.DefaultRoomConfig {
		t.Errorf("room: %s", show(ans))
	}

	for _, kind := range []QueryKind{QueryHistory, QueryMembers, QueryRoom} {
		ans := query(t, a, f, Query{Kind: kind, Room: "nowhere"})
		if !errors.Is(ans.Err, fsm.ErrRoomNotFound) || ans.History != nil || ans.Members != nil || ans.Room != nil {
			t.Errorf("kind %d of a missing room: %s, want only ErrRoomNotFound", kind, show(ans))
		}
	}

	// A request that is not a query cannot run anywhere: that is an error,
	// not an answer.
	if _, err := a.Query(f, []byte{queryVersion, 99}); err == nil {
		t.Error("a query of unknown kind ran")
	}
	if _, err := a.Query(notRooms{}, Query{Kind: QueryRoom, Room: "lobby"}.Encode()); err == nil || !strings.Contains(err.Error(), "not *fsm.FSM") {
		t.Errorf("query of a foreign state machine: %v", err)
	}

	// A closed replica answers with fsm.ErrClosed, so the caller can try
	// another one.
	f.Close()
	if ans := query(t, a, f, Query{Kind: QueryRoom, Room: "lobby"}); !errors.Is(ans.Err, fsm.ErrClosed) {
		t.Errorf("room on a closed replica: %s", show(ans))
	}
}

// notRooms is a state machine of another application.
type notRooms struct{ multiraft.StateMachine }
