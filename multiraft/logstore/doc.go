// Package logstore owns the raft log and stable storage for every group
// hosted on a node. It knows nothing of rooms or transport: callers get one
// Store (a raft.LogStore and raft.StableStore) per group from a Backend and
// hand it to raft.NewRaft, normally wrapped in raft.NewLogCache.
//
// Three durable backends sit behind the same API:
//
//   - KindBadger: one badger DB per node shared by all groups. A single
//     committer goroutine merges the concurrent writes of many groups into
//     one badger transaction followed by one sync (group commit), so a node
//     hosting a thousand groups pays one fsync per batch instead of one or
//     two per group write.
//   - KindWAL: one append-only segmented log per node shared by all
//     groups, one fdatasync per merged batch, entries found through an
//     in-memory index and read back by pread (wal.go).
//   - KindBolt: one bbolt file per group through raft-boltdb. Simple and
//     isolated, but every write of every group pays its own fsyncs.
//
// In all three, a write that returned nil survives a crash of the process.
package logstore
