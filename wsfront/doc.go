// Package wsfront is the websocket front of a Herald node: a
// github.com/lxzan/gws server speaking the JSON sub-protocol "herald.v1",
// plus the HTTP API (admin, health, metrics) and the demo page on the same
// client port.
//
// It owns authentication (JWT, with an insecure mode for local development
// only), decoding and validating client frames, per-connection limits and
// bounded outgoing queues, routing each request to its room's group through
// package multiraft, and pushing committed events to subscribed sockets.
//
// It must not reach into raft internals (only multiraft's API), must not
// block a connection's read goroutine on consensus, and must not panic on
// anything a socket sends.
//
// Not implemented yet; see docs/architecture.md for the plan.
package wsfront
