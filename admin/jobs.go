package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

const (
	defaultJobTimeout = time.Hour
	maxJobTimeout     = 24 * time.Hour
	// keptJobs is how many ended jobs a node remembers for polling.
	keptJobs = 32
)

// jobs runs the long operations of one node's admin API in the
// background. At most one runs at a time: two rebalances or a rebalance
// and a decommission would plan against each other's half-done moves.
type jobs struct {
	// node, log, base and spawn are set at construction, read-only after.
	node string
	log  *slog.Logger
	// base ends when the node stops, and every job with it: a job may run
	// for hours, and must not outlive its node.
	base context.Context
	// spawn runs a job's goroutine as one the node owns, so that the
	// node's Shutdown waits for it (herald.Node.Go); false once the node
	// is stopping.
	spawn func(func(context.Context)) bool

	// mu guards everything below, and the job of every jobState in list.
	mu   sync.Mutex
	seq  int
	list []*jobState // oldest first
	// interrupted is the move a failed or canceled rebalance was in the
	// middle of. A move cut off halfway leaves its group with an extra
	// replica that a new plan would not see as such, so the next rebalance
	// finishes it first.
	interrupted *Move
}

type jobState struct {
	job    Job // guarded by jobs.mu; handed out only as clones
	cancel context.CancelFunc
	done   chan struct{}
}

func newJobs(base context.Context, spawn func(func(context.Context)) bool, node string, log *slog.Logger) *jobs {
	return &jobs{base: base, spawn: spawn, node: node, log: log}
}

// progress is how a running job reports.
type progress struct {
	j  *jobs
	st *jobState
}

func (p progress) update(fn func(j *Job)) {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	fn(&p.st.job)
}

// start runs fn as a new job, or refuses while another job runs.
func (j *jobs) start(kind, node string, timeout time.Duration, fn func(ctx context.Context, p progress) error) (Job, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, st := range j.list {
		if st.job.State == JobRunning {
			return Job{}, conflict("job_running", "job %s (%s) is still running on node %s; wait for it or cancel it with DELETE %sjobs/%s",
				st.job.ID, st.job.Kind, j.node, Prefix, st.job.ID)
		}
	}
	j.seq++
	now := time.Now()
	ctx, cancel := context.WithTimeout(j.base, timeout)
	st := &jobState{
		job: Job{ID: fmt.Sprintf("%s-%d", j.node, j.seq), Kind: kind, Node: node, State: JobRunning,
			Started: now.UTC(), Deadline: now.Add(timeout).UTC()},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	started := j.spawn(func(context.Context) {
		defer close(st.done)
		defer cancel()
		err := fn(ctx, progress{j, st})
		j.mu.Lock()
		defer j.mu.Unlock()
		st.job.Finished = time.Now().UTC()
		st.job.Current = nil
		switch {
		case err == nil:
			st.job.State = JobSucceeded
		case errors.Is(ctx.Err(), context.Canceled):
			st.job.State = JobCanceled
			st.job.Error = &APIError{Status: http.StatusServiceUnavailable, Code: "canceled",
				Message: fmt.Sprintf("canceled (%v); running it again resumes where it stopped", err)}
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			st.job.State = JobFailed
			st.job.Error = &APIError{Status: http.StatusServiceUnavailable, Code: "timeout",
				Message: fmt.Sprintf("the job did not finish within %v (%v); running it again resumes where it stopped", timeout, err)}
		default:
			st.job.State = JobFailed
			st.job.Error = toAPIError(err)
		}
		j.log.Info("admin job ended", "job", st.job.ID, "state", st.job.State, "err", err)
	})
	if !started {
		cancel()
		return Job{}, unavailable("node %s is stopping", j.node)
	}
	j.list = append(j.list, st)
	if len(j.list) > keptJobs {
		j.list = slices.Delete(j.list, 0, len(j.list)-keptJobs)
	}
	j.log.Info("admin job started", "job", st.job.ID, "kind", kind, "node", node)
	return cloneJob(st.job), nil
}

func cloneJob(j Job) Job {
	j.Moves = slices.Clone(j.Moves)
	if j.Current != nil {
		m := *j.Current
		j.Current = &m
	}
	if j.Resumed != nil {
		m := *j.Resumed
		j.Resumed = &m
	}
	if j.Error != nil {
		e := *j.Error
		j.Error = &e
	}
	return j
}

func (j *jobs) get(id string) (Job, *jobState, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, st := range j.list {
		if st.job.ID == id {
			return cloneJob(st.job), st, true
		}
	}
	return Job{}, nil, false
}

func (j *jobs) all() []Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Job, 0, len(j.list))
	for _, st := range j.list {
		out = append(out, cloneJob(st.job))
	}
	return out
}

func (j *jobs) running() []Job {
	var out []Job
	for _, jb := range j.all() {
		if jb.State == JobRunning {
			out = append(out, jb)
		}
	}
	return out
}

func (j *jobs) takeInterrupted() *Move {
	j.mu.Lock()
	defer j.mu.Unlock()
	m := j.interrupted
	j.interrupted = nil
	return m
}

func (j *jobs) setInterrupted(m *Move) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.interrupted = m
}

func (s *server) listJobs(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, struct {
		Jobs []Job `json:"jobs"`
	}{s.jobs.all()})
	return nil
}

func (s *server) jobByID(r *http.Request) (Job, *jobState, error) {
	id := r.PathValue("id")
	jb, st, ok := s.jobs.get(id)
	if !ok {
		return Job{}, nil, notFound("job_not_found", "node %s has no job %q; jobs live on the node that started them, and only the last %d are kept",
			s.host.NodeID(), id, keptJobs)
	}
	return jb, st, nil
}

func (s *server) showJob(w http.ResponseWriter, r *http.Request) error {
	jb, _, err := s.jobByID(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jb)
	return nil
}

// cancelJob cancels a running job and waits briefly for it to stop, so the
// reply usually shows it ended.
func (s *server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	_, st, err := s.jobByID(r)
	if err != nil {
		return err
	}
	st.cancel()
	select {
	case <-st.done:
	case <-time.After(5 * time.Second):
	case <-r.Context().Done():
	}
	jb, _, _ := s.jobs.get(r.PathValue("id"))
	writeJSON(w, http.StatusOK, jb)
	return nil
}
