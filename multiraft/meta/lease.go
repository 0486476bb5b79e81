package meta

import (
	"sync"
	"time"
)

// Node leases. Every node renews its lease with the meta leader every
// LeaseTTL/4. The meta leader keeps renewal times in memory only: a new
// meta leader starts every node with a full TTL, so a leader change can
// delay an expiry by one TTL but never cause a false one.

// Leases is the meta leader's table of lease renewals. The zero value is
// ready to use.
type Leases struct {
	mu      sync.Mutex           // guards term and renewed
	term    uint64               // meta term the table was built in
	renewed map[string]time.Time // node -> last renewal seen in term
}

// Renew records that node renewed its lease at now, seen by the leader of
// term.
func (l *Leases) Renew(term uint64, node string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resetLocked(term)
	l.renewed[node] = now
}

// resetLocked forgets renewals seen in an earlier term: they were seen by
// another leader, or by this node in an earlier leadership.
func (l *Leases) resetLocked(term uint64) {
	if l.term == term && l.renewed != nil {
		return
	}
	l.term, l.renewed = term, map[string]time.Time{}
}

// lastRenewal is when node last renewed in term; a node not seen yet in
// this term counts as renewed now, which gives it a full TTL.
func (l *Leases) lastRenewal(term uint64, node string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resetLocked(term)
	t, ok := l.renewed[node]
	if !ok {
		l.renewed[node] = now
		t = now
	}
	return t
}

// Expired returns, sorted, the nodes of st whose current epoch's lease ran
// out at now for the leader of term: registered, not yet marked expired,
// and not renewed for more than ttl. A node this leader has not seen
// renew starts its TTL now.
func (l *Leases) Expired(st *ClusterState, term uint64, now time.Time, ttl time.Duration) []string {
	var out []string
	for _, id := range st.NodeIDs() {
		n := st.Nodes[id]
		if n.LeaseExpired || n.Epoch == 0 {
			continue
		}
		if now.Sub(l.lastRenewal(term, id, now)) > ttl {
			out = append(out, id)
		}
	}
	return out
}

// Renewal is the meta leader's verdict on a node renewing its lease.
type Renewal int

const (
	// RenewUnknown: the state does not know the epoch yet (a new leader
	// may not have applied the registration); ask again later.
	RenewUnknown Renewal = iota
	// RenewExpired: the epoch is over (a newer one registered, or its
	// lease ran out); the node must register again.
	RenewExpired
	// RenewOK: the lease is renewed.
	RenewOK
)

// Renewal judges node's renewal of its lease under epoch.
func (s *ClusterState) Renewal(node string, epoch uint64) Renewal {
	n := s.Nodes[node]
	switch {
	case n == nil || n.Epoch < epoch:
		return RenewUnknown
	case n.Epoch > epoch || n.LeaseExpired:
		return RenewExpired
	}
	return RenewOK
}

// NodeLive reports whether the meta group believes node runs: it is a
// member, registered, and its lease has not run out.
func (s *ClusterState) NodeLive(node string) bool {
	n := s.Nodes[node]
	return n != nil && n.Epoch != 0 && !n.LeaseExpired
}

// NodeDown reports whether the meta group knows node to be down: its lease
// ran out, or it is no longer a member. A node that has not registered yet
// (just joined) is not down.
func (s *ClusterState) NodeDown(node string) bool {
	n := s.Nodes[node]
	return n == nil || n.LeaseExpired
}
