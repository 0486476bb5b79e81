package serverapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/httpjson"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"

	api "github.com/heraldhq/herald/client/serverapi"
)

// Prefix is the path under which Handler serves; mount it there.
const Prefix = api.Prefix

// Backend is the replicated room store as the server API sees it: the
// part of wsfront.Backend it uses, plus the cluster-wide reads only it
// offers; *rooms.Service is the node's. Errors are the room layer's, which
// rooms.ErrorOf maps to the protocol's codes.
type Backend interface {
	// NodeID names this node; NodeEpoch is 0 until it has joined its
	// cluster.
	NodeID() string
	NodeEpoch() uint64
	Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
	// History and Members are wsfront.Backend's.
	History(ctx context.Context, room string, fromSeq uint64, limit, maxBytes int, stale bool) (fsm.History, error)
	Members(ctx context.Context, room string, stale bool) (fsm.Members, error)
	// Rooms lists up to limit rooms of the whole cluster whose names
	// start with prefix and sort after after, in name order; more says
	// others follow.
	Rooms(ctx context.Context, prefix, after string, limit int, stale bool) (list []fsm.RoomInfo, more bool, err error)
	// Nodes is the cluster as this node knows it, nodes sorted by id.
	Nodes() (clusterID string, nodes []rooms.NodeInfo)
}

// maxBody bounds a request body: a broadcast's data and its rooms' names,
// with room for the JSON around them.
func (o *Config) maxBody() int64 {
	return int64(o.MaxData) + int64(o.MaxBroadcastRooms)*(fsm.MaxRoomBytes+8) + 16<<10
}

type server struct {
	be   Backend
	opts Config
	keys keySet
	log  *slog.Logger
	mux  *http.ServeMux
}

// op is one op's handler: it decodes body and returns the reply to encode.
type op func(ctx context.Context, body []byte) (any, *protocol.Error)

// Handler returns the server API over be, to mount at Prefix; zero fields
// of cfg take DefaultConfig's values.
func Handler(be Backend, cfg Config) (http.Handler, error) {
	opts := cfg.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	keys, _ := newKeySet(opts.Keys)
	s := &server{be: be, opts: opts, keys: keys, log: opts.Logger.With("part", "serverapi"), mux: http.NewServeMux()}
	for name, fn := range map[string]op{
		api.OpPublish: s.publish, api.OpBroadcast: s.broadcast, api.OpHistory: s.history, api.OpMembers: s.members,
		api.OpPresenceStats: s.presenceStats, api.OpRooms: s.rooms, api.OpInfo: s.info,
		api.OpDisconnect: s.disconnect, api.OpUnsubscribe: s.unsubscribe, api.OpLeave: s.leave, api.OpRefresh: s.refresh,
	} {
		s.mux.Handle("POST "+Prefix+name, s.guard(s.serveOp(name, fn)))
	}
	s.mux.HandleFunc("GET "+Prefix+"openapi.json", serveOpenAPI)
	s.mux.Handle(Prefix, s.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		for _, o := range api.Ops {
			if o == name {
				w.Header().Set("Allow", http.MethodPost)
				writeError(w, http.StatusMethodNotAllowed, protocol.Errorf(protocol.CodeBadRequest, "%s %s: ops take POST with a JSON body", r.Method, r.URL.Path))
				return
			}
		}
		writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "no server API op at %s; the ops are %s (docs/server-api.md)", r.URL.Path, strings.Join(api.Ops, ", ")))
	})))
	return s, nil
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		// Bad input must never take the node down; a bug here answers 500.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("server API handler panicked", "path", r.URL.Path, "panic", v)
			writeError(w, http.StatusInternalServerError, &protocol.Error{Code: protocol.CodeInternal, Retryable: true, Message: fmt.Sprint("internal error: ", v)})
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// guard lets through requests with a valid API key, or none from loopback
// in development.
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, status, e := s.authorize(r)
		if e != nil {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `apikey realm="herald server API"`)
			}
			writeError(w, status, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), apiKeyCtx{}, key)))
	})
}

// authorize checks r's key and returns it ("" for none).
func (s *server) authorize(r *http.Request) (string, int, *protocol.Error) {
	key, has, malformed := r.Header.Get("X-API-Key"), r.Header.Get("X-API-Key") != "", false
	if !has {
		key, has, malformed = httpjson.Bearer(r, "apikey", "Bearer")
	}
	switch {
	case malformed:
		return "", http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, "the Authorization header must be \"apikey <key>\" or \"Bearer <key>\"")
	case has && s.keys.holds(key):
		return key, 0, nil
	case has:
		return "", http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, "the API key is not one of this node's")
	case s.opts.AllowLoopback && httpjson.IsLoopback(r.RemoteAddr):
		return key, 0, nil
	case s.opts.AllowLoopback:
		return "", http.StatusForbidden, protocol.Errorf(protocol.CodeForbidden, "this node takes server API requests without a key only from loopback addresses")
	case len(s.keys) == 0:
		return "", http.StatusForbidden, protocol.Errorf(protocol.CodeForbidden, "the server API of this node has no API key configured; it refuses every request (see --api-key)")
	}
	return "", http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, "the server API needs an API key: X-API-Key: <key>")
}

func (s *server) serveOp(name string, fn op) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := httpjson.ReadBody(w, r, s.opts.maxBody())
		switch {
		case errors.Is(err, httpjson.ErrTooLarge):
			writeError(w, http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeTooLarge, "%s: %v", name, err))
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeBadRequest, "%s: %v", name, err))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
		defer cancel()
		reply, perr := fn(ctx, body)
		if perr != nil {
			if perr.Code == protocol.CodeInternal {
				s.log.Warn("server API request failed", "op", name, "err", perr.Message)
			}
			writeError(w, statusOf(perr.Code), perr)
			return
		}
		b, err := httpjson.Marshal(reply)
		if err != nil {
			writeError(w, http.StatusInternalServerError, &protocol.Error{Code: protocol.CodeInternal, Retryable: true, Message: "encode the reply: " + err.Error()})
			return
		}
		httpjson.Write(w, http.StatusOK, b)
	})
}

// statusOf is the HTTP status of a protocol error code.
func statusOf(code string) int {
	switch code {
	case protocol.CodeBadRequest:
		return http.StatusBadRequest
	case protocol.CodeUnauthorized:
		return http.StatusUnauthorized
	case protocol.CodeForbidden:
		return http.StatusForbidden
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeConflict:
		return http.StatusConflict
	case protocol.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case protocol.CodeRateLimited, protocol.CodeLimitExceeded:
		return http.StatusTooManyRequests
	case protocol.CodeUnavailable, protocol.CodeUnknownOutcome:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// wireError is e as the API sends it.
func wireError(e *protocol.Error) *api.Error {
	out := &api.Error{Code: e.Code, Message: e.Message, Retryable: e.Retryable}
	if e.Code == protocol.CodeConflict {
		out.LastSeq = e.LastSeq
	}
	if e.RetryAfter > 0 {
		out.RetryAfterMS = uint64((e.RetryAfter + time.Millisecond - 1) / time.Millisecond)
	}
	return out
}

func writeError(w http.ResponseWriter, status int, e *protocol.Error) {
	b, err := httpjson.Marshal(api.ErrorReply{Error: wireError(e)})
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode the error","retryable":true}}`)
	}
	httpjson.Write(w, status, b)
}
