// Package meta is what the meta group (group 0) holds and the rules that
// are pure functions of it: the cluster state (nodes and their epochs,
// each data group's replica set, the replica change in progress per group,
// the application's settings), the commands that change it and the state
// machine that applies them, the rules of node leases, and placement: which
// group a key lives in, where a new cluster's replicas go, and the plan of
// moves that empties leaving nodes and evens out replicas and leaders.
//
// Nothing here talks to the network, starts a goroutine or reads the clock:
// multiraft.Host runs the meta group's raft replica with FSM as its state
// machine, proposes the commands built here, and carries out plans.
//
// Commands and snapshots are JSON and are stored in raft logs and
// snapshots, and results cross between nodes: their encodings never change
// (testdata holds bytes that must keep decoding the same). Error texts keep
// the "multiraft:" prefix because they reach operators as the host's.
package meta
