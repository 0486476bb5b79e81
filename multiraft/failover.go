package multiraft

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// Requests waiting on a leader that went silent.
//
// A leader that stops without closing its sockets (SIGSTOP, a frozen VM)
// holds every request forwarded to it until the transport's liveness probe
// gives up on the connection: two ProbeAfter intervals of silence, 2 s by
// default, while the other replicas elect a new leader in about one
// election timeout. A node with a replica of the group learns of the new
// leader from raft as soon as it happens; from then on, waiting on the old
// leader can only end in "not the leader" or silence. So each forwarded
// request is registered as a flight to its target, and when the local
// replica observes a new leader elsewhere, each other node that flights of
// the group wait on gets a ping (answerWithin); the flights to a node that
// stays silent are cancelled. A node that answers is alive, as after a
// leadership transfer, and answers its requests itself: cancelling them
// would turn proposals about to succeed into unknown outcomes, and a
// leadership transfer's own request into a failure. A cancelled flight:
//
//   - a read or other request without effect is sent to the new leader at
//     once, as if the old one had answered with a hint;
//   - a proposal returns ErrUnknownOutcome: it may sit in the old leader's
//     log, replicated to a follower that the new leader will commit from, so
//     "not proposed" would be a lie. The caller that knows the command is
//     idempotent retries it (wsfront retries a publish with a key at once,
//     and the state machine answers a repeated key with the first result),
//     the others tell their client, who retries with its key. Retrying here
//     without knowing the command could commit it twice.
//
// A route sleeping because the group had no leader also wakes as soon as
// one is observed, instead of finishing a backoff of up to 750 ms.
//
// A node without a replica of the group sees no raft observations; it still
// waits for the probe (and a leader hint from another node).

// errLeaderMoved is the cause of a flight cancelled because the group's
// leader is now another node.
var errLeaderMoved = errors.New("multiraft: the group's leader changed while the request waited")

// flight is a request forwarded to target, waiting for its reply.
type flight struct {
	target raft.ServerAddress
	cancel context.CancelCauseFunc
}

// groupWaits are the flights and sleeping routes of one group.
type groupWaits struct {
	flights map[*flight]struct{}
	// elected is closed when a leader is observed; nil until a route
	// sleeps on it. sleepers counts the routes sleeping on it.
	elected  chan struct{}
	sleepers int
}

// startFlight registers a request about to be forwarded to target for
// group, and returns the context to send it with and the function that
// ends the flight. ok is false, and nothing is registered, when the group's
// leader is already known to be another node: route again instead.
func (h *Host) startFlight(ctx context.Context, group uint64, target raft.ServerAddress) (fctx context.Context, end func(), ok bool) {
	fctx, cancel := context.WithCancelCause(ctx)
	f := &flight{target: target, cancel: cancel}
	h.fmu.Lock()
	w := h.waitsLocked(group)
	w.flights[f] = struct{}{}
	h.fmu.Unlock()
	end = func() {
		h.fmu.Lock()
		delete(w.flights, f)
		h.dropWaitsLocked(group, w)
		h.fmu.Unlock()
		cancel(nil)
	}
	// Registered before this check, so a leader observed from now on
	// cancels the flight, and one observed before shows here (the hint is
	// set before flights are cancelled).
	if l := h.leaderHint(group); l != "" && l != target {
		end()
		return nil, nil, false
	}
	return fctx, end, true
}

// leaderMoved reports whether a request sent with fctx under ctx was
// abandoned because its group's leader moved.
func leaderMoved(ctx, fctx context.Context) bool {
	return ctx.Err() == nil && errors.Is(context.Cause(fctx), errLeaderMoved)
}

// answerWithin is how long a previous leader has to answer a ping once
// its group elected another: a live node's reader answers at once, so
// this covers only scheduling on a loaded machine, and it is what the
// check adds to a failover (the probe would take two ProbeAfter).
const answerWithin = 200 * time.Millisecond

// targetCheck is a ping to a node that requests of some groups wait on
// while those groups have elected another leader.
type targetCheck struct{ groups map[uint64]struct{} }

// leaderObserved wakes the group's sleeping routes and, for each other
// node that requests of the group wait on, pings it: a node that does not
// answer within answerWithin gets those requests cancelled. One that does
// is alive (a leadership transfer, not a pause) and will answer them
// itself, with its result or a hint.
func (h *Host) leaderObserved(group uint64, addr raft.ServerAddress) {
	if addr == "" {
		// An election is on: the old leader may still win it.
		return
	}
	h.fmu.Lock()
	defer h.fmu.Unlock()
	w := h.waits[group]
	if w == nil {
		return
	}
	if w.elected != nil {
		close(w.elected)
		w.elected = nil
	}
	for f := range w.flights {
		if f.target == addr {
			continue
		}
		if ck := h.checks[f.target]; ck != nil {
			ck.groups[group] = struct{}{}
			continue
		}
		ck := &targetCheck{groups: map[uint64]struct{}{group: {}}}
		h.checks[f.target] = ck
		// Called from observeLeaders, itself in h.wg: Add cannot race
		// with Close's Wait.
		h.wg.Add(1)
		go h.checkTarget(f.target, ck)
	}
}

// checkTarget pings target and, when it stays silent, cancels the flights
// to it of the groups that elected another leader.
func (h *Host) checkTarget(target raft.ServerAddress, ck *targetCheck) {
	defer h.wg.Done()
	ctx, cancel := context.WithTimeout(h.ctx, answerWithin)
	alive := h.peers.Answers(ctx, target)
	cancel()
	h.fmu.Lock()
	defer h.fmu.Unlock()
	delete(h.checks, target)
	if alive {
		return
	}
	for g := range ck.groups {
		w := h.waits[g]
		if w == nil {
			continue
		}
		for f := range w.flights {
			if f.target == target {
				f.cancel(errLeaderMoved)
			}
		}
	}
}

// sleepRoute waits d, until ctx ends, or until a leader of group is
// observed; false means ctx ended.
func (h *Host) sleepRoute(ctx context.Context, group uint64, d time.Duration) bool {
	h.fmu.Lock()
	w := h.waitsLocked(group)
	if w.elected == nil {
		w.elected = make(chan struct{})
	}
	elected := w.elected
	w.sleepers++
	h.fmu.Unlock()
	defer func() {
		h.fmu.Lock()
		w.sleepers--
		h.dropWaitsLocked(group, w)
		h.fmu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-elected:
	}
	return true
}

func (h *Host) waitsLocked(group uint64) *groupWaits {
	w := h.waits[group]
	if w == nil {
		w = &groupWaits{flights: map[*flight]struct{}{}}
		h.waits[group] = w
	}
	return w
}

// dropWaitsLocked forgets a group with nothing waiting, so idle groups
// cost nothing.
func (h *Host) dropWaitsLocked(group uint64, w *groupWaits) {
	if len(w.flights) == 0 && w.sleepers == 0 && h.waits[group] == w {
		delete(h.waits, group)
	}
}
