package multiraft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/multiraft/transport"
)

// Propose commits cmd in group and returns what the group's state machine
// returned for it. When this node does not lead the group the proposal is
// forwarded over the peer port to the leader. Errors: ErrUnavailable (not
// proposed; retry), ErrUnknownOutcome (may commit; retry only if the
// command is idempotent), ErrNoGroup, ErrClosed, or ctx's error.
func (h *Host) Propose(ctx context.Context, group uint64, cmd []byte) (any, error) {
	if group == MetaGroup {
		return nil, fmt.Errorf("%w: the meta group takes only the host's own commands", ErrNoGroup)
	}
	ctx, cancel := h.withTimeout(ctx)
	defer cancel()
	return h.routeCall(ctx, group, true, func(ctx context.Context, target raft.ServerAddress) (any, error) {
		if target == h.peers.Addr() {
			// Served here, the result is the state machine's own value:
			// no encode and decode of it, no reply framing. Errors still
			// take the wire's form, so both paths fail alike.
			res, err := h.proposeLocal(ctx, group, cmd)
			if err != nil {
				_, err = decodeReply(errReply(err))
				return nil, err
			}
			return res, nil
		}
		b, err := h.sendDecoded(ctx, target, svcPropose, group, cmd)
		if err != nil {
			return nil, err
		}
		res, err := h.cfg.App.DecodeResult(b)
		if err != nil {
			// The command committed on the leader; only its result was
			// lost on the way.
			return nil, &callError{fmt.Errorf("%w: group %d: decode result: %v", ErrUnknownOutcome, group, err)}
		}
		return res, nil
	})
}

// testHookMetaFault, when set, is asked about every meta command this node
// proposes, before proposing it (committed false: if it says so, the
// proposal fails as when no leader answers) and once it committed
// (committed true: the proposer gets an unknown outcome instead of the
// result, as when an election cuts the reply off).
var testHookMetaFault atomic.Pointer[func(cmd []byte, committed bool) bool]

func (h *Host) proposeMeta(ctx context.Context, cmd []byte) (*meta.Result, error) {
	ctx, cancel := h.withTimeout(ctx)
	defer cancel()
	fault := testHookMetaFault.Load()
	if fault != nil && (*fault)(cmd, false) {
		return nil, fmt.Errorf("%w: meta group: the proposal was dropped by a test", ErrUnavailable)
	}
	b, err := h.route(ctx, MetaGroup, svcPropose, cmd, true)
	if err != nil {
		return nil, err
	}
	if fault != nil && (*fault)(cmd, true) {
		return nil, fmt.Errorf("%w: meta group: the reply was dropped by a test", ErrUnknownOutcome)
	}
	var res meta.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("multiraft: decode meta result: %w", err)
	}
	return &res, res.Refused()
}

func (h *Host) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, h.cfg.ProposeTimeout)
}

// proposeLocal applies cmd through the local replica, which must lead.
func (h *Host) proposeLocal(ctx context.Context, group uint64, cmd []byte) (any, error) {
	rep := h.replica(group)
	if rep == nil {
		return nil, h.noReplica(group)
	}
	if rep.raft.State() != raft.Leader {
		return nil, rep.notLeader()
	}
	start := time.Now()
	release, err := rep.enterLog(ctx)
	if err != nil {
		return nil, err
	}
	timeout := h.cfg.ProposeTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := rep.raft.Apply(cmd, timeout)
	if resolved, err := rep.awaitLogged(ctx, f, release); !resolved {
		return nil, fmt.Errorf("%w: group %d: not applied in time: %v", ErrUnknownOutcome, group, err)
	} else if err != nil {
		return nil, rep.raftError(err, true)
	}
	h.cfg.Observer.Committed(group, time.Since(start))
	return f.Response(), nil
}

// handlePropose serves a proposal forwarded by another node.
func (h *Host) handlePropose(ctx context.Context, _ string, group uint64, cmd []byte) ([]byte, error) {
	res, err := h.proposeLocal(ctx, group, cmd)
	if err != nil {
		return errReply(err), nil
	}
	var b []byte
	if group == MetaGroup {
		b, err = json.Marshal(res)
	} else {
		b, err = h.cfg.App.EncodeResult(res)
	}
	if err != nil {
		// The command committed; only its result is lost in transit.
		return errReply(fmt.Errorf("%w: group %d: encode result: %v", ErrUnknownOutcome, group, err)), nil
	}
	return okReply(b), nil
}

// route sends a request for group to its leader and returns the leader's
// reply payload. It follows not-leader hints and retries while the group
// has no leader, until ctx ends. A request served on this node skips the
// peer port. mutating says an unanswered request may have taken effect.
func (h *Host) route(ctx context.Context, group uint64, service string, req []byte, mutating bool) ([]byte, error) {
	res, err := h.routeCall(ctx, group, mutating, func(ctx context.Context, target raft.ServerAddress) (any, error) {
		return h.sendDecoded(ctx, target, service, group, req)
	})
	if err != nil {
		return nil, err
	}
	return res.([]byte), nil
}

// sendDecoded is send followed by decodeReply.
func (h *Host) sendDecoded(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) ([]byte, error) {
	reply, err := h.send(ctx, target, service, group, req)
	if err == nil {
		reply, err = decodeReply(reply)
	}
	return reply, err
}

// callError is an error of a routed call that ends the routing at once,
// whatever its kind.
type callError struct{ err error }

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// routeCall is route with the request made by call, which asks target for
// group and returns what it answered (as send and decodeReply would fail).
// A *callError from call is returned as its inner error without a retry.
func (h *Host) routeCall(ctx context.Context, group uint64, mutating bool, call func(ctx context.Context, target raft.ServerAddress) (any, error)) (any, error) {
	var lastErr error
	backoff := 10 * time.Millisecond
	tried, hops := 0, 0
	for {
		if h.closed.Load() {
			return nil, ErrClosed
		}
		target := h.leaderHint(group)
		if target == "" {
			cands := h.candidates(group)
			if len(cands) == 0 && lastErr == nil {
				lastErr = fmt.Errorf("%w: group %d: no node known to hold it", ErrNoGroup, group)
			}
			if len(cands) > 0 {
				target = cands[tried%len(cands)]
			}
		}
		tried++
		if target != "" {
			sctx, end := ctx, func() {}
			if target != h.peers.Addr() {
				var ok bool
				if sctx, end, ok = h.startFlight(ctx, group, target); !ok {
					continue // a leader was observed since the hint was read
				}
			}
			reply, err := call(sctx, target)
			moved := err != nil && leaderMoved(ctx, sctx)
			end()
			if err == nil {
				return reply, nil
			}
			var nl *NotLeaderError
			var final *callError
			switch {
			case errors.As(err, &final):
				return nil, final.err
			case moved:
				// The hint already names the new leader (failover.go).
				if mutating && !errors.Is(err, transport.ErrNotSent) {
					return nil, fmt.Errorf("%w: group %d: a new leader was elected while %s, the old one, held the request", ErrUnknownOutcome, group, target)
				}
				lastErr = fmt.Errorf("group %d: a new leader was elected while %s held the request", group, target)
				continue
			case errors.As(err, &nl):
				h.setHint(group, raft.ServerAddress(nl.LeaderAddr))
				if nl.LeaderAddr != "" && nl.LeaderAddr != string(target) && hops < 3 {
					// Follow the hint at once, but not around a loop
					// of nodes that each name another.
					hops++
					lastErr = err
					continue
				}
			case errors.Is(err, transport.ErrNotSent), errors.Is(err, transport.ErrNotMember):
				// Nothing ran; a peer that has not yet applied this
				// node's registration will soon have.
				h.setHint(group, "")
			case errors.Is(err, transport.ErrUnreachable) || errors.Is(err, transport.ErrTimeout) ||
				errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
				// The request left: the leader may have acted on it.
				h.setHint(group, "")
				if mutating {
					return nil, fmt.Errorf("%w: group %d: no reply from %s: %v", ErrUnknownOutcome, group, target, err)
				}
			case errors.Is(err, transport.ErrClosed):
				// This node is shutting down under the request.
				if mutating {
					return nil, fmt.Errorf("%w (%w): group %d: %v", ErrClosed, ErrUnknownOutcome, group, err)
				}
				return nil, fmt.Errorf("%w: group %d: %v", ErrClosed, group, err)
			case errors.As(err, new(*transport.RemoteError)):
				// The peer's transport failed the request (shutting down,
				// overloaded), not our handler: it may or may not have run.
				h.setHint(group, "")
				if mutating {
					return nil, fmt.Errorf("%w: group %d: %s: %v", ErrUnknownOutcome, group, target, err)
				}
			case errors.Is(err, ErrNoReplica):
				// The hint names a node the group moved away from: ask
				// the nodes the cluster state lists instead.
				h.setHint(group, "")
			case errors.Is(err, ErrUnavailable):
			default:
				return nil, err
			}
			lastErr = err
		}
		hops = 0
		// Jitter so that many proposers waiting for an election do not
		// arrive together.
		d := backoff/2 + rand.N(backoff)
		if !h.sleepRoute(ctx, group, d) {
			if lastErr == nil {
				lastErr = fmt.Errorf("group %d has no leader", group)
			}
			return nil, fmt.Errorf("%w: %v (%v)", ErrUnavailable, lastErr, ctx.Err())
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// send delivers a request to one node, calling the handler directly when
// the node is this one.
func (h *Host) send(ctx context.Context, target raft.ServerAddress, service string, group uint64, req []byte) ([]byte, error) {
	if target == h.peers.Addr() {
		handler := h.handlers[service]
		if handler == nil {
			return nil, fmt.Errorf("multiraft: no local handler for %s", service)
		}
		return handler(ctx, h.cfg.NodeID, group, req)
	}
	h.cfg.Observer.Forwarded(strings.TrimPrefix(service, "mr."))
	return h.peers.Call(ctx, target, service, group, req)
}

func (h *Host) leaderHint(group uint64) raft.ServerAddress {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if rep := h.replicas[group]; rep != nil {
		if addr, _ := rep.raft.LeaderWithID(); addr != "" {
			return addr
		}
	}
	return h.hints[group]
}

func (h *Host) setHint(group uint64, addr raft.ServerAddress) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if addr == "" {
		delete(h.hints, group)
	} else {
		h.hints[group] = addr
	}
}

// candidates lists the nodes that may hold a replica of group.
func (h *Host) candidates(group uint64) []raft.ServerAddress {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []raft.ServerAddress
	add := func(a raft.ServerAddress) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if group == MetaGroup {
		if rep := h.replicas[MetaGroup]; rep != nil {
			if f := rep.raft.GetConfiguration(); f.Error() == nil {
				for _, s := range f.Configuration().Servers {
					add(s.Address)
				}
			}
		}
		for _, s := range h.seeds {
			add(s)
		}
		for _, id := range h.cluster.NodeIDs() {
			add(raft.ServerAddress(h.cluster.Nodes[id].PeerAddr))
		}
		return out
	}
	for _, id := range h.cluster.Replicas[group] {
		if n := h.cluster.Nodes[id]; n != nil {
			add(raft.ServerAddress(n.PeerAddr))
		}
	}
	return out
}
