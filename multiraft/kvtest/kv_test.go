package kvtest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/kvtest"
)

func apply(t *testing.T, m *kvtest.Machine, index uint64, cmd []byte) *kvtest.Result {
	t.Helper()
	out := m.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: cmd}})
	r, _ := out[0].(*kvtest.Result)
	if r == nil {
		t.Fatalf("apply %d returned %#v", index, out[0])
	}
	return r
}

func machine(t *testing.T, a *kvtest.App, group uint64) *kvtest.Machine {
	t.Helper()
	sm, err := a.NewStateMachine(group)
	if err != nil {
		t.Fatal(err)
	}
	return sm.(*kvtest.Machine)
}

func TestAppendIsIdempotentAndStateOutlivesTheMachine(t *testing.T) {
	a := &kvtest.App{}
	m := machine(t, a, 1)
	for i, c := range []struct {
		item    string
		seq     uint64
		dup     bool
		applied uint64
	}{{"x", 1, false, 1}, {"y", 2, false, 2}, {"x", 1, true, 3}} {
		r := apply(t, m, uint64(i+1), kvtest.Append("k", c.item))
		if r.Seq != c.seq || r.Dup != c.dup || r.Err != nil || m.AppliedIndex() != c.applied {
			t.Errorf("append %s: %+v applied %d, want seq %d dup %v applied %d", c.item, r, m.AppliedIndex(), c.seq, c.dup, c.applied)
		}
	}
	if r := apply(t, m, 4, []byte{99}); !errors.Is(r.Err, kvtest.ErrBadCommand) {
		t.Errorf("unknown command: %+v", r)
	}
	// An entry at or below the applied index is held already: replayed
	// after a restart, it changes nothing.
	apply(t, m, 2, kvtest.Append("k", "replayed"))
	m.Close()
	again := machine(t, a, 1)
	if got := again.Items("k"); !slices.Equal(got, []string{"x", "y"}) || again.AppliedIndex() != 4 {
		t.Fatalf("reopened: %v applied %d", got, again.AppliedIndex())
	}
	if err := again.Drop(); err != nil {
		t.Fatal(err)
	}
	if got := machine(t, a, 1).Items("k"); len(got) != 0 {
		t.Fatalf("after Drop: %v", got)
	}
}

type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoresStateAndDigest(t *testing.T) {
	src := machine(t, &kvtest.App{}, 1)
	apply(t, src, 1, kvtest.Append("a", "1"))
	apply(t, src, 2, kvtest.Append("b", "2"))
	apply(t, src, 3, (&kvtest.App{}).ExpireNodeCommand("n1", 5))
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	dst := machine(t, &kvtest.App{}, 1)
	apply(t, dst, 1, kvtest.Append("c", "other"))
	if err := dst.Restore(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
		t.Fatal(err)
	}
	want, _ := src.Digest()
	got, _ := dst.Digest()
	if got != want || dst.AppliedIndex() != 3 || !slices.Equal(dst.Expired(), []string{"n1<5"}) {
		t.Fatalf("restored: digest equal %v, applied %d, expired %v", got == want, dst.AppliedIndex(), dst.Expired())
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(s.Bytes()[:len(s.Bytes())-1]))); err == nil {
		t.Fatal("a truncated snapshot restored")
	}
}

func TestResultCodecKeepsErrors(t *testing.T) {
	a := &kvtest.App{}
	for _, r := range []*kvtest.Result{{Index: 7, Seq: 3, Dup: true}, {Index: 8, Err: kvtest.ErrBadCommand}} {
		b, err := a.EncodeResult(r)
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.DecodeResult(b)
		if err != nil {
			t.Fatal(err)
		}
		got := v.(*kvtest.Result)
		if got.Index != r.Index || got.Seq != r.Seq || got.Dup != r.Dup || !errors.Is(got.Err, r.Err) || (r.Err == nil) != (got.Err == nil) {
			t.Errorf("%+v came back as %+v", r, got)
		}
	}
	if _, err := a.DecodeResult([]byte{1}); err == nil {
		t.Error("a truncated result decoded")
	}
}

// In a synctest bubble, synctest.Wait says when the subscription is in
// place (its goroutine waits for events), so the first append is its first
// event, with no retry loop guessing when it started.
func TestServeEventsSendsTheKeysAppends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &kvtest.App{}
		m := machine(t, a, 1)
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan kvtest.Event, 4)
		served := make(chan error, 1)
		go func() {
			served <- a.ServeEvents(ctx, m, []byte("k"), func(b []byte) error {
				e, err := kvtest.DecodeEvent(b)
				if err != nil {
					return err
				}
				got <- e
				return nil
			})
		}()
		synctest.Wait()
		apply(t, m, 1, kvtest.Append("other", "x"))
		apply(t, m, 2, kvtest.Append("k", "y"))
		synctest.Wait()
		select {
		case e := <-got:
			if e.Key != "k" || e.Item != "y" || e.Seq != 1 {
				t.Fatalf("event %+v, want k's first append y", e)
			}
		default:
			t.Fatal("no event for the key's append")
		}
		if len(got) != 0 {
			t.Fatalf("an event of another key was sent: %+v", <-got)
		}
		cancel()
		if err := <-served; err != nil {
			t.Fatalf("ServeEvents after its context ended: %v", err)
		}
	})
}
