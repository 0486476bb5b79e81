// Package transport is the node-level peer connection manager for Herald's
// multi-raft layer.
//
// A node hosts hundreds to thousands of hashicorp/raft groups. raft's own
// NetworkTransport keeps a connection pool and large buffers per target per
// transport, which multiplies badly with the number of groups. This package
// instead owns:
//
//   - the node's single peer port (one listener, optionally TLS / mutual TLS);
//   - one multiplexed outbound connection per peer node, dialed lazily and
//     shared by every group and by node RPCs, with reconnect backoff;
//   - the wire framing (handshake, length-prefixed frames, size caps) and a
//     compact binary encoding of raft's RPC messages;
//   - a raft.Transport per group (GroupTransport), including pipelining,
//     the heartbeat fast path and InstallSnapshot over a dedicated
//     connection per transfer;
//   - node-to-node request/response calls (Handle/Call) and server-push
//     streams (HandleStream/OpenStream) on the same connections.
//
// It must not know anything about rooms, commands or the state machine:
// payloads of node RPCs are opaque bytes, and the meaning of log entries is
// the business of the packages above it.
//
// # Wire format
//
// A connection starts with a handshake that authenticates both ends
// (handshake.go): the dialer's hello (the magic "HRLD", a protocol version
// byte, a connection kind byte, its node id and a nonce), the acceptor's
// challenge (its node id, flags, its nonce and, with a cluster secret, its
// HMAC proof) or an error, the dialer's proof, and the acceptor's verdict.
// With TLS, certificates must name the node ids the ends claim. Config.
// Authorize then says what the authenticated peer may do.
//
// After that both directions carry frames: a 4-byte big-endian length of
// the rest of the frame, a frame type byte, the 8-byte group id, the 8-byte
// request id, then the payload. Frames are capped at MaxFrameSize. Requests
// only flow from dialer to acceptor on a connection; responses, stream
// messages and error replies flow back. A pair of nodes that talk both ways
// therefore uses two connections, one dialed by each side.
//
// A snapshot connection carries exactly one InstallSnapshot frame, followed
// by the raw snapshot bytes (InstallSnapshotRequest.Size of them), and one
// response frame back, after which it is closed.
package transport
