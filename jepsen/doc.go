// Package jepsen is Herald's consistency harness. It owns everything
// between "start N herald serve processes" and "this run was valid": the
// processes (kill -9, restart, SIGSTOP, graceful stop), the network between
// them (a network namespace per node with iptables partitions, or a
// userspace TCP proxy on every peer link when namespaces are not allowed),
// a fault schedule drawn from a seed (partitions, kills, pauses, a kill
// with a graceful stop, leadership transfers, replica moves, node add and
// decommission, netem), clients that
// speak herald.v1 frame by frame and record every attempt of every
// operation, and the checkers of the recorded history: lost, duplicated,
// reordered, skipped and inconsistent messages, aborted and stale reads,
// subscription streams, replica divergence, linearizability per room with
// github.com/anishathalye/porcupine, availability, and, from the admin
// status after the final heal, every replica's contact with its group's
// leader. Each run writes a
// report folder (history.jsonl, results.json, summary.txt, SVG plots,
// porcupine's HTML for rooms that are not linearizable).
//
// It talks to nodes only as a client does (the websocket protocol and the
// admin HTTP API) and through the processes and network it controls; it
// does not import server internals to observe or steer a node. The one
// exception to the black box is the proxy mode, which reads the peer
// transport's plaintext hello to learn which node dialed.
//
// Run it with cmd/herald-jepsen (make jepsen-quick, make jepsen); the
// checkers are tested on handmade histories that are each wrong in one
// way, and TestPlantedBugs runs the harness against server builds with a
// bug planted by a build tag. docs/jepsen.md has the details and results.
package jepsen
