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
// A Host is one node: Start it, then Bootstrap a new cluster or Join an
// existing one (a restarted node needs neither). Propose commits a command
// in a group, forwarding it to the leader; Read runs a function on the
// local replica, linearizably (through a read index from the leader) or
// stale. MoveReplica, TransferLeader, Decommission, PlanRebalance and
// ApplyPlan change where replicas and leaders live; Snapshot compacts a
// local replica's log on demand.
//
// Package transport owns the peer port, which the host sees as Peers
// (Config.OpenPeers may open another: package peertest is an in-memory
// one for tests, and package kvtest the state machine of the host's own
// tests); package logstore owns the raft logs, and package meta what the
// meta group holds and every rule that is a pure function of it (commands
// and their apply, lease expiry, placement, rebalancing plans): the host
// runs those rules, it does not restate them. docs/multiraft.md records
// the decisions.
package multiraft
