// Package wsfront is a Herald node's client port: the websocket endpoint
// that speaks protocol herald.v1 (docs/protocol.md) and the node's plain
// HTTP endpoints beside it.
//
// It owns sessions (one per socket: authentication, the rooms it joined and
// subscribed to, its limits and its bounded outgoing queue), the decoding and
// validation of client frames, the routing of each request to the replicated
// store, and the delivery of committed events to sockets: in seq order,
// exactly once per subscription, with no gap when it switches from history
// to live events or from one event source to another.
//
// It must not reach into raft: it sees the cluster only through Backend,
// which the room layer (package rooms) implements, answers failures with
// the room layer's table from errors to protocol codes, and interprets
// room state only through package fsm's types.
//
// # Event delivery
//
// Each node keeps, per raft group that has subscribers on it, one feed of
// the group's committed events: from the local state machine when this node
// leads the group, else one shared stream from the leader's node. A feed is
// not trusted to be gap-free: every subscription tracks the next seq it
// owes its socket, delivers an event only when it is that seq, and reads the
// missing events from history whenever it sees a gap (and for every room of
// a feed whenever the feed reopens, since events may have committed while no
// stream was open). History reads are linearizable, so a subscription's
// catch-up always reaches at least what was committed when it began.
//
// A feed hands on the events that arrived meanwhile as one batch. Each
// event is decoded and encoded once per node, as a whole websocket frame
// whose bytes every socket of its room shares; a socket's outbox writes
// everything queued for it with one system call (outbox.go).
package wsfront
