// Package multiraft runs many Raft groups per node on
// github.com/hashicorp/raft: one raft.Raft per group per replica, a meta
// group (group 0) holding cluster nodes, their addresses, node leases and the
// replica set of every data group, and data groups 1..G to which rooms are
// mapped by a stable hash of their name.
//
// It owns the node's single peer port (all groups multiplexed over one
// connection per peer node), group bootstrap, raft log storage, proposal
// forwarding to group leaders, linearizable reads, placement and
// rebalancing. Its API is the only way other packages reach consensus.
//
// It must not interpret room commands or events: what a log entry means is
// the business of package fsm, and sockets and the client protocol belong to
// package wsfront.
//
// Not implemented yet; see docs/architecture.md for the plan.
package multiraft
