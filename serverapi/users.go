package serverapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"

	api "github.com/heraldhq/herald/client/serverapi"
)

// Sockets is what a node can do to the sockets it holds itself
// (Config.Sockets); *wsfront.Server has these methods.
type Sockets interface {
	DisconnectUser(user string, code uint16, reason string) int
	BlockUser(user string, until time.Time) error
	UnsubscribeUser(user, room string) int
	RefreshUser(user string, expires time.Time) int
}

// MaxAhead bounds how far ahead a block or a refreshed expiry may be.
const MaxAhead = 24 * time.Hour

// skew is what a forwarded time may be over MaxAhead on a node whose clock
// runs behind the one that computed it.
const skew = time.Minute

// defaultReason is a disconnect's close reason when it names none.
const defaultReason = "disconnected by the server"

func (s *server) sockets() (Sockets, *protocol.Error) {
	if s.opts.Sockets != nil {
		return s.opts.Sockets, nil
	}
	return nil, protocol.Errorf(protocol.CodeInternal, "this node's server API was mounted without access to its sockets (serverapi.Config.Sockets)")
}

func checkUser(user string) *protocol.Error {
	if !wsfront.ValidName(user) {
		return protocol.Errorf(protocol.CodeBadRequest, "user must be 1..%d bytes of UTF-8 without control characters", fsm.MaxMemberBytes)
	}
	return nil
}

// decodeUserRoomOp decodes the body of an op on a user in a room and
// checks both names, which *user and *room point into v.
func decodeUserRoomOp(name string, body []byte, v any, user, room *string) *protocol.Error {
	if e := decodeRoomOp(name, body, v, room); e != nil {
		return e
	}
	return checkUser(*user)
}

// until turns an absolute time or seconds from now into the instant a
// block or expiry ends.
func until(now time.Time, at *time.Time, in *int64, atName, inName string) (time.Time, *protocol.Error) {
	switch {
	case at != nil && in != nil:
		return time.Time{}, protocol.Errorf(protocol.CodeBadRequest, "give %s or %s, not both", atName, inName)
	case in != nil:
		if *in < 0 || *in > int64(MaxAhead/time.Second) {
			return time.Time{}, protocol.Errorf(protocol.CodeBadRequest, "%s must be 0..%d seconds", inName, int64(MaxAhead/time.Second))
		}
		return now.Add(time.Duration(*in) * time.Second), nil
	case at != nil:
		if at.After(now.Add(MaxAhead + skew)) {
			return time.Time{}, protocol.Errorf(protocol.CodeBadRequest, "%s %s is more than %v ahead", atName, at.UTC().Format(time.RFC3339), MaxAhead)
		}
		return *at, nil
	}
	return time.Time{}, nil
}

func (s *server) disconnect(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.DisconnectRequest
	if e := decode(api.OpDisconnect, body, &req); e != nil {
		return nil, e
	}
	if e := checkUser(req.User); e != nil {
		return nil, e
	}
	switch {
	case req.Code == 0:
		req.Code = wsfront.CloseDisconnected
	case req.Code != wsfront.CloseDisconnected && (req.Code < wsfront.CloseAppMin || req.Code > wsfront.CloseAppMax):
		return nil, protocol.Errorf(protocol.CodeBadRequest, "code must be %d..%d (or %d, the default); the others are the protocol's",
			wsfront.CloseAppMin, wsfront.CloseAppMax, wsfront.CloseDisconnected)
	}
	switch {
	case req.Reason == "":
		req.Reason = defaultReason
	case len(req.Reason) > wsfront.MaxCloseReasonBytes || !wsfront.ValidName(req.Reason):
		return nil, protocol.Errorf(protocol.CodeBadRequest, "reason must be 1..%d bytes of UTF-8 without control characters (a close frame's bound)", wsfront.MaxCloseReasonBytes)
	}
	var blockFor *int64
	if req.BlockFor != 0 {
		blockFor = &req.BlockFor
	}
	now := time.Now()
	block, e := until(now, req.BlockUntil, blockFor, "block_until", "block_for")
	if e != nil {
		return nil, e
	}
	if !req.Local && req.BlockUntil != nil && !block.After(now) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "block_until %s is not in the future", block.UTC().Format(time.RFC3339))
	}
	sk, e := s.sockets()
	if e != nil {
		return nil, e
	}
	// The copies carry the instant, not the span, so that every node's
	// block ends together.
	req.BlockFor = 0
	if !block.IsZero() {
		block = block.UTC()
		req.BlockUntil = &block
	}
	out, e := s.fanOut(ctx, api.OpDisconnect, &req.Local, &req, func() (int, *protocol.Error) {
		if !block.IsZero() {
			// Blocked first: a socket authenticating meanwhile is then
			// either refused or already seen by the disconnect.
			if err := sk.BlockUser(req.User, block); err != nil {
				return 0, protocol.Errorf(protocol.CodeLimitExceeded, "%v", err)
			}
		}
		return sk.DisconnectUser(req.User, uint16(req.Code), req.Reason), nil
	})
	if e != nil {
		return nil, e
	}
	if !block.IsZero() {
		out.BlockUntil = &block
	}
	return out, nil
}

func (s *server) unsubscribe(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.UnsubscribeRequest
	if e := decodeUserRoomOp(api.OpUnsubscribe, body, &req, &req.User, &req.Room); e != nil {
		return nil, e
	}
	sk, e := s.sockets()
	if e != nil {
		return nil, e
	}
	return s.fanOut(ctx, api.OpUnsubscribe, &req.Local, &req, func() (int, *protocol.Error) {
		return sk.UnsubscribeUser(req.User, req.Room), nil
	})
}

func (s *server) refresh(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.RefreshRequest
	if e := decode(api.OpRefresh, body, &req); e != nil {
		return nil, e
	}
	if e := checkUser(req.User); e != nil {
		return nil, e
	}
	if req.ExpireAt == nil && req.ExpireIn == nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "refresh needs expire_at (RFC 3339) or expire_in (seconds)")
	}
	at, e := until(time.Now(), req.ExpireAt, req.ExpireIn, "expire_at", "expire_in")
	if e != nil {
		return nil, e
	}
	sk, e := s.sockets()
	if e != nil {
		return nil, e
	}
	at = at.UTC()
	req.ExpireAt, req.ExpireIn = &at, nil
	out, e := s.fanOut(ctx, api.OpRefresh, &req.Local, &req, func() (int, *protocol.Error) {
		return sk.RefreshUser(req.User, at), nil
	})
	if e != nil {
		return nil, e
	}
	out.ExpireAt = &at
	return out, nil
}

func (s *server) leave(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.LeaveRequest
	if e := decodeUserRoomOp(api.OpLeave, body, &req, &req.User, &req.Room); e != nil {
		return nil, e
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	// The member's latest join goes, whichever socket or node made it: a
	// socket of the user that closes later finds nothing of its own to
	// undo.
	res, e := rooms.Commit(ctx, s.be, fsm.Command{Op: fsm.OpLeave, Room: req.Room, Member: req.User}, false)
	if e != nil {
		return nil, e
	}
	return api.LeaveResult{Seq: res.Seq, Epoch: wsfront.EpochString(res.Epoch)}, nil
}

// fanOut runs a user op on every node of the cluster: here through local,
// elsewhere by sending req, with *localFlag set, to the node's own server
// API with the key this request came with, each bounded by NodeTimeout. A
// request that is itself such a copy runs only here.
//
// Each node knows only its own sockets, and the cluster has no replicated
// state for them; the reply says which nodes acted and which failed, and
// the caller repeats the request for the failed ones.
func (s *server) fanOut(ctx context.Context, op string, localFlag *bool, req any, local func() (int, *protocol.Error)) (*api.UserResult, *protocol.Error) {
	self := s.be.NodeID()
	if *localFlag {
		n, e := local()
		if e != nil {
			return nil, e
		}
		return &api.UserResult{Nodes: []api.NodeResult{{Node: self, Sockets: n}}, Sockets: n}, nil
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	*localFlag = true
	_, nodes := s.be.Nodes()
	out := &api.UserResult{Nodes: make([]api.NodeResult, 0, len(nodes)+1)}
	seen := false
	for _, n := range nodes {
		seen = seen || n.ID == self
		out.Nodes = append(out.Nodes, api.NodeResult{Node: n.ID})
	}
	if !seen {
		// A node that is not in its own view of the cluster (just
		// removed, say) still has sockets.
		out.Nodes = append([]api.NodeResult{{Node: self}}, out.Nodes...)
		nodes = append([]rooms.NodeInfo{{ID: self}}, nodes...)
	}
	key, _ := ctx.Value(apiKeyCtx{}).(string)
	var wg sync.WaitGroup
	for i, n := range nodes {
		r := &out.Nodes[i]
		if n.ID == self {
			cnt, e := local()
			r.Sockets = cnt
			if e != nil {
				r.Error = wireError(e)
			}
			continue
		}
		if n.ClientURL == "" {
			r.Error = &api.Error{Code: protocol.CodeUnavailable, Retryable: true,
				Message: fmt.Sprintf("node %s has not told the cluster its client address yet", n.ID)}
			continue
		}
		// One goroutine per node, all ended when fanOut returns: each is
		// bounded by NodeTimeout, within the request's own deadline.
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Sockets, r.Error = s.callNode(ctx, n, key, op, req)
		}()
	}
	wg.Wait()
	for _, r := range out.Nodes {
		out.Sockets += r.Sockets
	}
	return out, nil
}

// callNode runs a local copy of a user op on another node.
func (s *server) callNode(ctx context.Context, n rooms.NodeInfo, key, op string, req any) (int, *api.Error) {
	c, err := api.New(key, n.ClientURL)
	if err != nil {
		return 0, &api.Error{Code: protocol.CodeInternal, Message: fmt.Sprintf("node %s: %v", n.ID, err)}
	}
	c.SetHTTPClient(s.opts.NodeClient)
	ctx, cancel := context.WithTimeout(ctx, s.opts.NodeTimeout)
	defer cancel()
	var res api.UserResult
	err = c.Do(ctx, op, req, &res)
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return 0, ae
	case err != nil:
		return 0, &api.Error{Code: protocol.CodeUnavailable, Retryable: true, Message: fmt.Sprintf("node %s: %v", n.ID, err)}
	}
	return res.Sockets, nil
}

// apiKeyCtx keys the API key a request came with in its context, for the
// copies fanOut sends to the other nodes.
type apiKeyCtx struct{}
