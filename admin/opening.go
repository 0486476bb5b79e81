package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// The handlers open in the same steps, in the order the API reports their
// errors: the path (a group id), then the body (too_large, bad_json, a
// request wrong in itself, a bad timeout), then the cluster (not joined,
// the meta group unreadable, a group the cluster does not have). The
// helpers below are those steps, once.

// changeRequest is the body of a request that changes the cluster.
type changeRequest interface {
	// check refuses a request that is wrong in itself, before the cluster
	// is consulted.
	check() error
	// timeout is the bound the request asks for; zero asks for the
	// endpoint's default.
	timeout() Duration
}

// readChange decodes the body of a request that changes the cluster into
// req, checks it, and returns how long the request may take: the timeout
// it names, def when it names none, at most max.
func readChange(w http.ResponseWriter, r *http.Request, req changeRequest, def, max time.Duration) (time.Duration, error) {
	if err := decodeBody(w, r, req); err != nil {
		return 0, err
	}
	if err := req.check(); err != nil {
		return 0, err
	}
	return timeoutOf(req.timeout(), def, max)
}

// openGroupChange runs every opening step of a request that changes the
// group its path names: the group id, readChange, then groupWithin. The
// caller must call cancel, also after an error.
func (s *server) openGroupChange(w http.ResponseWriter, r *http.Request, req changeRequest, def, max time.Duration) (
	g uint64, ctx context.Context, cancel context.CancelFunc, st *meta.ClusterState, err error) {
	g, err = parseGroupID(r)
	if err != nil {
		return 0, nil, func() {}, nil, err
	}
	timeout, err := readChange(w, r, req, def, max)
	if err != nil {
		return 0, nil, func() {}, nil, err
	}
	ctx, cancel, st, err = s.groupWithin(r, g, timeout)
	return g, ctx, cancel, st, err
}

// clusterWithin bounds the rest of r by timeout and reads the cluster
// state within that bound. The caller must call cancel, also after an
// error.
func (s *server) clusterWithin(r *http.Request, timeout time.Duration) (ctx context.Context, cancel context.CancelFunc, st *meta.ClusterState, err error) {
	ctx, cancel = context.WithTimeout(r.Context(), timeout)
	st, err = s.metaState(ctx)
	return ctx, cancel, st, err
}

// groupWithin is clusterWithin for a request about group g, which the
// cluster must have.
func (s *server) groupWithin(r *http.Request, g uint64, timeout time.Duration) (ctx context.Context, cancel context.CancelFunc, st *meta.ClusterState, err error) {
	ctx, cancel, st, err = s.clusterWithin(r, timeout)
	if err == nil {
		err = checkGroup(st, g)
	}
	return ctx, cancel, st, err
}

func (q *AddNodeRequest) timeout() Duration  { return q.Timeout }
func (q *JobRequest) timeout() Duration      { return q.Timeout }
func (q *MoveRequest) timeout() Duration     { return q.Timeout }
func (q *RepairRequest) timeout() Duration   { return q.Timeout }
func (q *TransferRequest) timeout() Duration { return q.Timeout }
func (q *SnapshotRequest) timeout() Duration { return q.Timeout }

func (q *AddNodeRequest) check() error {
	if len(q.Seeds) == 0 {
		return badRequest("seeds is required: the peer addresses of one or more nodes of the cluster to join")
	}
	for _, seed := range q.Seeds {
		if seed == "" {
			return badRequest("a seed address is empty")
		}
	}
	return nil
}

func (q *JobRequest) check() error      { return nil }
func (q *SnapshotRequest) check() error { return nil }

func (q *MoveRequest) check() error {
	switch {
	case q.From == "" || q.To == "":
		return badRequest("from and to are required: the node to move the replica off and the node to move it to")
	case q.From == q.To:
		return badRequest("from and to are both %q", q.From)
	}
	return nil
}

func (q *RepairRequest) check() error {
	if q.Node == "" {
		return badRequest("node is required: the node whose replica to rebuild")
	}
	return nil
}

func (q *TransferRequest) check() error {
	if q.To == "" {
		return badRequest("to is required: the node to hand the leadership to")
	}
	return nil
}

// clusterNode is node id of st, or node_not_found.
func clusterNode(st *meta.ClusterState, id string) (*meta.NodeInfo, error) {
	if n := st.Nodes[id]; n != nil {
		return n, nil
	}
	return nil, notFound("node_not_found", "node %q is not in the cluster (nodes: %v)", id, st.NodeIDs())
}

// rerunnable tells of a failed move or repair that running it again
// finishes it (advice says how); a refusal because another change of the
// group is under way stays as it is.
func rerunnable(err error, advice string) error {
	if err == nil || errors.Is(err, multiraft.ErrMoveInProgress) {
		return err
	}
	return fmt.Errorf("%w; %s", err, advice)
}
