package fsm

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestSubscribeDeliversAfterReturnedSeq(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("1")}))
	sub, info, err := r.f.Subscribe("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if info.LastSeq != 1 || info.Epoch != 1 {
		t.Fatalf("info = %+v, want epoch 1 last seq 1", info)
	}
	other, _, _ := r.f.Subscribe("b", 0)
	defer other.Close()
	r.applyBatch(m.batchOf(
		Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("2")},
		Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("3")},
	))
	for want := uint64(2); want <= 3; want++ {
		ev := <-sub.C
		if ev.Seq != want || ev.Room != "a" {
			t.Fatalf("got %s #%d, want a #%d", ev.Room, ev.Seq, want)
		}
	}
	if len(other.C) != 0 {
		t.Fatal("a subscriber of room b got room a's events")
	}
}

func TestSlowSubscriberIsToldItLagged(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	sub, _, _ := r.f.Subscribe("a", 2)
	for i := range 3 {
		r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte{byte(i)}}))
	}
	var got []uint64
	for ev := range sub.C {
		got = append(got, ev.Seq)
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("delivered %v before lagging, want [1 2]", got)
	}
	if !errors.Is(sub.Err(), ErrLagged) {
		t.Fatalf("Err = %v, want ErrLagged", sub.Err())
	}
	// Apply went on: the lagging subscriber did not hold it up.
	if info, _ := r.f.Room("a"); info.LastSeq != 3 {
		t.Fatalf("last seq %d, want 3", info.LastSeq)
	}
	sub.Close() // harmless after the end
}

func TestAfterClose(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x"}))
	sub, _, _ := r.f.Subscribe("", 0)
	if err := r.f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription still open after Close")
	}
	if !errors.Is(sub.Err(), ErrClosed) {
		t.Fatalf("subscription Err = %v, want ErrClosed", sub.Err())
	}
	res := r.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x"}))
	if !errors.Is(res[0].Err, ErrClosed) {
		t.Fatalf("apply after close: %v", res[0].Err)
	}
	checks := map[string]error{}
	_, checks["History"] = r.f.History("a", 0, 1)
	_, checks["Members"] = r.f.Members("a")
	_, checks["Room"] = r.f.Room("a")
	_, checks["Rooms"] = r.f.Rooms()
	_, _, checks["Subscribe"] = r.f.Subscribe("a", 0)
	_, checks["Snapshot"] = r.f.Snapshot()
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
}

// Readers run while batches apply (run with -race): every history page is
// gap-free and consistent with its own bounds, and member lists never show
// a member twice.
func TestReadsDuringApply(t *testing.T) {
	r := newReplica(t, 1)
	m := newLogMaker()
	r.applyBatch(m.batchOf(Command{Op: OpRoomConfig, Room: "a", ConfigMask: FieldHistoryMaxCount, Config: RoomConfig{HistoryMaxCount: 50}}))
	const batches = 200
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				h, err := r.f.History("a", 0, 100)
				if err != nil {
					errs <- err
					return
				}
				for i, ev := range h.Events {
					if ev.Seq != h.FirstSeq+uint64(i) {
						errs <- fmt.Errorf("page from %d has seq %d at %d", h.FirstSeq, ev.Seq, i)
						return
					}
				}
				if n := len(h.Events); n > 0 && h.Events[n-1].Seq != h.LastSeq {
					errs <- fmt.Errorf("page ends at %d, room at %d", h.Events[n-1].Seq, h.LastSeq)
					return
				}
				if _, err := r.f.Members("a"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range batches {
		r.applyBatch(m.batchOf(
			Command{Op: OpJoin, Room: "a", Member: fmt.Sprint("m", i%7)},
			Command{Op: OpPublish, Room: "a", Member: "x", Data: []byte("p")},
			Command{Op: OpLeave, Room: "a", Member: fmt.Sprint("m", (i+3)%7)},
		))
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Groups sharing one store do not see each other's rooms.
func TestGroupsShareAStore(t *testing.T) {
	store := openStore(t, t.TempDir())
	a, err := New(store, Config{Group: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(store, Config{Group: 2})
	if err != nil {
		t.Fatal(err)
	}
	m := newLogMaker()
	a.ApplyBatch(m.batchOf(Command{Op: OpPublish, Room: "lobby", Member: "x"}))
	if _, err := b.Room("lobby"); !errors.Is(err, ErrRoomNotFound) {
		t.Fatalf("group 2 sees group 1's room: %v", err)
	}
	if b.AppliedIndex() != 0 || a.AppliedIndex() != 1 {
		t.Fatalf("applied indexes %d and %d", a.AppliedIndex(), b.AppliedIndex())
	}
	// Restoring group 2 from group 1 leaves group 1 alone.
	snapshotInto(t, a, b)
	if _, err := b.Room("lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.History("lobby", 0, 0); err != nil {
		t.Fatal(err)
	}
}

// A restore jumps the state past events nobody was sent: subscribers are
// told they lagged, so they re-read history instead of missing events.
func TestRestoreEndsSubscriptions(t *testing.T) {
	src := newReplica(t, 1)
	m := newLogMaker()
	src.applyBatch(m.batchOf(Command{Op: OpPublish, Room: "a", Member: "x"}, Command{Op: OpPublish, Room: "a", Member: "x"}))
	dst := newReplica(t, 1)
	sub, _, _ := dst.f.Subscribe("a", 0)
	snapshotInto(t, src.f, dst.f)
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription delivered an event across a restore")
	}
	if !errors.Is(sub.Err(), ErrLagged) {
		t.Fatalf("Err = %v, want ErrLagged", sub.Err())
	}
}
