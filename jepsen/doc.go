// Package jepsen is Herald's consistency harness: it starts real herald
// processes, drives many clients over websockets, injects faults
// (partitions, kill -9 and restart, SIGSTOP pauses, leader transfers, node
// add and remove), records a history and checks it for lost, duplicated,
// reordered or skipped messages, inconsistent seqs, aborted reads, replica
// divergence and, with github.com/anishathalye/porcupine partitioned by
// room, linearizability. Every checker is tested on histories known to be
// wrong.
//
// It talks to nodes only as a client does (the websocket protocol and the
// admin HTTP API) and through the processes and network it controls; it must
// not import server internals to observe or steer a node.
//
// Not implemented yet; see docs/architecture.md for the plan.
package jepsen
