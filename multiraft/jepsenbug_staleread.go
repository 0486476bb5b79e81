//go:build jepsenbug_staleread

package multiraft

// A bug planted for the consistency harness (jepsen/, docs/jepsen.md) and
// built only with the tag jepsenbug_staleread: linearizable reads skip the
// read index and answer from the local replica, which a partitioned or
// lagging follower serves stale. The harness must report stale reads.
func init() {
	plantedStaleRead = func() bool { return true }
}
