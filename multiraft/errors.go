package multiraft

import (
	"errors"
	"fmt"
)

// Errors of the host API. Each is wrapped with the group and the reason;
// test with errors.Is.
var (
	// ErrUnavailable: no leader could be reached, or it refused the
	// request before accepting it. Nothing was committed; retry.
	ErrUnavailable = errors.New("multiraft: unavailable")
	// ErrUnknownOutcome: the proposal reached a leader but no result came
	// back (leadership lost, connection broken, timeout). It may still
	// commit: retry only with an idempotency key.
	ErrUnknownOutcome = errors.New("multiraft: unknown outcome")
	// ErrNoReplica: the request needs a replica of the group on this node.
	ErrNoReplica = errors.New("multiraft: no local replica")
	// ErrNoGroup: the group is not part of the cluster.
	ErrNoGroup = errors.New("multiraft: no such group")
	// ErrClosed: the host was closed.
	ErrClosed = errors.New("multiraft: host closed")
	// ErrNodeRemoved: the node was removed from the cluster; its identity
	// may not connect or register again.
	ErrNodeRemoved = errors.New("multiraft: node removed")
	// ErrStopTimeout: Shutdown's context ended before every part of the
	// host stopped. The error names the parts still stopping; they are
	// left as they are, with the raft log store open, and the process
	// should exit: what is on disk is then as after a crash.
	ErrStopTimeout = errors.New("multiraft: stop timed out")
	// ErrDamaged: the local replica's stored data is corrupt; it serves no
	// reads until it is rebuilt. Such errors also match ErrNoReplica, so
	// a read goes to another replica.
	ErrDamaged = errors.New("multiraft: replica damaged")
)

// NotLeaderError says the replica asked is not the group's leader; the
// leader fields are its best knowledge of who is (empty if unknown).
type NotLeaderError struct {
	Group      uint64
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("multiraft: group %d has no known leader", e.Group)
	}
	return fmt.Sprintf("multiraft: not the leader of group %d; the leader is %s at %s", e.Group, e.LeaderID, e.LeaderAddr)
}

// Is makes a NotLeaderError count as ErrUnavailable: nothing was proposed.
func (e *NotLeaderError) Is(target error) bool { return target == ErrUnavailable }

// noReplica is the error of a request that needs a local replica of group.
func (h *Host) noReplica(group uint64) error {
	return fmt.Errorf("%w of group %d on node %s", ErrNoReplica, group, h.cfg.NodeID)
}
