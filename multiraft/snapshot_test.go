package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft"
)

// newestSnapshot is the index of the newest raft snapshot of group in
// node n's data directory (0 if none).
func newestSnapshot(t *testing.T, n *node, group uint64) uint64 {
	t.Helper()
	dir := filepath.Join(n.dir, "raft", "snapshots", fmt.Sprintf("g%d", group))
	store, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
	if err != nil {
		t.Fatalf("open snapshots of group %d on %s: %v", group, n.id, err)
	}
	list, err := store.List()
	if err != nil {
		t.Fatalf("list snapshots of group %d on %s: %v", group, n.id, err)
	}
	if len(list) == 0 {
		return 0
	}
	return list[0].Index
}

// A forced snapshot is a real one: with no trailing logs kept, the log
// before it is gone, and a replica added afterwards can only get the
// group's state from the snapshot.
func TestSnapshotCompactsAndSeedsNewReplica(t *testing.T) {
	c := newTwinCluster(t)
	c.timing.SnapshotThreshold = 1 << 30 // never on its own
	c.timing.TrailingLogs = 0
	c.bootstrap(1, 2, "n1", "n2", "n3")
	const key = "k"
	for i := range 20 {
		if _, err := c.write(c.nodes["n1"], 1, key, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.nodes["n1"].h().MetaState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holders := st.Replicas[1]
	var outsider string
	for _, id := range c.ids() {
		if id != holders[0] && id != holders[1] {
			outsider = id
		}
	}
	for _, id := range holders {
		n := c.nodes[id]
		sm, _ := n.h().LocalStateMachine(1)
		applied := sm.AppliedIndex()
		if err := n.h().Snapshot(ctx, 1); err != nil {
			t.Fatalf("snapshot group 1 on %s: %v", id, err)
		}
		if got := newestSnapshot(t, n, 1); got < applied {
			t.Fatalf("newest snapshot of group 1 on %s is at index %d, want at least %d", id, got, applied)
		}
		if err := n.h().Snapshot(ctx, multiraft.MetaGroup); err != nil && !errors.Is(err, multiraft.ErrNoReplica) {
			t.Fatalf("snapshot meta group on %s: %v", id, err)
		}
	}
	if err := c.nodes[outsider].h().Snapshot(ctx, 1); !errors.Is(err, multiraft.ErrNoReplica) {
		t.Fatalf("snapshot on %s, which holds no replica: %v, want ErrNoReplica", outsider, err)
	}

	// The log up to the snapshot is gone: the new replica is seeded from it.
	if err := c.nodes["n1"].h().MoveReplica(ctx, 1, holders[0], outsider); err != nil {
		t.Fatalf("move to %s: %v", outsider, err)
	}
	if got := c.items(c.nodes[outsider], 1, key, multiraft.Linearizable); len(got) != 20 {
		t.Fatalf("%s after the move holds %d items, want 20", outsider, len(got))
	}
	if newestSnapshot(t, c.nodes[outsider], 1) == 0 {
		t.Fatalf("%s caught up without installing the leader's snapshot", outsider)
	}
	// Right after a membership change raft refuses to snapshot until the
	// change is applied; Snapshot waits that out.
	if err := c.nodes[outsider].h().Snapshot(ctx, 1); err != nil {
		t.Fatalf("snapshot right after the move on %s: %v", outsider, err)
	}

	// A restarted replica comes back from its snapshot and compacted log.
	n := c.nodes[outsider]
	h := n.h()
	n.stop()
	if err := h.Snapshot(ctx, 1); !errors.Is(err, multiraft.ErrClosed) {
		t.Fatalf("snapshot on a closed host: %v, want ErrClosed", err)
	}
	c.start(outsider)
	c.waitLeader(1)
	if _, err := c.write(c.nodes[outsider], 1, key, "after"); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(1)
	if got := c.items(c.nodes[outsider], 1, key, multiraft.Linearizable); len(got) != 21 {
		t.Fatalf("%s after its restart holds %d items, want 21", outsider, len(got))
	}
}
