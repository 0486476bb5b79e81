package multiraft

import "time"

// Observer is told about the host's work, for metrics. Its methods run on
// the paths they measure (every proposal, applied batch, log sync and
// forwarded request), some of which hold up every group of the node: they
// must be cheap and must not block.
type Observer interface {
	// Committed: a proposal to this node's leader replica of group was
	// committed and applied by it, d after raft took it (forwarded
	// proposals included: they are measured on the leader's node).
	Committed(group uint64, d time.Duration)
	// Applied: this node's replica of group applied a batch of n
	// committed entries in d.
	Applied(group uint64, n int, d time.Duration)
	// LogSynced: one fsync of the raft log store took d (badger and wal
	// backends; see logstore.Config.OnSync).
	LogSynced(d time.Duration)
	// Forwarded: a request was sent to another node's peer port. kind is
	// the service: "propose", "query", "readindex", "barrier",
	// "group.status", "group.admin", "meta.state", "meta.register",
	// "meta.lease" or "meta.join".
	Forwarded(kind string)
}

type nopObserver struct{}

func (nopObserver) Committed(uint64, time.Duration)    {}
func (nopObserver) Applied(uint64, int, time.Duration) {}
func (nopObserver) LogSynced(time.Duration)            {}
func (nopObserver) Forwarded(string)                   {}
