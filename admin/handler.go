package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/httpjson"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Prefix is the path under which Handler serves; mount it there.
const Prefix = "/admin/v1/"

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// Options configure the admin API.
type Options struct {
	// Token is the bearer token every request must carry
	// (Authorization: Bearer <token>).
	Token string
	// AllowNoToken accepts requests without a token from loopback
	// addresses only, for development. A request that carries a token is
	// still checked against Token when one is set.
	AllowNoToken bool
	Logger       *slog.Logger
}

// server is the admin API of one node.
type server struct {
	guard
	node *herald.Node
	host *multiraft.Host
	opts Options
	log  *slog.Logger
	jobs *jobs
	mux  *http.ServeMux
}

// guard is the admin token check: the admin API's, and Guard's for the
// other endpoints an operator reaches with the same token.
type guard struct {
	opts  Options
	token [sha256.Size]byte
}

func newGuard(opts Options) guard { return guard{opts: opts, token: sha256.Sum256([]byte(opts.Token))} }

// Guard lets through to next only the requests the admin API would take
// (the admin token, or with AllowNoToken any request from loopback), and
// answers the others as the admin API does: for endpoints such as Go's
// profiler that an embedder mounts beside it.
func Guard(opts Options, next http.Handler) http.Handler {
	g := newGuard(opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.refuse(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request without the right to the admin endpoints and
// reports whether it did.
func (g *guard) refuse(w http.ResponseWriter, r *http.Request) bool {
	e := g.authorize(r)
	if e == nil {
		return false
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin"`)
	}
	writeError(w, e)
	return true
}

// Handler returns the admin API of node, to be mounted at Prefix on the
// node's client port. Long operations run as jobs that end when they finish
// or fail, when they are canceled, or when the node closes (their
// operations then fail, and the node's Shutdown waits for them to return).
func Handler(node *herald.Node, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{
		guard: newGuard(opts),
		node:  node, host: node.Host(), opts: opts,
		log: opts.Logger.With("part", "admin"),
		mux: http.NewServeMux(),
	}
	s.jobs = newJobs(node.Context(), node.Go, s.host.NodeID(), s.log)
	s.routes()
	return s
}

// endpoint maps each method of one path to its handler, so that a wrong
// method is answered in JSON like every other error.
type endpoint map[string]func(w http.ResponseWriter, r *http.Request) error

func (s *server) handle(pattern string, e endpoint) {
	s.mux.HandleFunc(Prefix+pattern, func(w http.ResponseWriter, r *http.Request) {
		fn := e[r.Method]
		if fn == nil && r.Method == http.MethodHead {
			fn = e[http.MethodGet]
		}
		if fn == nil {
			allow := make([]string, 0, len(e))
			for m := range e {
				allow = append(allow, m)
			}
			slices.Sort(allow)
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
				Message: fmt.Sprintf("%s %s is not supported; use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))})
			return
		}
		if err := fn(w, r); err != nil {
			e := toAPIError(err)
			if e.Status >= 500 {
				s.log.Warn("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, e)
		}
	})
}

func (s *server) routes() {
	s.handle("status", endpoint{"GET": s.status})
	s.handle("nodes", endpoint{"GET": s.listNodes})
	s.handle("nodes/add", endpoint{"POST": s.addNode})
	s.handle("nodes/{id}/decommission", endpoint{"POST": s.decommission})
	s.handle("nodes/{id}/remove", endpoint{"POST": s.removeNode})
	s.handle("groups", endpoint{"GET": s.listGroups})
	s.handle("groups/{id}", endpoint{"GET": s.showGroup})
	s.handle("groups/{id}/move", endpoint{"POST": s.moveReplica})
	s.handle("groups/{id}/repair", endpoint{"POST": s.repairReplica})
	s.handle("groups/{id}/transfer-leader", endpoint{"POST": s.transferLeader})
	s.handle("rebalance/plan", endpoint{"GET": s.planRebalance})
	s.handle("rebalance", endpoint{"POST": s.applyRebalance})
	s.handle("jobs", endpoint{"GET": s.listJobs})
	s.handle("jobs/{id}", endpoint{"GET": s.showJob, "DELETE": s.cancelJob})
	s.handle("rooms/{room}", endpoint{"GET": s.showRoom, "DELETE": s.deleteRoom})
	s.handle("rooms/{room}/config", endpoint{"POST": s.configRoom})
	s.handle("snapshot", endpoint{"POST": s.snapshot})
	s.handle("namespaces", endpoint{"GET": s.listNamespaces, "POST": s.setNamespace, "DELETE": s.deleteNamespace})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("no admin endpoint at %s; see docs/admin.md", r.URL.Path)})
	})
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		// Bad input must never take the node down; a bug here answers 500.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("admin handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
			writeError(w, &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: fmt.Sprint("internal error: ", v)})
		}
	}()
	if s.refuse(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (g *guard) authorize(r *http.Request) *APIError {
	tok, has, malformed := httpjson.Bearer(r, "Bearer")
	if malformed {
		return &APIError{Status: http.StatusUnauthorized, Code: "bad_authorization",
			Message: "the Authorization header must be \"Bearer <token>\""}
	}
	if has && g.opts.Token != "" {
		// Comparing hashes keeps the time independent of the token's
		// length as well as its content.
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], g.token[:]) == 1 {
			return nil
		}
		return &APIError{Status: http.StatusUnauthorized, Code: "invalid_token", Message: "the admin token is wrong"}
	}
	if g.opts.AllowNoToken {
		if httpjson.IsLoopback(r.RemoteAddr) {
			return nil
		}
		return &APIError{Status: http.StatusForbidden, Code: "not_loopback",
			Message: "this node accepts admin requests without a token only from loopback addresses"}
	}
	if g.opts.Token == "" {
		return &APIError{Status: http.StatusForbidden, Code: "no_token_configured",
			Message: "the admin API of this node has no token configured; it refuses every request"}
	}
	return &APIError{Status: http.StatusUnauthorized, Code: "missing_token",
		Message: "the admin API needs a token: Authorization: Bearer <token>"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := httpjson.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = httpjson.Marshal(errorEnvelope{&APIError{Status: status, Code: "internal", Message: "encode reply: " + err.Error()}})
	}
	httpjson.Write(w, status, b)
}

func writeError(w http.ResponseWriter, e *APIError) {
	writeJSON(w, e.Status, errorEnvelope{e})
}

// Errors a handler returns become API errors by what they wrap.

func badRequest(format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf(format, args...)}
}

func notFound(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}

func conflict(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: fmt.Sprintf(format, args...)}
}

// apiErrors gives the errors handlers let through their status and code;
// the first entry that the error wraps applies.
var apiErrors = []struct {
	err    error
	status int
	code   string
	hint   string // added to the message
}{
	{err: fsm.ErrRoomNotFound, status: http.StatusNotFound, code: "room_not_found"},
	{err: multiraft.ErrNoGroup, status: http.StatusNotFound, code: "group_not_found"},
	{err: multiraft.ErrNoReplica, status: http.StatusNotFound, code: "no_local_replica"},
	{err: fsm.ErrInvalid, status: http.StatusBadRequest, code: "invalid"},
	{err: multiraft.ErrMoveInProgress, status: http.StatusConflict, code: "move_in_progress"},
	{err: multiraft.ErrNotVoter, status: http.StatusConflict, code: "not_a_voter"},
	{err: meta.ErrConflict, status: http.StatusConflict, code: "conflict"},
	{err: multiraft.ErrNodeRemoved, status: http.StatusConflict, code: "node_removed"},
	{err: multiraft.ErrUnknownOutcome, status: http.StatusServiceUnavailable, code: "unknown_outcome",
		hint: " (the change may or may not have been made; check before retrying)"},
	{err: context.DeadlineExceeded, status: http.StatusServiceUnavailable, code: "timeout"},
	{err: context.Canceled, status: http.StatusServiceUnavailable, code: "canceled"},
	{err: multiraft.ErrUnavailable, status: http.StatusServiceUnavailable, code: "unavailable"},
	{err: multiraft.ErrClosed, status: http.StatusServiceUnavailable, code: "unavailable"},
}

func toAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	for _, e := range apiErrors {
		if errors.Is(err, e.err) {
			return &APIError{Status: e.status, Code: e.code, Message: err.Error() + e.hint}
		}
	}
	return &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

// decodeBody reads a JSON request body into v. An empty body leaves v as
// it is; unknown fields are refused, so a typo is an error, not a default.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := httpjson.ReadBody(w, r, MaxBodyBytes)
	switch {
	case errors.Is(err, httpjson.ErrTooLarge):
		return &APIError{Status: http.StatusRequestEntityTooLarge, Code: "too_large",
			Message: fmt.Sprintf("the request body exceeds %d bytes", MaxBodyBytes)}
	case err != nil:
		return badRequest("%v", err)
	}
	if err := httpjson.Decode(b, v); err != nil {
		return &APIError{Status: http.StatusBadRequest, Code: "bad_json", Message: "the request body is not valid JSON for this endpoint: " + err.Error()}
	}
	return nil
}

// timeoutOf is d, or def when d is zero, capped at max.
func timeoutOf(d Duration, def, max time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, badRequest("timeout %v is negative", time.Duration(d))
	case d == 0:
		return def, nil
	case time.Duration(d) > max:
		return 0, badRequest("timeout %v is above the limit of %v", time.Duration(d), max)
	}
	return time.Duration(d), nil
}

func parseGroupID(r *http.Request) (uint64, error) {
	raw := r.PathValue("id")
	g, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, badRequest("group id %q is not a number", raw)
	}
	return g, nil
}
