// Package herald assembles a Herald node: the room state machine (package
// fsm) replicated by many raft groups (package multiraft), the room layer
// over them (package rooms), and the websocket front (package wsfront)
// with the HTTP endpoints beside it, on one client port and one peer port.
// Start runs a node from a Config; Shutdown and Close stop it.
package herald
