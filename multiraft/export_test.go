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

// HeartbeatStatsOf is the node's raft heartbeat counters, for benchmarks
// (zero on a peer port other than the TCP one, which batches none).
func HeartbeatStatsOf(h *Host) transport.HeartbeatStats {
	if p, ok := h.peers.(tcpPeers); ok {
		return p.HeartbeatStats()
	}
	return transport.HeartbeatStats{}
}

// SetDropHookForTest has f run on a node dropping a replica (a repair's
// reset, a move off the node) between stopping it and deleting its data.
// Set it before any host starts and restore it after every host stopped.
func SetDropHookForTest(f func(h *Host, group uint64)) (restore func()) {
	old := testHookDropStopped
	testHookDropStopped = f
	return func() { testHookDropStopped = old }
}

// ReconcileForTest runs one round of the host's reconcile loop.
func (h *Host) ReconcileForTest() { h.reconcile() }

// MetaFaultsForTest has fault decide, for every meta command a node
// proposes, whether the proposal fails before it is made (committed false)
// or its committed result is lost (committed true).
// Restore it after every host stopped.
func MetaFaultsForTest(fault func(cmd []byte, committed bool) bool) (restore func()) {
	old := testHookMetaFault.Swap(&fault)
	return func() { testHookMetaFault.Store(old) }
}
