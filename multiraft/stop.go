package multiraft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// hostStop is the state of a host's shutdown. One goroutine (run) stops the
// parts in order; any number of Shutdown calls wait for it, each within its
// own context, so a part that never stops (raft waiting on something that
// will not come) bounds no caller.
type hostStop struct {
	once  sync.Once
	start time.Time
	done  chan struct{} // closed when run has stopped everything
	err   error         // run's result, set before done is closed

	mu      sync.Mutex
	pending map[string]string // part still stopping -> what it is doing; guarded by mu
}

func (s *hostStop) set(part, step string) {
	s.mu.Lock()
	s.pending[part] = step
	s.mu.Unlock()
}

func (s *hostStop) finish(part string) {
	s.mu.Lock()
	delete(s.pending, part)
	s.mu.Unlock()
}

// stillStopping lists the parts not stopped yet, as "part (step)", sorted.
func (s *hostStop) stillStopping() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.pending))
	for part, step := range s.pending {
		out = append(out, fmt.Sprintf("%s (%s)", part, step))
	}
	slices.Sort(out)
	return out
}

// Shutdown stops every replica, the host's own loops and the peer port,
// then closes the raft log store, keeping all data. It returns when all of
// that is done, with the errors met on the way, or when ctx ends first.
// Then it logs the parts still stopping by name (a replica as "group N",
// with the step it is in) and returns an error wrapping ErrStopTimeout
// that names them. Those parts are left to finish on their own, if ever,
// with the log store open: after such an error the process should exit.
// Calling Shutdown again waits again for the same stop, so a caller that
// can afford to wait longer may. It does not hand leaderships over;
// TransferLeaderships does that first.
func (h *Host) Shutdown(ctx context.Context) error {
	s := &h.stop
	s.once.Do(func() {
		h.closed.Store(true)
		s.start = time.Now()
		s.done = make(chan struct{})
		s.pending = map[string]string{}
		// Appends in flight get at most half the time: raft's shutdown and
		// the rest need the other half.
		drain := drainTimeout
		if dl, ok := ctx.Deadline(); ok {
			drain = min(drain, time.Until(dl)/2)
		}
		// Owned by the host; it ends when the last part has stopped, which
		// Shutdown's callers wait for no longer than their contexts allow.
		go h.runStop(drain)
	})
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
	}
	select {
	case <-s.done: // both ready: the stop did finish
		return s.err
	default:
	}
	parts := s.stillStopping()
	after := time.Since(s.start).Round(time.Millisecond)
	h.log.Error("stop timed out: leaving parts still stopping behind", "after", after, "still_stopping", parts)
	return fmt.Errorf("%w on node %s after %v; still stopping: %s", ErrStopTimeout, h.cfg.NodeID, after, strings.Join(parts, ", "))
}

// runStop stops the host's parts in order: replicas (all at once), the
// peer port, the host's loops, the log store.
func (h *Host) runStop(drain time.Duration) {
	s := &h.stop
	defer close(s.done)
	h.cancel()
	h.mu.Lock()
	reps := make([]*replica, 0, len(h.replicas))
	for _, r := range h.replicas {
		reps = append(reps, r)
	}
	h.replicas = map[uint64]*replica{}
	h.mu.Unlock()

	var (
		emu  sync.Mutex
		errs []error // guarded by emu
		wg   sync.WaitGroup
	)
	for _, r := range reps {
		part := fmt.Sprintf("group %d", r.group)
		s.set(part, "starting")
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := h.stopReplica(r, drain, func(step string) { s.set(part, step) })
			s.finish(part)
			if err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", part, err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()

	s.set("peer port", "closing")
	errs = append(errs, h.peers.Close())
	s.finish("peer port")
	s.set("host loops", "waiting for them to return")
	h.wg.Wait()
	s.finish("host loops")
	s.set("raft log store", "closing")
	errs = append(errs, h.logs.Close())
	s.finish("raft log store")
	s.err = errors.Join(errs...)
}
