package fsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestResultCodecRoundTrip(t *testing.T) {
	cases := []*Result{
		{},
		{Op: OpPublish, Room: "lobby", Epoch: 7, Seq: 42, Duplicate: true, LastSeq: 42},
		{Op: OpExpireNode, Removed: 1000, More: true},
		{Op: OpPublish, Room: "r", LastSeq: 9, Err: fmt.Errorf("%w: room r is at seq 9, not 8", ErrConflict)},
		{Op: OpLeave, Room: "r", Err: ErrNotMember},
		{Op: OpJoin, Err: errors.New("something unforeseen")},
	}
	for _, want := range cases {
		got, err := DecodeResult(EncodeResult(want))
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got.Op != want.Op || got.Room != want.Room || got.Epoch != want.Epoch || got.Seq != want.Seq ||
			got.Duplicate != want.Duplicate || got.LastSeq != want.LastSeq || got.Removed != want.Removed || got.More != want.More {
			t.Errorf("round trip of %+v gave %+v", want, got)
		}
		if (want.Err == nil) != (got.Err == nil) {
			t.Fatalf("error %v came back as %v", want.Err, got.Err)
		}
		if want.Err == nil {
			continue
		}
		if got.Err.Error() != want.Err.Error() {
			t.Errorf("error message %q came back as %q", want.Err, got.Err)
		}
		for _, s := range resultErrors[1:] {
			if errors.Is(want.Err, s) != errors.Is(got.Err, s) {
				t.Errorf("errors.Is(%v, %v) changed in transit", want.Err, s)
			}
		}
	}
}

func TestDecodeResultRejectsGarbage(t *testing.T) {
	good := EncodeResult(&Result{Op: OpPublish, Room: "lobby", Seq: 3})
	for i := range good {
		if _, err := DecodeResult(good[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := DecodeResult(append(good, 0)); err == nil {
		t.Error("trailing byte: no error")
	}
	bad := append([]byte{}, good...)
	bad[0] = 99
	if _, err := DecodeResult(bad); err == nil {
		t.Error("unknown version: no error")
	}
}

func TestDropDeletesOnlyItsGroup(t *testing.T) {
	r := newReplica(t, 1)
	other, err := New(r.store, Config{Group: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := newLogMaker(), newLogMaker()
	pub := Command{Op: OpPublish, Room: "lobby", Member: "alice", Data: []byte("hi")}
	r.applyBatch([]*raft.Log{m1.entry(pub), m1.entry(pub)})
	other.ApplyBatch([]*raft.Log{m2.entry(pub)})
	if err := r.f.Drop(); err != nil {
		t.Fatalf("drop: %v", err)
	}
	again, err := New(r.store, Config{Group: 1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if rooms, err := again.Rooms(); err != nil || len(rooms) != 0 || again.AppliedIndex() != 0 {
		t.Errorf("group 1 after drop: rooms %v, applied %d, err %v; want nothing", rooms, again.AppliedIndex(), err)
	}
	if h, err := other.History("lobby", 1, 10); err != nil || len(h.Events) != 1 {
		t.Errorf("group 2 after dropping group 1: %d events, err %v; want its 1 event", len(h.Events), err)
	}
}

func TestEventCodecRoundTrip(t *testing.T) {
	want := Event{Room: "lobby", Epoch: 3, Seq: 42, Type: EventMessage, Member: "alice", Data: []byte(`{"x":1}`),
		Time: time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)}
	got, err := DecodeEvent(EncodeEvent(want))
	if err != nil {
		t.Fatal(err)
	}
	if got.Room != want.Room || got.Epoch != want.Epoch || got.Seq != want.Seq || got.Type != want.Type ||
		got.Member != want.Member || string(got.Data) != string(want.Data) || !got.Time.Equal(want.Time) {
		t.Errorf("round trip of %+v gave %+v", want, got)
	}
	b := EncodeEvent(want)
	for i := range b {
		if _, err := DecodeEvent(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
}
