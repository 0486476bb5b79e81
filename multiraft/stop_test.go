package multiraft_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
)

// blockCommand is a command the state machines of blockingApp stop at
// until released.
const blockCommand = "test: block the state machine"

// blockingApp is kvtest's application whose state machines block on
// blockCommand until release is closed. raft's Shutdown waits for the
// goroutine applying entries, so a replica stuck there cannot stop: as
// stuck as a raft waiting on a heartbeat that never returns.
type blockingApp struct {
	*kvtest.App
	blocked chan struct{} // receives once a state machine blocks
	release chan struct{}
}

func (a *blockingApp) NewStateMachine(group uint64) (multiraft.StateMachine, error) {
	sm, err := a.App.NewStateMachine(group)
	if err != nil {
		return nil, err
	}
	return &blockingSM{StateMachine: sm, app: a}, nil
}

type blockingSM struct {
	multiraft.StateMachine
	app *blockingApp
}

func (s *blockingSM) block(logs ...*raft.Log) {
	for _, l := range logs {
		if l.Type == raft.LogCommand && string(l.Data) == blockCommand {
			select {
			case s.app.blocked <- struct{}{}:
			default:
			}
			<-s.app.release
		}
	}
}

func (s *blockingSM) Apply(l *raft.Log) any {
	s.block(l)
	return s.StateMachine.Apply(l)
}

func (s *blockingSM) ApplyBatch(logs []*raft.Log) []any {
	s.block(logs...)
	return s.StateMachine.ApplyBatch(logs)
}

// TestCloseIsBoundedWhenRaftShutdownHangs: a replica whose raft never
// finishes shutting down must not hold Close past Config.StopTimeout;
// Close names the replica and the step it is stuck in, and once the
// replica is released, Shutdown finishes the stop.
func TestCloseIsBoundedWhenRaftShutdownHangs(t *testing.T) {
	dir := t.TempDir()
	app := &blockingApp{
		App:     &kvtest.App{},
		blocked: make(chan struct{}, 1),
		release: make(chan struct{}),
	}
	released := false
	defer func() {
		if !released {
			close(app.release)
		}
	}()
	const stopTimeout = 2 * time.Second
	h, err := multiraft.Start(multiraft.Config{
		NodeID: "n1", DataDir: filepath.Join(dir, "raft"), PeerAddr: "127.0.0.1:0",
		Timing: testTiming(), StopTimeout: stopTimeout, App: app, Logger: logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := multiraft.BootstrapSpec{ClusterID: "test", Nodes: []multiraft.Peer{{ID: "n1", Addr: h.PeerAddr()}}, Groups: 2, Replication: 1}
	if err := h.Bootstrap(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	proposed := make(chan error, 1)
	go func() {
		_, err := h.Propose(pctx, 1, []byte(blockCommand))
		proposed <- err
	}()
	select {
	case <-app.blocked:
	case <-ctx.Done():
		t.Fatal("the state machine of group 1 never got the blocking command")
	}

	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- h.Close() }()
	select {
	case err = <-closed:
	case <-time.After(10 * stopTimeout):
		t.Fatalf("Close did not return within %v, its stop timeout being %v", 10*stopTimeout, stopTimeout)
	}
	took := time.Since(start)
	t.Logf("Close returned after %v: %v", took, err)
	if limit := stopTimeout + time.Second; took > limit {
		t.Errorf("Close took %v, more than its stop timeout %v", took, stopTimeout)
	}
	if !errors.Is(err, multiraft.ErrStopTimeout) {
		t.Fatalf("Close returned %v, want ErrStopTimeout", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "group 1 (raft shutdown") {
		t.Errorf("Close's error does not name group 1 stuck in raft shutdown: %v", msg)
	}
	for _, other := range []string{"group 0 (", "group 2 ("} {
		if strings.Contains(msg, other) {
			t.Errorf("Close's error names %s, which stopped: %v", other, msg)
		}
	}

	// Released, the replica stops and the rest of the stop completes.
	close(app.release)
	released = true
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := h.Shutdown(sctx); errors.Is(err, multiraft.ErrStopTimeout) {
		t.Fatalf("the stop did not finish once the replica was released: %v", err)
	}
	<-proposed // raft resolves it once the state machine applied it
}
