// Command herald-fsm-demo shows the room state machine (package fsm) at
// work without raft or a network: it applies a short scripted scene as raft
// log entries and prints, for each command, the result and the events a
// group-wide subscription receives. The scene covers a join with presence
// meta, an ephemeral member held by a front-end session, exactly-once
// publish (a retried idempotency key returns the original seq), a
// conditional publish that conflicts and then succeeds, and the expiry of a
// node's session removing its members. It then reads the room's history
// and members, and streams a snapshot into a second group on the same store
// to show that both replicas have the same digest.
//
// Usage:
//
//	go run ./cmd/herald-fsm-demo [-dir DIR] [-group N]
//
// Without -dir the store lives in a temporary directory removed on exit.
// Log times are fixed, so the output is the same on every run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/fsm"
)

// base is the log time of entry 0; entry i is appended i seconds later.
var base = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// scene is the scripted sequence of commands, applied as entries 1, 2, ….
var scene = []fsm.Command{
	{Op: fsm.OpJoin, Room: "lobby", Member: "alice", Meta: []byte(`{"name":"Alice"}`)},
	{Op: fsm.OpJoin, Room: "lobby", Member: "bob", Ephemeral: true, NodeID: "n1", NodeEpoch: 1},
	{Op: fsm.OpPublish, Room: "lobby", Member: "alice", Data: []byte(`{"text":"hi all"}`), Key: "alice-1"},
	{Op: fsm.OpPublish, Room: "lobby", Member: "alice", Data: []byte(`{"text":"hi all"}`), Key: "alice-1"},
	{Op: fsm.OpPublish, Room: "lobby", Member: "bob", Data: []byte(`{"text":"hey"}`), HasExpectSeq: true, ExpectSeq: 2},
	{Op: fsm.OpPublish, Room: "lobby", Member: "bob", Data: []byte(`{"text":"hey"}`), HasExpectSeq: true, ExpectSeq: 3},
	{Op: fsm.OpExpireNode, NodeID: "n1", NodeEpoch: 2},
}

func main() {
	dir := flag.String("dir", "", "data directory (default: a temporary directory removed on exit)")
	group := flag.Uint64("group", 1, "raft group id of the state machine (the restored copy uses group+1)")
	flag.Parse()
	if err := mainErr(*dir, *group); err != nil {
		fmt.Fprintln(os.Stderr, "herald-fsm-demo:", err)
		os.Exit(1)
	}
}

func mainErr(dir string, group uint64) (err error) {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if group == ^uint64(0) {
		return errors.New("-group must leave room for group+1")
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "herald-fsm-demo-"); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	}
	return run(os.Stdout, dir, group)
}

// run plays the scene on a store in dir and writes the transcript to w.
func run(w io.Writer, dir string, group uint64) (err error) {
	store, err := fsm.OpenStore(fsm.DefaultStoreConfig(dir))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	f, err := fsm.New(store, fsm.Config{Group: group})
	if err != nil {
		return err
	}
	defer f.Close()
	sub, _, err := f.Subscribe("", 0)
	if err != nil {
		return err
	}
	defer sub.Close()
	// A reused -dir already holds entries; continue the log after them.
	first := f.AppliedIndex() + 1
	fmt.Fprintf(w, "group %d, store %s, applying entries from index %d\n", group, dir, first)

	for i, cmd := range scene {
		index := first + uint64(i)
		log := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: cmd.Encode(),
			AppendedAt: base.Add(time.Duration(index) * time.Second)}
		fmt.Fprintf(w, "\n[%d] %s\n", index, describe(&cmd))
		out := f.ApplyBatch([]*raft.Log{log})
		res, ok := out[0].(*fsm.Result)
		if len(out) != 1 || !ok {
			return fmt.Errorf("entry %d: ApplyBatch returned %v, want one *fsm.Result", index, out)
		}
		fmt.Fprintf(w, "    result: %s\n", describeResult(res))
		if err := drain(w, sub); err != nil {
			return err
		}
	}

	hist, err := f.History("lobby", 0, 100)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nhistory of lobby: epoch=%d first_seq=%d last_seq=%d truncated=%t\n",
		hist.Epoch, hist.FirstSeq, hist.LastSeq, hist.Truncated)
	for _, ev := range hist.Events {
		fmt.Fprintf(w, "    %s\n", describeEvent(ev))
	}
	members, err := f.Members("lobby")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nmembers of lobby at seq %d:\n", members.Seq)
	for _, m := range members.Members {
		fmt.Fprintf(w, "    %s meta=%s ephemeral=%t joined_seq=%d\n", m.Name, orNone(m.Meta), m.Ephemeral, m.JoinedSeq)
	}

	copyGroup := group + 1
	g, err := fsm.New(store, fsm.Config{Group: copyGroup})
	if err != nil {
		return err
	}
	defer g.Close()
	if err := snapshotInto(f, g); err != nil {
		return err
	}
	d1, err := f.Digest()
	if err != nil {
		return err
	}
	d2, err := g.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nsnapshot of group %d at index %d restored into group %d (applied index %d)\n",
		group, f.AppliedIndex(), copyGroup, g.AppliedIndex())
	fmt.Fprintf(w, "    digest group %d: %x\n    digest group %d: %x\n", group, d1, copyGroup, d2)
	if d1 != d2 {
		return errors.New("digests differ: the restored copy does not match the original")
	}
	fmt.Fprintln(w, "    digests equal")
	return nil
}

// drain prints the events already delivered to sub; the FSM delivers them
// before ApplyBatch returns.
func drain(w io.Writer, sub *fsm.Subscription) error {
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				return fmt.Errorf("subscription ended: %w", sub.Err())
			}
			fmt.Fprintf(w, "    event:  %s\n", describeEvent(ev))
		default:
			return nil
		}
	}
}

// snapshotInto streams a snapshot of from into to through raft's in-memory
// snapshot store, as raft does when it installs a snapshot on a follower.
func snapshotInto(from, to *fsm.FSM) error {
	snap, err := from.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	snaps := raft.NewInmemSnapshotStore()
	sink, err := snaps.Create(raft.SnapshotVersionMax, from.AppliedIndex(), 1, raft.Configuration{}, 0, nil)
	if err != nil {
		return err
	}
	if err := snap.Persist(sink); err != nil {
		return err
	}
	_, rc, err := snaps.Open(sink.ID())
	if err != nil {
		return err
	}
	return to.Restore(rc)
}

func describe(c *fsm.Command) string {
	s := fmt.Sprintf("%s room=%s member=%s", c.Op, c.Room, c.Member)
	switch c.Op {
	case fsm.OpJoin:
		s += " meta=" + orNone(c.Meta)
		if c.Ephemeral {
			s += fmt.Sprintf(" ephemeral node=%s node_epoch=%d", c.NodeID, c.NodeEpoch)
		}
	case fsm.OpPublish:
		if c.Key != "" {
			s += " key=" + c.Key
		}
		if c.HasExpectSeq {
			s += fmt.Sprintf(" expect_seq=%d", c.ExpectSeq)
		}
		s += " data=" + orNone(c.Data)
	case fsm.OpExpireNode:
		s = fmt.Sprintf("%s node=%s node_epoch=%d (members of older sessions expire)", c.Op, c.NodeID, c.NodeEpoch)
	}
	return s
}

func describeResult(r *fsm.Result) string {
	s := fmt.Sprintf("seq=%d duplicate=%t last_seq=%d", r.Seq, r.Duplicate, r.LastSeq)
	if r.Op == fsm.OpExpireNode {
		s += fmt.Sprintf(" removed=%d more=%t", r.Removed, r.More)
	}
	if r.Err != nil {
		return s + " error=" + r.Err.Error()
	}
	return s + " error=none"
}

func describeEvent(ev fsm.Event) string {
	return fmt.Sprintf("room=%s epoch=%d seq=%d type=%s member=%s data=%s time=%s",
		ev.Room, ev.Epoch, ev.Seq, ev.Type, ev.Member, orNone(ev.Data), ev.Time.Format(time.TimeOnly))
}

func orNone(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}
