package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/eventually"
)

func TestCall(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	a.Handle("echo", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		return []byte(fmt.Sprintf("%s/%d/%s", from, group, req)), nil
	})
	a.Handle("fail", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		return nil, errors.New("no leader for group")
	})
	a.Handle("panic", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		panic("boom")
	})
	ctx := context.Background()

	got, err := b.Call(ctx, a.Addr(), "echo", 42, []byte("hi"))
	if err != nil || string(got) != "b/42/hi" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	// Many concurrent calls share the one connection.
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := []byte(fmt.Sprint(i))
			got, err := b.Call(ctx, a.Addr(), "echo", uint64(i), req)
			if want := fmt.Sprintf("b/%d/%d", i, i); err != nil || string(got) != want {
				t.Errorf("call %d: %q, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	if out, _ := managerConns(b); out != 1 {
		t.Fatalf("%d outbound connections, want 1", out)
	}

	var re *RemoteError
	_, err = b.Call(ctx, a.Addr(), "fail", 1, nil)
	if !errors.As(err, &re) || re.Message != "no leader for group" {
		t.Fatalf("handler error: %v", err)
	}
	_, err = b.Call(ctx, a.Addr(), "nope", 1, nil)
	if !errors.As(err, &re) || !strings.Contains(re.Message, `unknown service "nope" on node a`) {
		t.Fatalf("unknown service: %v", err)
	}
	_, err = b.Call(ctx, a.Addr(), "panic", 1, nil)
	if !errors.As(err, &re) || !strings.Contains(re.Message, "panicked") {
		t.Fatalf("panicking handler: %v", err)
	}
	// The node survived the panic.
	if _, err := b.Call(ctx, a.Addr(), "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
	// Handlers can be removed.
	a.Handle("echo", nil)
	if _, err := b.Call(ctx, a.Addr(), "echo", 1, nil); !errors.As(err, &re) {
		t.Fatalf("removed handler: %v", err)
	}
}

func TestCall_ContextCancel(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	cancelled := make(chan struct{})
	a.Handle("slow", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Call(ctx, a.Addr(), "slow", 1, nil)
	if err != context.DeadlineExceeded {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// The handler heard about it.
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("handler context not cancelled after the caller gave up")
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := b.Call(ctx2, a.Addr(), "slow", 1, nil); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("already cancelled: %v", err)
	}
}

func TestCall_Timeout(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b", func(c *Config) { c.RPCTimeout = 200 * time.Millisecond })
	release := make(chan struct{})
	defer close(release)
	a.Handle("slow", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	_, err := b.Call(context.Background(), a.Addr(), "slow", 1, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
}

func TestCall_HandlerDoesNotBlockConnection(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	release, started := make(chan struct{}), make(chan struct{})
	a.Handle("slow", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("slow"), nil
	})
	a.Handle("fast", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		return []byte("fast"), nil
	})
	// The fast calls must go out while the slow handler holds its request.
	slow := callInHandler(t, b, a, "slow", started)
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		got, err := b.Call(ctx, a.Addr(), "fast", 1, nil)
		cancel()
		if err != nil || string(got) != "fast" {
			t.Fatalf("fast call behind a slow handler: %q, %v", got, err)
		}
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

// callInHandler calls method on to from from and returns once to's
// handler has it (started closes or receives), with the channel the
// call's error will come on.
func callInHandler(t *testing.T, from, to *Manager, method string, started <-chan struct{}) <-chan error {
	t.Helper()
	errCh := make(chan error, 1)
	go func() {
		_, err := from.Call(context.Background(), to.Addr(), method, 1, nil)
		errCh <- err
	}()
	select {
	case <-started:
	case err := <-errCh:
		t.Fatalf("%s call ended before its handler ran: %v", method, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s handler not called", method)
	}
	return errCh
}

func TestCall_UnreachableBackoff(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := raft.ServerAddress(ln.Addr().String())
	_ = ln.Close()

	b := newTestManager(t, "b")
	ctx := context.Background()
	_, err = b.Call(ctx, dead, "x", 1, nil)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrNotSent) || !strings.Contains(err.Error(), "dialing") {
		t.Fatalf("first call: %v", err)
	}
	// Within the backoff, calls fail fast without dialing.
	start := time.Now()
	_, err = b.Call(ctx, dead, "x", 1, nil)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrNotSent) || !strings.Contains(err.Error(), "backoff") {
		t.Fatalf("second call: %v", err)
	}
	if d := time.Since(start); d > 20*time.Millisecond {
		t.Fatalf("fail-fast took %v", d)
	}
	p, _ := b.peer(dead)
	p.mu.Lock()
	first := p.backoff
	p.mu.Unlock()
	if first != backoffMin {
		t.Fatalf("backoff after one failure %v, want %v", first, backoffMin)
	}
	// After the backoff a new dial happens, and the backoff doubles.
	time.Sleep(backoffMin + 10*time.Millisecond)
	_, err = b.Call(ctx, dead, "x", 1, nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "dialing") {
		t.Fatalf("call after backoff: %v", err)
	}
	p.mu.Lock()
	second := p.backoff
	p.mu.Unlock()
	if second != 2*backoffMin {
		t.Fatalf("backoff after two failures %v, want %v", second, 2*backoffMin)
	}
	// Raft RPCs see the same error.
	g := mustGroup(t, b, 1)
	args := makeAppendRPC()
	if err := g.AppendEntries("x", dead, &args, new(raft.AppendEntriesResponse)); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("AppendEntries to dead peer: %v", err)
	}

	// Once the peer is up, success resets the backoff.
	ln2, err := net.Listen("tcp", string(dead))
	if err != nil {
		t.Skipf("cannot re-listen on %s: %v", dead, err)
	}
	a := newTestManager(t, "a", func(c *Config) { c.Listener = ln2 })
	a.Handle("x", func(context.Context, string, uint64, []byte) ([]byte, error) { return []byte("ok"), nil })
	eventually.True(t, 3*time.Second, "peer to become reachable", func() bool {
		got, err := b.Call(ctx, dead, "x", 1, nil)
		return err == nil && string(got) == "ok"
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.backoff != 0 {
		t.Fatalf("backoff not reset after success: %v", p.backoff)
	}
}

func TestCall_PeerCloses(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	started := make(chan struct{})
	a.Handle("hang", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	errCh := callInHandler(t, b, a, "hang", started)
	_ = a.Close()
	select {
	case err := <-errCh:
		if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNotSent) {
			t.Fatalf("pending call when the peer closed: %v (want unreachable, and not 'not sent': the handler ran)", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending call not failed when the peer closed")
	}
}

func TestManagerClose_FailsPendingCalls(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	started := make(chan struct{}, 1)
	a.Handle("hang", func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	// Close while the call is pending: a call made after Close would fail
	// with ErrClosed without ever being pending.
	errCh := callInHandler(t, b, a, "hang", started)
	_ = b.Close()
	select {
	case err := <-errCh:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call on Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending call not failed by Close")
	}
	if _, err := b.Call(context.Background(), a.Addr(), "hang", 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}
}

func streamCounter(n int) StreamHandler {
	return func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error {
		for i := 0; i < n; i++ {
			if err := send(binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestStream_InOrderAndEOF(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	a.HandleStream("count", streamCounter(1000))
	s, err := b.OpenStream(context.Background(), a.Addr(), "count", 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	for i := 0; i < 1000; i++ {
		msg, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(msg); got != uint32(i) {
			t.Fatalf("message %d carries %d", i, got)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("Recv after EOF: %v", err)
	}
}

func TestStream_Errors(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	a.HandleStream("fail", func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error {
		if err := send([]byte("one")); err != nil {
			return err
		}
		return fmt.Errorf("lagged at %s", req)
	})
	ctx := context.Background()
	s, err := b.OpenStream(ctx, a.Addr(), "fail", 1, []byte("42"))
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := s.Recv(); err != nil || string(msg) != "one" {
		t.Fatalf("first Recv: %q %v", msg, err)
	}
	var re *RemoteError
	if _, err := s.Recv(); !errors.As(err, &re) || re.Message != "lagged at 42" {
		t.Fatalf("handler error: %v", err)
	}
	s, err = b.OpenStream(ctx, a.Addr(), "nope", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.As(err, &re) || !strings.Contains(re.Message, "unknown stream service") {
		t.Fatalf("unknown service: %v", err)
	}

	// A broken connection ends the stream with ErrUnreachable.
	started := make(chan struct{})
	a.HandleStream("hang", func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error {
		close(started)
		<-ctx.Done()
		return nil
	})
	s, err = b.OpenStream(ctx, a.Addr(), "hang", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	_ = a.Close()
	if _, err := s.Recv(); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("stream over a broken connection: %v", err)
	}
}

func TestStream_Overflow(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	stopped := make(chan error, 1)
	a.HandleStream("flood", func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error {
		for i := 0; ; i++ {
			if err := send(binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
				stopped <- err
				return err
			}
			if i > 100*streamBuffer {
				stopped <- errors.New("sender was never told to stop")
				return nil
			}
		}
	})
	s, err := b.OpenStream(context.Background(), a.Addr(), "flood", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// Do not read: the buffer overflows and the server is told to stop.
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("server send error: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server not stopped after overflow")
	}
	n := 0
	for {
		msg, err := s.Recv()
		if err != nil {
			if !errors.Is(err, ErrStreamOverflow) {
				t.Fatalf("after %d messages: %v, want ErrStreamOverflow", n, err)
			}
			break
		}
		if got := binary.BigEndian.Uint32(msg); got != uint32(n) {
			t.Fatalf("message %d carries %d", n, got)
		}
		n++
	}
	if n != streamBuffer {
		t.Fatalf("%d buffered messages before overflow, want %d", n, streamBuffer)
	}
	// The connection is still fine.
	a.HandleStream("count", streamCounter(3))
	s2, err := b.OpenStream(context.Background(), a.Addr(), "count", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s2.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s2.Recv(); err != io.EOF {
		t.Fatal(err)
	}
}

func TestStream_CloseCancelsHandler(t *testing.T) {
	a := newTestManager(t, "a")
	b := newTestManager(t, "b")
	cancelled := make(chan struct{})
	a.HandleStream("tick", func(ctx context.Context, from string, group uint64, req []byte, send func([]byte) error) error {
		if err := send([]byte("hello")); err != nil {
			return err
		}
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	})
	s, err := b.OpenStream(context.Background(), a.Addr(), "tick", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := s.Recv(); err != nil || !bytes.Equal(msg, []byte("hello")) {
		t.Fatalf("Recv: %q %v", msg, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("handler context not cancelled by Stream.Close")
	}
	if _, err := s.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	_ = s.Close()

	// Cancelling the OpenStream context closes it too.
	cancelled = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	s, err = b.OpenStream(ctx, a.Addr(), "tick", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Recv(); err != context.Canceled {
		t.Fatalf("Recv after ctx cancel: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("handler context not cancelled by the caller's ctx")
	}
}
