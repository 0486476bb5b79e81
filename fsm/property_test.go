package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// randomLog builds n entries of random commands over a few rooms, members
// and nodes, so that keys repeat, windows fill, rooms are deleted and
// re-created and sessions expire. The clock advances by random steps.
func randomLog(rng *rand.Rand, n int) []*raft.Log {
	m := newLogMaker()
	rooms := []string{"r0", "r1", "r2", "r3"}
	members := []string{"m0", "m1", "m2"}
	nodes := []string{"n0", "n1"}
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	logs := make([]*raft.Log, 0, n)
	for len(logs) < n {
		if rng.IntN(4) == 0 {
			m.clock = m.clock.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		var c Command
		switch p := rng.IntN(100); {
		case p < 45:
			c = Command{Op: OpPublish, Room: pick(rooms), Member: pick(members), Data: []byte(fmt.Sprintf("v%d", len(logs)))}
			if rng.IntN(2) == 0 {
				c.Key = fmt.Sprintf("k%d", rng.IntN(8))
			}
			if rng.IntN(4) == 0 {
				c.HasExpectSeq, c.ExpectSeq = true, uint64(rng.IntN(12))
			}
		case p < 60:
			c = Command{Op: OpJoin, Room: pick(rooms), Member: pick(members), Meta: []byte{byte(rng.IntN(256))}}
			if rng.IntN(2) == 0 {
				c.Ephemeral, c.NodeID, c.NodeEpoch = true, pick(nodes), uint64(rng.IntN(4))
			}
		case p < 70:
			c = Command{Op: OpLeave, Room: pick(rooms), Member: pick(members)}
		case p < 78:
			c = Command{Op: OpRoomConfig, Room: pick(rooms), ConfigMask: ConfigField(rng.IntN(int(allConfigFields) + 1)),
				Config: RoomConfig{
					HistoryMaxCount: uint64(rng.IntN(6)),
					HistoryMaxAge:   time.Duration(rng.IntN(4)) * time.Second,
					KeyWindowCount:  uint64(rng.IntN(4)),
					KeyWindowAge:    time.Duration(rng.IntN(4)) * time.Second,
					MembersOnly:     rng.IntN(4) == 0,
				}}
		case p < 82:
			c = Command{Op: OpRoomDelete, Room: pick(rooms)}
		case p < 87:
			c = Command{Op: OpExpireNode, NodeID: pick(nodes), NodeEpoch: uint64(rng.IntN(5)), Limit: uint32(rng.IntN(3))}
		case p < 95:
			c = Command{Op: OpTick, Limit: uint32(rng.IntN(3))}
		case p < 97:
			c = Command{Op: OpGroupDefaults, ConfigMask: FieldHistoryMaxCount | FieldMembersOnly,
				Config: RoomConfig{HistoryMaxCount: uint64(rng.IntN(5)), MembersOnly: rng.IntN(3) == 0}}
		case p < 98:
			m.index++
			logs = append(logs, &raft.Log{Index: m.index, Term: 1, Type: raft.LogCommand, Data: []byte{1, byte(rng.IntN(20))}, AppendedAt: m.clock})
			continue
		default:
			m.index++
			logs = append(logs, &raft.Log{Index: m.index, Term: 1, Type: raft.LogNoop, AppendedAt: m.clock})
			continue
		}
		logs = append(logs, m.entry(c))
	}
	return logs
}

// applyInBatches applies logs in random-size batches and returns the
// results and the events a group subscription saw.
func applyInBatches(t *testing.T, r *replica, logs []*raft.Log, rng *rand.Rand, maxBatch int) ([]string, []string) {
	t.Helper()
	sub, _, err := r.f.Subscribe("", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var results, events []string
	for len(logs) > 0 {
		n := 1 + rng.IntN(maxBatch)
		n = min(n, len(logs))
		for _, res := range r.applyBatch(logs[:n]) {
			results = append(results, fmtResult(res))
		}
		logs = logs[n:]
	}
	for len(sub.C) > 0 {
		ev := <-sub.C
		events = append(events, fmt.Sprintf("%s@%d#%d %s %s %q %d", ev.Room, ev.Epoch, ev.Seq, ev.Type, ev.Member, ev.Data, ev.Time.UnixNano()))
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("subscription ended: %v", err)
	}
	return results, events
}

func fmtResult(r *Result) string {
	if r == nil {
		return "nil"
	}
	err := ""
	if r.Err != nil {
		err = r.Err.Error()
	}
	return fmt.Sprintf("%s %s e%d s%d l%d d%v r%d m%v %s", r.Op, r.Room, r.Epoch, r.Seq, r.LastSeq, r.Duplicate, r.Removed, r.More, err)
}

func equalLines(t *testing.T, what string, a, b []string) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d lines", what, len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("%s differ at %d:\n  %s\n  %s", what, i, a[i], b[i])
		}
	}
}

const propertySeeds = 12

// Two replicas applying the same log, one entry at a time and in random
// batches with a tiny sweep budget, end with the same state digest, the
// same results and the same events.
func TestPropertyBatchingIsDeterministic(t *testing.T) {
	for seed := range uint64(propertySeeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			logs := randomLog(rng, 400)
			a := newReplica(t, 1)
			b := newReplica(t, 1)
			b.f.cfg.SweepBudget = 1
			resA, evA := applyInBatches(t, a, logs, rng, 1)
			resB, evB := applyInBatches(t, b, logs, rng, 64)
			equalLines(t, "results", resA, resB)
			equalLines(t, "events", evA, evB)
			if a.digest() != b.digest() {
				t.Fatal("digests differ")
			}
			checkGapFree(t, evA)
		})
	}
}

// checkGapFree asserts that every room incarnation's events carry seqs
// 1, 2, 3, … in delivery order.
func checkGapFree(t *testing.T, events []string) {
	t.Helper()
	next := map[string]uint64{}
	for _, line := range events {
		var room, rest string
		var epoch, seq uint64
		if _, err := fmt.Sscanf(line, "%2s@%d#%d %s", &room, &epoch, &seq, &rest); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		if rest == "deleted" {
			continue
		}
		key := fmt.Sprintf("%s@%d", room, epoch)
		if want := next[key] + 1; seq != want {
			t.Fatalf("%s: seq %d after %d", key, seq, want-1)
		}
		next[key] = seq
	}
}

// A snapshot taken at a random point, restored on a fresh replica that
// then applies the rest of the log, gives the state of applying it all
// straight through.
func TestPropertySnapshotRestore(t *testing.T) {
	for seed := range uint64(propertySeeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 2))
			logs := randomLog(rng, 400)
			cut := rng.IntN(len(logs))
			straight := newReplica(t, 1)
			straight.applyBatch(logs)

			src := newReplica(t, 1)
			src.applyBatch(logs[:cut])
			// dst serves another group id (the state must not depend on
			// it) and holds unrelated state first: restore must drop it.
			dst := newReplica(t, 2)
			dst.applyBatch(randomLog(rand.New(rand.NewPCG(seed, 3)), 50))
			snapshotInto(t, src.f, dst.f)
			if dst.digest() != src.digest() {
				t.Fatal("restored digest differs from the snapshot's source")
			}
			dst.applyBatch(logs[cut:])
			if dst.digest() != straight.digest() {
				t.Fatal("snapshot+restore+rest differs from straight through")
			}
		})
	}
}

// A replica restarted at a random point, to which raft then replays from
// an earlier index (as it does from its last snapshot), ends where a
// replica that never stopped does.
func TestPropertyRestartReplay(t *testing.T) {
	for seed := range uint64(propertySeeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 4))
			logs := randomLog(rng, 400)
			cut := 1 + rng.IntN(len(logs)-1)
			from := rng.IntN(cut)
			straight := newReplica(t, 1)
			straight.applyBatch(logs)

			r := newReplica(t, 1)
			r.applyBatch(logs[:cut])
			r.restart()
			if got := r.f.AppliedIndex(); got != logs[cut-1].Index {
				t.Fatalf("applied index after restart %d, want %d", got, logs[cut-1].Index)
			}
			sub, _, _ := r.f.Subscribe("", 1<<16)
			for i, res := range r.applyBatch(logs[from:cut]) {
				if res != nil {
					t.Fatalf("replayed entry %d returned %s", logs[from+i].Index, fmtResult(res))
				}
			}
			if len(sub.C) != 0 {
				t.Fatal("replayed entries emitted events")
			}
			sub.Close()
			r.applyBatch(logs[cut:])
			if r.digest() != straight.digest() {
				t.Fatal("restart+replay differs from straight through")
			}
		})
	}
}
