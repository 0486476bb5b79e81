package wsfront

import (
	"context"
	"fmt"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront/auth"
)

// message handles one client frame on the socket's read goroutine. Ops
// that wait for consensus run in their own goroutine, so a socket keeps
// reading (pings, more requests) while they do.
func (sess *session) message(msg *gws.Message) {
	received := time.Now()
	sess.lastRead.Store(received.UnixNano())
	if msg.Opcode != gws.OpcodeText {
		sess.answer(&request{received: received}, nil, badRequest("binary frames are not part of %s; send JSON text frames", Subprotocol))
		return
	}
	lim := sess.srv.cfg.Limits
	if msg.Data.Len() > lim.MaxFrame {
		id, op := scanOversized(msg.Bytes())
		sess.answer(&request{Request: protocol.Request{ID: id, Op: op}, received: received}, nil, &protocol.Error{Code: protocol.CodeTooLarge,
			Message: fmt.Sprintf("frame is %d bytes; at most %d (the node's max_frame)", msg.Data.Len(), lim.MaxFrame)})
		return
	}
	req, perr := decodeRequest(msg.Bytes())
	req.received = received
	if perr != nil {
		sess.answer(&req, nil, perr)
		return
	}
	switch req.Op {
	case protocol.OpPing:
		sess.answer(&req, newReply(req.ID, true).bool("pong", true).done(), nil)
		return
	case protocol.OpAuth:
		reply, perr, closing := sess.auth(&req)
		if closing != nil {
			sess.answerAndClose(&req, perr, closing)
			return
		}
		sess.answer(&req, reply, perr)
		return
	case protocol.OpJoin, protocol.OpLeave, protocol.OpPublish, protocol.OpHistory, protocol.OpMembers, protocol.OpSubscribe, protocol.OpUnsubscribe:
	default:
		sess.answer(&req, nil, badRequest("unknown op %q", req.Op))
		return
	}
	ident, perr := sess.authorized(req.Op, req.Room)
	if perr != nil {
		sess.answer(&req, nil, perr)
		return
	}
	if req.Op == protocol.OpUnsubscribe {
		sess.answer(&req, sess.unsubscribe(&req), nil)
		return
	}
	if sess.srv.be.NodeEpoch() == 0 {
		sess.answer(&req, nil, &protocol.Error{Code: protocol.CodeUnavailable, Retryable: true,
			Message: "this node has not joined its cluster yet; retry or use another node"})
		return
	}
	if int(sess.inflight.Add(1)) > lim.MaxInflight {
		sess.inflight.Add(-1)
		sess.answer(&req, nil, &protocol.Error{Code: protocol.CodeRateLimited, Retryable: true, RetryAfter: 100 * time.Millisecond,
			Message: fmt.Sprintf("more than %d requests in progress on this socket", lim.MaxInflight)})
		return
	}
	// A subscription is registered here, on the read goroutine, so that
	// subscribe and unsubscribe of one room take effect in frame order.
	var sub *subscription
	var wantEpoch uint64
	if req.Op == protocol.OpSubscribe {
		var perr *protocol.Error
		if sub, wantEpoch, perr = sess.registerSubscription(&req); perr != nil || sub == nil {
			sess.inflight.Add(-1)
			if perr != nil {
				sess.answer(&req, nil, perr)
			}
			return
		}
	}
	sess.goOwned(lim.RequestTimeout, func(ctx context.Context) {
		defer sess.inflight.Add(-1)
		var reply []byte
		var perr *protocol.Error
		switch req.Op {
		case protocol.OpJoin:
			reply, perr = sess.join(ctx, ident, &req)
		case protocol.OpLeave:
			reply, perr = sess.leaveOp(ctx, ident, &req)
		case protocol.OpPublish:
			reply, perr = sess.publish(ctx, ident, &req)
		case protocol.OpHistory:
			sess.history(ctx, &req)
			return // history sends its reply itself, through its read budget
		case protocol.OpMembers:
			reply, perr = sess.members(ctx, &req)
		case protocol.OpSubscribe:
			sess.subscribe(ctx, &req, sub, wantEpoch)
			return // subscribe sends its reply itself, before its events
		}
		sess.answer(&req, reply, perr)
	})
}

// answer sends a request's reply, or its error when perr is not nil, and
// reports the op's outcome.
func (sess *session) answer(req *request, reply []byte, perr *protocol.Error) {
	code := "ok"
	if perr != nil {
		reply = errorReply(req.ID, perr)
		code = perr.Code
	}
	sess.srv.obs.Op(opLabel(req.Op), code, time.Since(req.received))
	sess.send(reply)
}

// closeAfter is the close a refusal ends the socket with.
type closeAfter struct {
	code   uint16
	reason string
}

// answerAndClose answers req with perr, then closes the socket once the
// answer is written, so that the client reads why before it sees the
// close.
func (sess *session) answerAndClose(req *request, perr *protocol.Error, c *closeAfter) {
	sess.srv.obs.Op(opLabel(req.Op), perr.Code, time.Since(req.received))
	sess.sendThen(errorReply(req.ID, perr), func() { sess.closeWith(c.code, c.reason) })
}

// auth authenticates the socket. A refusal that closes the socket comes
// with the close to send once the client has read the answer.
func (sess *session) auth(req *request) ([]byte, *protocol.Error, *closeAfter) {
	v := sess.srv.verifier
	var ident *auth.Identity
	var err error
	switch {
	case req.Token != "":
		ident, err = v.Token(req.Token)
	case req.User != "":
		if !validText(req.User) || len(req.User) > fsm.MaxMemberBytes {
			return nil, badRequest("user must be 1..%d bytes of UTF-8 without control characters", fsm.MaxMemberBytes), nil
		}
		ident, err = v.User(req.User)
	default:
		return nil, badRequest("auth needs a token"), nil
	}
	if err != nil {
		return nil, &protocol.Error{Code: protocol.CodeUnauthorized, Message: err.Error()}, nil
	}
	sess.mu.Lock()
	if sess.ident != nil && sess.ident.User != ident.User {
		sess.mu.Unlock()
		return nil, &protocol.Error{Code: protocol.CodeUnauthorized,
			Message: fmt.Sprintf("this socket is authenticated as %q; open a new socket for %q", sess.ident.User, ident.User)}, nil
	}
	counted := sess.userCounted
	sess.mu.Unlock()
	// The user is known only now, so this is where its socket limit is
	// enforced. A refused socket is closed: it could do nothing but send
	// auth again.
	adm := sess.srv.adm
	if !counted && !adm.admitUser(ident.User, sess.remote) {
		return nil, &protocol.Error{Code: protocol.CodeLimitExceeded, Message: fmt.Sprintf("user %q holds its maximum of %d sockets on this node; close one before opening another", ident.User, adm.perUser)},
			&closeAfter{code: closeTooManySockets, reason: "too many sockets for this user on this node"}
	}
	srv := sess.srv
	srv.blockMu.Lock()
	until, blocked := srv.blockedLocked(ident.User, time.Now())
	sess.mu.Lock()
	ended := sess.ended
	if !ended && !blocked {
		sess.ident = ident
		sess.userCounted = true
		// A fresh token brings its own expiry, in place of one the
		// server set.
		sess.stopExpiryLocked()
	}
	sess.mu.Unlock()
	srv.blockMu.Unlock()
	if ended || blocked {
		// closed ran already and released what it knew of, or the
		// socket is refused: either way it does not count for the user.
		if !counted {
			adm.releaseUser(ident.User)
		}
		if ended {
			return nil, &protocol.Error{Code: protocol.CodeUnavailable, Retryable: true, Message: "the socket is closing"}, nil
		}
		return nil, &protocol.Error{Code: protocol.CodeForbidden,
				Message: fmt.Sprintf("user %q is blocked by the server until %s; do not reconnect before then",
					ident.User, until.UTC().Format(time.RFC3339))},
			&closeAfter{code: CloseDisconnected, reason: "blocked by the server"}
	}
	w := newReply(req.ID, true).str("user", ident.User).str("node", sess.srv.be.NodeID())
	if !ident.Expires.IsZero() {
		w.str("expires", ident.Expires.UTC().Format(time.RFC3339))
	}
	w.raw("limits", sess.srv.limitsJSON)
	return w.done(), nil, nil
}

// authorized checks that the socket may run op on room.
func (sess *session) authorized(op, room string) (*auth.Identity, *protocol.Error) {
	sess.mu.Lock()
	ident, expires := sess.ident, sess.expires
	sess.mu.Unlock()
	if ident == nil {
		return nil, &protocol.Error{Code: protocol.CodeUnauthorized, Message: "send auth first"}
	}
	if now := time.Now(); !expires.IsZero() && !now.Before(expires) || expires.IsZero() && ident.Expired(now) {
		return nil, &protocol.Error{Code: protocol.CodeUnauthorized, Message: "token expired; send auth with a fresh token"}
	}
	if perr := checkRoom(room); perr != nil {
		return nil, perr
	}
	var action auth.Action
	switch op {
	case protocol.OpJoin, protocol.OpLeave:
		action = auth.Join
	case protocol.OpPublish:
		action = auth.Publish
	case protocol.OpHistory, protocol.OpMembers, protocol.OpSubscribe:
		action = auth.Read
	default:
		return ident, nil
	}
	if !ident.Can(action, room) {
		return nil, &protocol.Error{Code: protocol.CodeForbidden, Message: fmt.Sprintf("user %q may not %s room %q", ident.User, action, room)}
	}
	return ident, nil
}

// roomsInUse counts the rooms the socket holds against MaxRooms.
func (sess *session) roomsInUseLocked() int { return sess.subs.len() + len(sess.joined) }

func (sess *session) join(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protocol.Error) {
	lim := sess.srv.cfg.Limits
	if max := min(lim.MaxData, fsm.MaxMetaBytes); len(req.Meta) > max {
		return nil, &protocol.Error{Code: protocol.CodeTooLarge, Message: fmt.Sprintf("meta is %d bytes; at most %d", len(req.Meta), max)}
	}
	sess.mu.Lock()
	_, again := sess.joined[req.Room]
	full := !again && sess.roomsInUseLocked() >= lim.MaxRooms
	sess.mu.Unlock()
	if full {
		return nil, limitExceeded(lim.MaxRooms)
	}
	epoch := sess.srv.be.NodeEpoch()
	if epoch == 0 {
		return nil, &protocol.Error{Code: protocol.CodeUnavailable, Retryable: true, Message: "this node has not joined its cluster yet"}
	}
	meta := []byte(req.Meta)
	if string(meta) == "null" {
		meta = nil
	}
	cmd := fsm.Command{Op: fsm.OpJoin, Room: req.Room, Member: ident.User, Meta: meta,
		Ephemeral: true, NodeID: sess.srv.be.NodeID(), NodeEpoch: epoch}
	res, perr := rooms.Commit(ctx, sess.srv.be, cmd, false)
	if perr == nil {
		sess.mu.Lock()
		if sess.joined == nil {
			sess.joined = make(map[string]uint64)
		}
		ended := sess.ended
		if !ended {
			sess.joined[req.Room] = joinToken(res)
		}
		sess.mu.Unlock()
		if ended {
			// The socket closed while the join committed: undo it.
			ctx, cancel := context.WithTimeout(context.Background(), lim.LeaveTimeout)
			defer cancel()
			_, _ = sess.srv.leaveJoin(ctx, ident.User, req.Room, joinToken(res))
		}
	}
	return seqReply(req.ID, res, perr)
}

// joinToken is what names a join for the conditional leave that undoes it:
// its seq, or the token of a join that took none.
func joinToken(res *fsm.Result) uint64 {
	if res.JoinToken != 0 {
		return res.JoinToken
	}
	return res.Seq
}

func (sess *session) leaveOp(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protocol.Error) {
	res, perr := sess.srv.leave(ctx, ident.User, req.Room)
	if perr == nil {
		sess.mu.Lock()
		delete(sess.joined, req.Room)
		sess.mu.Unlock()
	}
	return seqReply(req.ID, res, perr)
}

func (s *Server) leave(ctx context.Context, member, room string) (*fsm.Result, *protocol.Error) {
	return rooms.Commit(ctx, s.be, fsm.Command{Op: fsm.OpLeave, Room: room, Member: member}, false)
}

// leaveJoin undoes one join, the one that got joinSeq: if the member joined
// again since (another socket, maybe on another node, after a reconnect),
// that newer membership stays. A closing socket leaves this way.
func (s *Server) leaveJoin(ctx context.Context, member, room string, joinSeq uint64) (*fsm.Result, *protocol.Error) {
	res, perr := rooms.Commit(ctx, s.be, fsm.Command{Op: fsm.OpLeave, Room: room, Member: member,
		HasExpectSeq: true, ExpectSeq: joinSeq}, false)
	if perr != nil && (perr.Code == protocol.CodeConflict || perr.Code == protocol.CodeNotFound) {
		return nil, nil // renewed elsewhere, or already gone: nothing to undo
	}
	return res, perr
}

func seqReply(id []byte, res *fsm.Result, perr *protocol.Error) ([]byte, *protocol.Error) {
	if perr != nil {
		return nil, perr
	}
	return newReply(id, true).uint("seq", res.Seq).epoch(res.Epoch).done(), nil
}

func limitExceeded(n int) *protocol.Error {
	return &protocol.Error{Code: protocol.CodeLimitExceeded, Message: fmt.Sprintf("this socket already uses %d rooms (joined plus subscribed); leave or unsubscribe one first", n)}
}

func (sess *session) publish(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protocol.Error) {
	lim := sess.srv.cfg.Limits
	switch {
	case len(req.Data) == 0:
		return nil, badRequest("publish needs data")
	case len(req.Data) > lim.MaxData:
		return nil, &protocol.Error{Code: protocol.CodeTooLarge, Message: fmt.Sprintf("data is %d bytes; at most %d", len(req.Data), lim.MaxData)}
	case len(req.Key) > fsm.MaxKeyBytes:
		return nil, badRequest("key is %d bytes; at most %d", len(req.Key), fsm.MaxKeyBytes)
	}
	if wait, ok := sess.takePublishToken(time.Now()); !ok {
		return nil, &protocol.Error{Code: protocol.CodeRateLimited, Retryable: true, RetryAfter: wait,
			Message: fmt.Sprintf("over %v publishes per second on this socket", lim.PublishRate)}
	}
	cmd := fsm.Command{Op: fsm.OpPublish, Room: req.Room, Member: ident.User, Data: req.Data, Key: req.Key,
		FromClient: sess.srv.marksClientPublishes()}
	if req.ExpectSeq != nil {
		cmd.HasExpectSeq, cmd.ExpectSeq = true, *req.ExpectSeq
	}
	res, perr := plantedAckEarly(rooms.Commit(ctx, sess.srv.be, cmd, req.Key != ""))
	if perr != nil {
		return nil, perr
	}
	return newReply(req.ID, true).uint("seq", res.Seq).epoch(res.Epoch).bool("duplicate", res.Duplicate).done(), nil
}

func (s *Server) marksClientPublishes() bool {
	m, ok := s.be.(ClientPublishMarker)
	return !ok || m.MarkClientPublishes()
}

var plantedAckEarly = func(r *fsm.Result, p *protocol.Error) (*fsm.Result, *protocol.Error) { return r, p } // see jepsenbug_ackearly.go

func consistencyOf(req *request) (stale bool, perr *protocol.Error) {
	switch req.Consistency {
	case "", "linearizable":
		return false, nil
	case protocol.ConsistencyStale:
		return true, nil
	}
	return false, badRequest("consistency must be \"linearizable\" or \"stale\", not %q", req.Consistency)
}
