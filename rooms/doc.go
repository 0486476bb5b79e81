// Package rooms is the room layer of a node: everything above the raft
// groups speaks to the cluster through it, in rooms, never in groups,
// entries or peers.
//
// It owns:
//   - Service, the room-level API over the node's multiraft host: commit a
//     command and get its typed result (Propose), read a room (History,
//     Members, Room), list the cluster's rooms (Rooms) and nodes (Nodes),
//     follow a group's committed events from its leader (GroupEvents), and
//     the namespace rules that configure rooms by name prefix;
//   - Application, which tells multiraft how to open and talk about a room
//     group (package fsm's state machine in every data group), and the
//     binary form of room reads that travel between nodes (Query, Answer);
//   - the one table from the cluster's errors to the codes of protocol
//     herald.v1, with the retry rules behind its guarantees (Commit, Read,
//     ErrorOf, ResultError).
//
// The websocket front (package wsfront), the server API (package
// serverapi), the admin API and an embedder use it; none of them needs
// package multiraft for rooms. A Service runs the duties of the node's
// group leaders (history age limits, namespace rules) until Shutdown.
package rooms
