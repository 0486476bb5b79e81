package multiraft

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/wait"
)

// Snapshot makes the local replica of group (the meta group included) take
// a raft snapshot now and compact its log, instead of waiting for
// SnapshotThreshold new entries. Operators use it before a backup, to
// shrink a log that grew large, or to check that snapshots work. A replica
// that has applied nothing yet has nothing to snapshot: that is not an
// error. Errors: ErrNoReplica, ErrClosed, or why raft could not snapshot.
func (h *Host) Snapshot(ctx context.Context, group uint64) error {
	if h.closed.Load() {
		return ErrClosed
	}
	rep := h.replica(group)
	if rep == nil {
		return h.noReplica(group)
	}
	delay := 10 * time.Millisecond
	for {
		err := waitFuture(ctx, rep.raft.Snapshot())
		switch {
		case err == nil, errors.Is(err, raft.ErrNothingNewToSnapshot):
			return nil
		case errors.Is(err, raft.ErrRaftShutdown):
			return fmt.Errorf("%w: group %d on node %s is shutting down", ErrClosed, group, h.cfg.NodeID)
		case ctx.Err() != nil:
			return fmt.Errorf("multiraft: snapshot of group %d on node %s: %w", group, h.cfg.NodeID, ctx.Err())
		case !strings.Contains(err.Error(), "wait until the configuration entry"):
			return fmt.Errorf("multiraft: snapshot of group %d on node %s: %w", group, h.cfg.NodeID, err)
		}
		// Raft refuses while its state machine has not yet applied a
		// committed configuration change (a replica move just happened);
		// that passes as soon as the entry is applied.
		if !wait.Sleep(ctx, delay) {
			return fmt.Errorf("multiraft: snapshot of group %d on node %s: %w (last: %v)", group, h.cfg.NodeID, ctx.Err(), err)
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}
