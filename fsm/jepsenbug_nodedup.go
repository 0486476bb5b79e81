//go:build jepsenbug_nodedup

package fsm

// A bug planted for the consistency harness (jepsen/, docs/jepsen.md) and
// built only with the tag jepsenbug_nodedup: publishes skip the
// idempotency check, so a retry of a publish that did commit appends it
// again. The harness must report duplicated messages.
func init() {
	plantedNoDedup = func(string) bool { return true }
}
