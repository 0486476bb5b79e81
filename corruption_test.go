package herald_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/eventually"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/internal/testnet"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/logstore"
	"github.com/heraldhq/herald/rooms"
)

// Each case changes one byte of one stored copy of a known payload while
// its node is stopped, then restarts the node. Flipping a byte at random
// offsets of badger's files lands in any record, or in none; searching the
// files for a payload makes the case deterministic.
func TestCorruptionIsDetectedAndRepaired(t *testing.T) {
	for _, tc := range []struct {
		name string
		// size of each payload: above fsm's 4 KiB value threshold it is
		// stored in the value log, below it in the LSM tree's tables.
		size int
		// files to search, under the node's data dir
		glob string
		// garble is how many bytes of the stored payload are changed
		garble   int
		snapshot bool // take a raft snapshot of the group first
		// logs is the raft log store ("": the default)
		logs logstore.Kind
	}{
		{name: "value log", size: 6 << 10, glob: "state/*.vlog", garble: 1},
		{name: "state sst", size: 700, glob: "state/*.sst", garble: 1},
		// The raft log keeps entries up to 512 KiB in its tables, one
		// block each at this size.
		{name: "raft log sst", size: 80 << 10, glob: "raft/raft-badger/*.sst", garble: 64 << 10, logs: logstore.KindBadger},
		{name: "snapshot", size: 700, glob: "raft/snapshots/g*/snapshots/*/state.bin", garble: 1, snapshot: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testCorruption(t, tc.size, tc.glob, tc.garble, tc.snapshot, tc.logs)
		})
	}
}

// A changed byte in the wal raft log keeps its node from starting, with
// an error that names the segment and the offset: the store checks every
// record at open and takes a bad one anywhere but at the end of the newest
// segment for damage, not for a write a crash cut off. The other replicas
// carry on; the node's data is replaced (docs/operations.md).
func TestDamagedWALRecordKeepsItsNodeDown(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Groups: 2, LogStore: logstore.KindWAL})
	const room = "vault"
	h0 := c.Node(0).Host()
	g := h0.GroupForKey(room)
	payloads := publishRandom(t, h0, g, room, 6, 700)
	waitDigestsEqual(t, c, g)
	const victim = 2
	c.Stop(victim)
	flipInside(t, filepath.Join(c.DataDir(victim), "raft/raft-wal/*.log"), payloads[2], 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := herald.Start(ctx, c.Config(victim))
	if err == nil {
		_ = n.Close()
		t.Fatal("the node started on a raft log with a changed byte")
	}
	if !strings.Contains(err.Error(), "damaged at offset") || !strings.Contains(err.Error(), "raft-wal") {
		t.Fatalf("start on a damaged raft log: %v; want an error naming the segment and the offset", err)
	}
	// The two other replicas still serve the room.
	hist, err := readHistory(h0, g, room, multiraft.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Events) != len(payloads) {
		t.Fatalf("%d events through a healthy node, want %d", len(hist.Events), len(payloads))
	}
}

func testCorruption(t *testing.T, size int, glob string, garble int, snapshot bool, logs logstore.Kind) {
	c := testcluster.Start(t, testcluster.Options{Groups: 2, LogStore: logs})
	const room = "vault"
	h0 := c.Node(0).Host()
	g := h0.GroupForKey(room)
	payloads := publishRandom(t, h0, g, room, 6, size)
	// The victim is the group's leader, so that it must also give up the
	// leadership it may win back.
	victim := 0
	leaderID, _ := h0.Leader(g)
	for i := 0; i < c.Len(); i++ {
		if c.Node(i).Host().NodeID() == leaderID {
			victim = i
		}
	}
	vid := c.Node(victim).Host().NodeID()
	waitDigestsEqual(t, c, g) // every replica holds every payload
	if snapshot {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Node(victim).Host().Snapshot(ctx, g); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	c.Stop(victim)
	target := payloads[2]
	flipInside(t, filepath.Join(c.DataDir(victim), glob), target, garble)
	c.Restart(victim)
	h := c.Node(victim).Host()

	// No read through the victim returns a changed byte; reads that find
	// the corruption fail retryably, and once the replica is marked the
	// others serve its reads.
	deadline := time.Now().Add(30 * time.Second)
	served := 0
	for served < 4 {
		for _, cons := range []multiraft.Consistency{multiraft.Linearizable, multiraft.Stale} {
			hist, err := readHistory(h, g, room, cons)
			if err != nil {
				if !errors.Is(err, fsm.ErrCorrupt) && !errors.Is(err, multiraft.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("read through the damaged node: unexpected error %v", err)
				}
				continue
			}
			if len(hist.Events) != len(payloads) {
				t.Fatalf("read through the damaged node: %d events, want %d", len(hist.Events), len(payloads))
			}
			for i, ev := range hist.Events {
				if !bytes.Equal(ev.Data, payloads[i]) {
					t.Fatalf("read through the damaged node (consistency %d) returned a changed payload at seq %d", cons, ev.Seq)
				}
			}
			served++
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d correct reads through the damaged node in 30s", served)
		}
	}
	// The fault is reported: the host, /readyz, the leadership.
	eventually.True(t, 20*time.Second, "damage reported", func() bool { return h.DamagedReplicas()[g] != "" })
	t.Logf("reported: %s", h.DamagedReplicas()[g])
	other := (victim + 1) % c.Len()
	eventually.True(t, 20*time.Second, "damaged replica gives up the leadership", func() bool {
		id, _ := c.Node(other).Host().Leader(g)
		return id != "" && id != vid
	})
	var body string
	eventually.True(t, 20*time.Second, "/readyz reports the damage", func() bool {
		body = get(t, c.HTTP(victim)+"/readyz")
		return strings.Contains(body, `"ok":true`) && strings.Contains(body, "damaged")
	})
	t.Logf("/readyz: %s", body)
	if body := get(t, c.HTTP(victim)+"/metrics"); !strings.Contains(body, "herald_storage_corruptions_total{group=") {
		t.Fatalf("/metrics has no corruption count")
	}

	// Repair, from another node; then every replica agrees.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A corrupt table block may hold keys of other groups too: each is
	// reported, and repaired the same way.
	for dg := range h.DamagedReplicas() {
		if err := c.Node(other).Host().RepairReplica(ctx, dg, vid); err != nil {
			t.Fatalf("repair group %d: %v", dg, err)
		}
	}
	eventually.True(t, 20*time.Second, "repaired replicas no longer damaged", func() bool { return len(h.DamagedReplicas()) == 0 })
	for dg := uint64(1); dg <= 2; dg++ {
		waitDigestsEqual(t, c, dg)
	}
	hist, err := readHistory(h, g, room, multiraft.Stale)
	if err != nil || len(hist.Events) != len(payloads) || !bytes.Equal(hist.Events[2].Data, target) {
		t.Fatalf("history after the repair: %d events, %v", len(hist.Events), err)
	}
}

// flipInside changes n bytes inside the first copy of payload found in
// the files matching pattern, from its 32nd byte on.
// publishRandom publishes n payloads of size random bytes to room
// through group g's proposals on h and returns them. Random bytes stay as
// they are under compression, so the stores hold them as they were sent.
func publishRandom(t *testing.T, h *multiraft.Host, g uint64, room string, n, size int) [][]byte {
	t.Helper()
	var payloads [][]byte
	for range n {
		p := make([]byte, size)
		_, _ = rand.Read(p)
		payloads = append(payloads, p)
		cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: "a", Data: p}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := h.Propose(ctx, g, cmd.Encode())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	return payloads
}

func flipInside(t *testing.T, pattern string, payload []byte, n int) {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	needle := payload[:64]
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, needle)
		if i < 0 {
			continue
		}
		if 32+n > len(payload) {
			t.Fatalf("%d bytes to change past the end of a %d-byte payload", n, len(payload))
		}
		for j := i + 32; j < i+32+n; j++ {
			b[j] ^= 0x5a
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("changed bytes [%d, %d) of %s", i+32, i+32+n, f)
		return
	}
	t.Fatalf("payload not found in %s (%d files)", pattern, len(files))
}

func readHistory(h *multiraft.Host, g uint64, room string, c multiraft.Consistency) (fsm.History, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := h.Query(ctx, g, c, rooms.Query{Kind: rooms.QueryHistory, Room: room, FromSeq: 1, Limit: 100, MaxBytes: 1 << 20}.Encode())
	if err != nil {
		return fsm.History{}, err
	}
	ans, err := rooms.DecodeAnswer(out)
	if err != nil {
		return fsm.History{}, err
	}
	if ans.Err != nil {
		return fsm.History{}, ans.Err
	}
	return *ans.History, nil
}

// waitDigestsEqual waits until every node's replica of g has the same
// state digest.
func waitDigestsEqual(t *testing.T, c *testcluster.Cluster, g uint64) {
	t.Helper()
	var last []string
	defer func() {
		if t.Failed() {
			t.Logf("last digest errors: %v", last)
		}
	}()
	eventually.True(t, 30*time.Second, "equal digests", func() bool {
		last = last[:0]
		var first [32]byte
		for i := 0; i < c.Len(); i++ {
			var d [32]byte
			err := c.Node(i).Host().Read(context.Background(), g, multiraft.Stale, func(sm multiraft.StateMachine) error {
				var err error
				d, err = sm.(*fsm.FSM).Digest()
				return err
			})
			if err != nil {
				last = append(last, err.Error())
				return false
			}
			if i == 0 {
				first = d
			} else if d != first {
				last = append(last, fmt.Sprintf("node %d differs", i+1))
				return false
			}
		}
		return true
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	_, b, err := fetch(url)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A snapshot that a byte flip on the way damaged fails its checks at the
// receiver, which refuses it; the leader sends it again, and the replica
// ends equal to the others. The flip is made by the proxy in front of the
// receiver's peer port, in the stream behind the snapshot's header.
func TestCorruptSnapshotIsRefusedAndSentAgain(t *testing.T) {
	timing := testcluster.Timing()
	timing.SnapshotThreshold = 1 << 30 // only when the test asks
	timing.TrailingLogs = 0            // so a lagging replica needs the snapshot
	var logs testnet.LogBuffer
	c := testcluster.Start(t, testcluster.Options{Groups: 2, Timing: &timing, PeerProxies: true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	const room = "vault"
	h0 := c.Node(0).Host()
	g := h0.GroupForKey(room)
	var payloads [][]byte
	publish := func(h *multiraft.Host) {
		t.Helper()
		p := make([]byte, 700)
		_, _ = rand.Read(p)
		payloads = append(payloads, p)
		cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: "a", Data: p}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := h.Propose(ctx, g, cmd.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	publish(h0)
	waitDigestsEqual(t, c, g)
	leaderID, _ := h0.Leader(g)
	victim, other := -1, -1
	for i := 0; i < c.Len(); i++ {
		switch {
		case c.Node(i).Host().NodeID() == leaderID:
		case victim < 0:
			victim = i
		default:
			other = i
		}
	}
	c.Stop(victim)
	h := c.Node(other).Host()
	for range 5 {
		publish(h)
	}
	for i := 0; i < c.Len(); i++ {
		if i == victim {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Node(i).Host().Snapshot(ctx, g)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	// fsm's snapshot stream starts with this header; the changed byte is
	// in its first records.
	c.Proxy(victim).CorruptOnce([]byte("HERALDS1"), 40)
	c.Restart(victim)
	waitDigestsEqual(t, c, g)
	if n := c.Proxy(victim).Corrupted(); n != 1 {
		t.Fatalf("the proxy changed %d snapshot streams, want 1: the test did not run", n)
	}
	vid := c.Node(victim).Host().NodeID()
	refused := false
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "node="+vid) && strings.Contains(l, "failed to restore snapshot") && strings.Contains(l, "bad snapshot") {
			t.Log(l)
			refused = true
		}
	}
	if !refused {
		t.Fatalf("%s did not log refusing the changed snapshot", vid)
	}
	hist, err := readHistory(c.Node(victim).Host(), g, room, multiraft.Stale)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Events) != len(payloads) {
		t.Fatalf("%d events, want %d", len(hist.Events), len(payloads))
	}
	for i, ev := range hist.Events {
		if !bytes.Equal(ev.Data, payloads[i]) {
			t.Fatalf("event %d changed", ev.Seq)
		}
	}
}
