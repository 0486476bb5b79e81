package herald_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront/auth"
)

func TestStartRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := herald.Config{NodeID: "n1", DataDir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
		Auth: auth.Config{Insecure: true}}
	for name, mutate := range map[string]func(*herald.Config){
		"no node id":          func(c *herald.Config) { c.NodeID = "" },
		"no data dir":         func(c *herald.Config) { c.DataDir = "" },
		"no auth":             func(c *herald.Config) { c.Auth = auth.Config{} },
		"bootstrap and join":  func(c *herald.Config) { c.Bootstrap = &multiraft.BootstrapSpec{}; c.Join = []string{"x:1"} },
		"bad limits":          func(c *herald.Config) { c.Limits.MaxFrame = -1; c.Limits.MaxRooms = 1 },
		"negative stop bound": func(c *herald.Config) { c.StopTimeout = -time.Second },
	} {
		cfg := base
		mutate(&cfg)
		if n, err := herald.Start(ctx, cfg); err == nil {
			_ = n.Close()
			t.Errorf("%s: started", name)
		}
	}
	// A client port in use fails the start and leaves nothing behind: the
	// same data dir starts right after.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := base
	cfg.ClientAddr = busy.Addr().String()
	if _, err := herald.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "client port") {
		t.Fatalf("client port in use: %v", err)
	}
	n, err := herald.Start(ctx, base)
	if err != nil {
		t.Fatalf("start after a failed start: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A node stopped and started again on its data serves what it had and
// catches up with what it missed.
func TestNodeRestartKeepsRooms(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	publish := func(node int, text string) {
		t.Helper()
		h := c.Node(node).Host()
		cmd := fsm.Command{Op: fsm.OpPublish, Room: "kept", Member: "a", Data: []byte(`"` + text + `"`)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := h.Propose(ctx, h.GroupForKey("kept"), cmd.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	publish(0, "before")
	start := time.Now()
	c.Stop(0)
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("graceful close took %v", d)
	}
	publish(1, "while down")
	c.Restart(0)
	h := c.Node(0).Host()
	var page fsm.History
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := h.Read(context.Background(), h.GroupForKey("kept"), multiraft.Linearizable, func(sm multiraft.StateMachine) error {
			p, err := sm.(*fsm.FSM).History("kept", 1, 10)
			page = p
			return err
		})
		if err == nil && len(page.Events) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node's history: %+v %v", page, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(page.Events[1].Data) != `"while down"` || h.Epoch() == 0 {
		t.Fatalf("restarted node: %+v epoch %d", page.Events, h.Epoch())
	}
}

// Work run with Node.Go sees the node's context end when the node stops,
// and Shutdown returns only after it has returned; once the node is
// stopping, Go refuses new work.
func TestShutdownWaitsForGo(t *testing.T) {
	n, err := herald.Start(context.Background(), herald.Config{NodeID: "n1", DataDir: t.TempDir(),
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	finished := make(chan struct{})
	if !n.Go(func(ctx context.Context) {
		<-ctx.Done()
		// Unwinding takes a while: Shutdown must not return before it ends.
		time.Sleep(200 * time.Millisecond)
		close(finished)
	}) {
		t.Fatal("Go refused work on a running node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Shutdown returned before the node's goroutine did")
	}
	if n.Go(func(context.Context) { t.Error("ran after the node stopped") }) {
		t.Fatal("Go accepted work on a stopped node")
	}
}
