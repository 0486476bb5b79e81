//go:build jepsenbug_nosync

package logstore

// A bug planted for the consistency harness (jepsen/, docs/jepsen.md) and
// built only with the tag jepsenbug_nosync: the raft log store never
// fsyncs (badger's committer skips DB.Sync; raft-boltdb opens with
// NoSync), so raft acknowledges entries that only the page cache holds.
// A kill -9 keeps them (the kernel writes them back); a power loss of a
// quorum loses acknowledged messages, which the harness must report.
func init() {
	plantedNoSync = func() bool { return true }
}
