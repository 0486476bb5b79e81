// Command herald-cluster-demo runs a three-node Herald consensus cluster in
// one process (package multiraft hosting the room state machine of package
// fsm, over real TCP on loopback and real storage) and walks through what
// it guarantees: proposals forwarded from any node to the group leader,
// exactly-once publish with an idempotency key retried through another
// node, a linearizable read on a follower, the loss of the leader's node
// and a new leader taking over, and the stopped node catching up after a
// restart with the same state digest as the others.
//
// Usage:
//
//	go run ./cmd/herald-cluster-demo [-dir DIR] [-groups N]
//
// Without -dir the data lives in a temporary directory removed on exit.
// Leaders and timings differ from run to run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/rooms"
)

func main() {
	dir := flag.String("dir", "", "data directory (default: a temporary one, removed on exit)")
	groups := flag.Uint64("groups", 8, "data groups in the cluster")
	flag.Parse()
	if err := demo(os.Stdout, *dir, *groups); err != nil {
		fmt.Fprintln(os.Stderr, "herald-cluster-demo:", err)
		os.Exit(1)
	}
}

// node is one cluster member: its room store and its raft host.
type node struct {
	id, dir, addr string
	store         *fsm.Store
	host          *multiraft.Host
}

func (n *node) start() error {
	cfg := fsm.DefaultStoreConfig(filepath.Join(n.dir, "state"))
	cfg.MemTableSize, cfg.BlockCacheSize, cfg.IndexCacheSize = 4<<20, 1<<20, 1<<20
	store, err := fsm.OpenStore(cfg)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler)
	h, err := multiraft.Start(multiraft.Config{
		NodeID: n.id, DataDir: filepath.Join(n.dir, "raft"), PeerAddr: n.addr,
		App: &rooms.Application{Store: store, Logger: quiet}, Logger: quiet,
	})
	if err != nil {
		store.Close()
		return err
	}
	n.store, n.host, n.addr = store, h, h.PeerAddr()
	return nil
}

func (n *node) stop() {
	if n.host != nil {
		n.host.Close()
		n.store.Close()
		n.host = nil
	}
}

func demo(w io.Writer, dir string, groups uint64) (err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "herald-cluster-demo-*"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	nodes := map[string]*node{}
	var peers []multiraft.Peer
	for _, id := range []string{"n1", "n2", "n3"} {
		n := &node{id: id, dir: filepath.Join(dir, id), addr: "127.0.0.1:0"}
		if err := n.start(); err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
		defer n.stop()
		nodes[id] = n
		peers = append(peers, multiraft.Peer{ID: id, Addr: n.addr})
	}
	spec := multiraft.BootstrapSpec{ClusterID: "demo", Nodes: peers, Groups: groups, Replication: 3}
	var wg sync.WaitGroup
	errs := make([]error, len(peers))
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nodes[p.ID].host.Bootstrap(ctx, spec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	fmt.Fprintf(w, "cluster %q: nodes n1 n2 n3 on %s %s %s, %d data groups of 3 replicas\n\n",
		spec.ClusterID, peers[0].Addr, peers[1].Addr, peers[2].Addr, groups)

	const room = "lobby"
	group := meta.GroupForKey(room, groups)
	leader, err := waitLeader(ctx, nodes["n1"].host, group)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "room %q lives in group %d, led by %s\n\n", room, group, leader)

	publish := func(via *node, key, text string) (*fsm.Result, error) {
		cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: "alice", Key: key, Data: []byte(text)}
		res, err := via.host.Propose(ctx, group, cmd.Encode())
		if err != nil {
			return nil, err
		}
		r := res.(*fsm.Result)
		return r, r.Err
	}
	fmt.Fprintln(w, "1. publish through every node (followers forward to the leader):")
	for _, id := range []string{"n1", "n2", "n3"} {
		r, err := publish(nodes[id], "", "hello from "+id)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "   via %s: seq=%d\n", id, r.Seq)
	}

	fmt.Fprintln(w, "\n2. exactly-once: the same idempotency key, retried through another node:")
	for _, id := range []string{"n2", "n3"} {
		r, err := publish(nodes[id], "alice-42", "only once")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "   via %s: seq=%d duplicate=%v\n", id, r.Seq, r.Duplicate)
	}

	follower := nodes["n1"]
	if follower.id == leader {
		follower = nodes["n2"]
	}
	h, err := readHistory(ctx, follower, group, room)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n3. linearizable read on follower %s: last_seq=%d, %d events\n", follower.id, h.LastSeq, len(h.Events))

	fmt.Fprintf(w, "\n4. stop %s, the leader of group %d:\n", leader, group)
	nodes[leader].stop()
	var survivor *node
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != leader {
			survivor = nodes[id]
			break
		}
	}
	stopped := time.Now()
	var r *fsm.Result
	for {
		if r, err = publish(survivor, "after-failover", "still here"); err == nil {
			break
		}
		if !errors.Is(err, multiraft.ErrUnavailable) && !errors.Is(err, multiraft.ErrUnknownOutcome) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no new leader: %w", err)
		}
	}
	next, _ := survivor.host.Leader(group)
	fmt.Fprintf(w, "   new leader %s; a publish through %s committed %v after the stop, seq=%d\n",
		next, survivor.id, time.Since(stopped).Round(10*time.Millisecond), r.Seq)

	fmt.Fprintf(w, "\n5. restart %s with its data:\n", leader)
	if err := nodes[leader].start(); err != nil {
		return fmt.Errorf("restart %s: %w", leader, err)
	}
	digests, err := waitConverged(ctx, nodes, group)
	if err != nil {
		return err
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		d := digests[id]
		fmt.Fprintf(w, "   %s digest %x\n", id, d[:8])
	}
	fmt.Fprintln(w, "   digests equal")
	return nil
}

func waitLeader(ctx context.Context, h *multiraft.Host, group uint64) (string, error) {
	for {
		if id, _ := h.Leader(group); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("group %d elected no leader: %w", group, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func readHistory(ctx context.Context, n *node, group uint64, room string) (fsm.History, error) {
	var h fsm.History
	err := n.host.Read(ctx, group, multiraft.Linearizable, func(sm multiraft.StateMachine) error {
		var err error
		h, err = sm.(*fsm.FSM).History(room, 1, 100)
		return err
	})
	return h, err
}

// waitConverged waits until all three replicas of group hold the same
// state, and returns their digests.
func waitConverged(ctx context.Context, nodes map[string]*node, group uint64) (map[string][32]byte, error) {
	for {
		digests := map[string][32]byte{}
		applied := map[uint64]bool{}
		for id, n := range nodes {
			sm, ok := n.host.LocalStateMachine(group)
			if !ok {
				continue
			}
			if d, err := sm.(*fsm.FSM).Digest(); err == nil {
				digests[id] = d
				applied[sm.AppliedIndex()] = true
			}
		}
		if len(digests) == 3 && len(applied) == 1 && digests["n1"] == digests["n2"] && digests["n2"] == digests["n3"] {
			return digests, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("replicas of group %d did not converge: %w", group, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
