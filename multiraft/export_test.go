package multiraft

import (
	"context"

	"github.com/heraldhq/herald/multiraft/transport"
)

// GroupAdminForTest changes a group's raft configuration behind the meta
// group's back, as moves from before operation records could leave it.
func (h *Host) GroupAdminForTest(ctx context.Context, group uint64, op, id, addr string) error {
	return h.groupAdmin(ctx, group, groupAdminRequest{Op: op, ID: id, Addr: addr})
}

// HeartbeatStatsOf is the node's raft heartbeat counters, for benchmarks.
func HeartbeatStatsOf(h *Host) transport.HeartbeatStats { return h.peers.HeartbeatStats() }
