package transport

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestNoGoroutineLeak exercises every kind of goroutine the package starts,
// leaves some work hanging (a stuck group, an open pipeline, open streams,
// a handler waiting on its context), closes the managers and checks the
// goroutine count returns to where it started.
func TestNoGoroutineLeak(t *testing.T) {
	baseline := runtime.NumGoroutine()
	func() {
		a := newTestManager(t, "a")
		b := newTestManager(t, "b")
		a.Handle("hang", func(ctx context.Context, _ string, _ uint64, _ []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		a.HandleStream("forever", func(ctx context.Context, _ string, _ uint64, _ []byte, send func([]byte) error) error {
			for {
				if err := send([]byte("tick")); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Millisecond):
				}
			}
		})
		ga1, gb1 := mustGroup(t, a, 1), mustGroup(t, b, 1)
		ga2, gb2 := mustGroup(t, a, 2), mustGroup(t, b, 2)
		_ = ga2 // group 2's raft is stuck: nothing reads its consumer
		ga1.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				var rpc raft.RPC
				select {
				case rpc = <-ga1.Consumer():
				case <-stop:
					return
				}
				if rpc.Reader != nil {
					buf := new(bytes.Buffer)
					_, _ = buf.ReadFrom(rpc.Reader)
					rpc.Respond(&raft.InstallSnapshotResponse{Success: true}, nil)
					continue
				}
				rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
			}
		}()

		args := makeAppendRPC()
		hb := heartbeatRPC()
		for i := 0; i < 10; i++ {
			if err := gb1.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse)); err != nil {
				t.Fatal(err)
			}
			if err := gb1.AppendEntries("a", a.Addr(), &hb, new(raft.AppendEntriesResponse)); err != nil {
				t.Fatal(err)
			}
		}
		data := bytes.Repeat([]byte("s"), 1<<20)
		if err := gb1.InstallSnapshot("a", a.Addr(), &raft.InstallSnapshotRequest{Term: 1, Size: int64(len(data))},
			new(raft.InstallSnapshotResponse), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		p, err := gb1.AppendEntriesPipeline("a", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
		// Requests left hanging at Close time.
		go func() { _ = gb2.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse)) }()
		go func() { _, _ = b.Call(context.Background(), a.Addr(), "hang", 0, nil) }()
		s, err := b.OpenStream(context.Background(), a.Addr(), "forever", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		if _, err := a.OpenStream(context.Background(), b.Addr(), "none", 0, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		_ = b.Close()
		_ = a.Close()
	}()
	// Slack for a runtime or test framework goroutine.
	checkGoroutines(t, baseline, 1)
}
