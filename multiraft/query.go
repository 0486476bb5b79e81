package multiraft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/transport"
)

// Querier is implemented by an Application that answers read requests
// about a state machine in its own encoding, so that a node without a
// replica of a group can read it through a node that has one.
type Querier interface {
	// Query answers req from sm. Application-level outcomes (not found, ...)
	// belong in the returned bytes; an error means the query could not run.
	Query(sm StateMachine, req []byte) ([]byte, error)
}

// Query answers req about group at the given consistency. With a local
// replica it reads locally (as Read does). Without one it forwards the query
// over the peer port: a Linearizable query to the group's leader, a Stale
// one to the leader first and then to other replicas listed in the cluster
// state, so that a stale read still works without a leader.
//
// Errors: ErrNoGroup for a group the cluster does not have (or the meta
// group), ErrUnavailable when no replica could answer in time (with ctx's
// error as well when ctx ended), ErrClosed, or the Querier's error, which
// another replica would give as well.
func (h *Host) Query(ctx context.Context, group uint64, c Consistency, req []byte) ([]byte, error) {
	q, ok := h.cfg.App.(Querier)
	if !ok {
		return nil, fmt.Errorf("multiraft: query of group %d: the application (%T) is not a Querier", group, h.cfg.App)
	}
	if c != Linearizable && c != Stale {
		return nil, fmt.Errorf("multiraft: query of group %d: unknown consistency %d", group, c)
	}
	if group == MetaGroup {
		return nil, fmt.Errorf("%w: the meta group answers no application queries", ErrNoGroup)
	}
	h.mu.RLock()
	groups := h.cluster.Groups // 0 while the node does not know its cluster
	h.mu.RUnlock()
	if groups != 0 && group > groups {
		return nil, fmt.Errorf("%w: group %d; the cluster has groups 1..%d", ErrNoGroup, group, groups)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("multiraft: query of group %d: %w", group, err)
	}
	if h.closed.Load() {
		return nil, ErrClosed
	}
	actx, cancel := h.withTimeout(ctx)
	defer cancel()
	out, err := h.query(actx, q, group, c, req)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// The host's errors carry a context's end as text only; the
		// caller's own cancellation must still match errors.Is.
		err = &ctxError{err: err, ctx: ctx.Err()}
	}
	return out, err
}

func (h *Host) query(ctx context.Context, q Querier, group uint64, c Consistency, req []byte) ([]byte, error) {
	if h.replica(group) != nil {
		out, err := h.queryLocal(ctx, q, group, c, req)
		if !errors.Is(err, ErrNoReplica) {
			return out, err
		}
		// The replica was moved off this node under the query: ask one
		// that still has it.
	}
	payload := make([]byte, 1+len(req))
	payload[0] = byte(c)
	copy(payload[1:], req)
	h.forgetMovedLeader(group)
	if c == Stale {
		return h.queryStale(ctx, group, payload)
	}
	return h.route(ctx, group, svcQuery, payload, false)
}

// queryLocal runs q on the local replica through Read.
func (h *Host) queryLocal(ctx context.Context, q Querier, group uint64, c Consistency, req []byte) ([]byte, error) {
	var out []byte
	err := h.Read(ctx, group, c, func(sm StateMachine) error {
		var err error
		if out, err = q.Query(sm, req); err != nil {
			return fmt.Errorf("multiraft: query of group %d on node %s: %w", group, h.cfg.NodeID, err)
		}
		return nil
	})
	// The answer may carry the corruption this read found (it is the
	// application's to say so); the replica must stop serving at once.
	if rep := h.replica(group); rep != nil {
		h.checkDamage(rep)
	}
	return out, err
}

// queryStale asks the group's leader first, whose state is the freshest,
// then each other replica the cluster state lists, round after round until
// one answers or ctx ends: a stale read needs one live replica, not a
// leader or a quorum.
func (h *Host) queryStale(ctx context.Context, group uint64, payload []byte) ([]byte, error) {
	var lastErr error
	backoff := 10 * time.Millisecond
	for {
		hint := h.leaderHint(group)
		targets := h.candidates(group)
		if hint != "" {
			targets = append([]raft.ServerAddress{hint}, slices.DeleteFunc(targets, func(a raft.ServerAddress) bool { return a == hint })...)
		}
		if len(targets) == 0 && lastErr == nil {
			lastErr = fmt.Errorf("%w: group %d: no node known to hold it", ErrNoGroup, group)
		}
		for i, target := range targets {
			if h.closed.Load() {
				return nil, ErrClosed
			}
			// One dead or stuck replica must not use up the time the
			// others need: each gets an equal share of what is left.
			actx, cancel := shareOf(ctx, len(targets)-i)
			b, err := h.send(actx, target, svcQuery, group, payload)
			cancel()
			if err == nil {
				b, err = decodeReply(b)
			}
			if err == nil {
				return b, nil
			}
			if ctx.Err() != nil {
				break
			}
			switch {
			case errors.Is(err, transport.ErrClosed):
				return nil, fmt.Errorf("%w: group %d: %v", ErrClosed, group, err)
			case errors.Is(err, transport.ErrNotSent) || errors.Is(err, transport.ErrUnreachable) ||
				errors.Is(err, transport.ErrTimeout) || errors.As(err, new(*transport.RemoteError)) ||
				errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				if target == hint {
					h.setHint(group, "")
				}
			case errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoReplica):
			default:
				// The query itself failed; every replica would fail it.
				return nil, err
			}
			lastErr = fmt.Errorf("%s: %w", target, err)
		}
		d := backoff/2 + rand.N(backoff)
		if ctx.Err() != nil || !wait.Sleep(ctx, d) {
			if lastErr == nil {
				lastErr = errors.New("no replica answered")
			}
			return nil, fmt.Errorf("%w: stale query of group %d: %v (%v)", ErrUnavailable, group, lastErr, ctx.Err())
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// shareOf bounds one of n remaining attempts to an nth of ctx's time left.
func shareOf(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok || n <= 1 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(d)/time.Duration(n))
}

// forgetMovedLeader drops the leader hint of a group without a local
// replica when the cluster state no longer lists the hinted node among the
// group's replicas. Such a node answers ErrNoReplica, which route retries
// at the same address rather than treating it as a wrong hint.
func (h *Host) forgetMovedLeader(group uint64) {
	if h.replica(group) != nil {
		return // the local replica's raft keeps the hint current
	}
	hint := h.leaderHint(group)
	if hint == "" {
		return
	}
	if cands := h.candidates(group); len(cands) > 0 && !slices.Contains(cands, hint) {
		h.setHint(group, "")
	}
}

// handleQuery serves a query forwarded by a node without a replica. The
// request is one consistency byte followed by the application's request.
func (h *Host) handleQuery(ctx context.Context, _ string, group uint64, payload []byte) ([]byte, error) {
	q, ok := h.cfg.App.(Querier)
	if !ok {
		return errReply(fmt.Errorf("multiraft: node %s cannot answer queries: its application is not a Querier", h.cfg.NodeID)), nil
	}
	if len(payload) == 0 {
		return errReply(errors.New("multiraft: empty query request")), nil
	}
	c := Consistency(payload[0])
	if c != Linearizable && c != Stale {
		return errReply(fmt.Errorf("multiraft: query request with unknown consistency %d", payload[0])), nil
	}
	rep := h.replica(group)
	if rep == nil || group == MetaGroup {
		return errReply(h.noReplica(group)), nil
	}
	// A follower would first have to fetch a read index from the leader:
	// sending the caller to the leader costs the same hop once, and its
	// leader hint saves it on every later query.
	if c == Linearizable && rep.raft.State() != raft.Leader {
		return errReply(rep.notLeader()), nil
	}
	out, err := h.queryLocal(ctx, q, group, c, payload[1:])
	if err != nil {
		return errReply(err), nil
	}
	return okReply(out), nil
}

// ctxError is a host error that also matches the context error that ended
// it.
type ctxError struct {
	err, ctx error
}

func (e *ctxError) Error() string   { return e.err.Error() }
func (e *ctxError) Unwrap() []error { return []error{e.err, e.ctx} }
