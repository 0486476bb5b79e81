// Package client is the Go client for Herald's "herald.v1" websocket
// protocol: dial any node, authenticate, publish with idempotency keys and
// retries, subscribe with automatic resume on reconnect (no gap, no
// duplicate), and read members and history. A dependency-free ES-module
// browser client will live in client/js.
//
// It owns only the client side of the wire protocol documented in
// docs/protocol.md; it must not import server packages (fsm, multiraft,
// wsfront), so programs can use it without pulling in a node.
//
// Not implemented yet; see docs/architecture.md for the plan.
package client
