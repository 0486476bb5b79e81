package wsfront

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
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
		sess.answer(&request{ID: id, Op: op, received: received}, nil, &protoError{code: codeTooLarge,
			msg: fmt.Sprintf("frame is %d bytes; at most %d (the node's max_frame)", msg.Data.Len(), lim.MaxFrame)})
		return
	}
	req, perr := decodeRequest(msg.Bytes())
	req.received = received
	if perr != nil {
		sess.answer(&req, nil, perr)
		return
	}
	switch req.Op {
	case opPing:
		sess.answer(&req, newReply(req.ID, true).bool("pong", true).done(), nil)
		return
	case opAuth:
		reply, perr := sess.auth(&req)
		if perr != nil && perr.closeCode != 0 {
			sess.answerAndClose(&req, perr)
			return
		}
		sess.answer(&req, reply, perr)
		return
	case opJoin, opLeave, opPublish, opHistory, opMembers, opSubscribe, opUnsubscribe:
	default:
		sess.answer(&req, nil, badRequest("unknown op %q", req.Op))
		return
	}
	ident, perr := sess.authorized(req.Op, req.Room)
	if perr != nil {
		sess.answer(&req, nil, perr)
		return
	}
	if req.Op == opUnsubscribe {
		sess.answer(&req, sess.unsubscribe(&req), nil)
		return
	}
	if sess.srv.be.NodeEpoch() == 0 {
		sess.answer(&req, nil, &protoError{code: codeUnavailable, retryable: true,
			msg: "this node has not joined its cluster yet; retry or use another node"})
		return
	}
	if int(sess.inflight.Add(1)) > lim.MaxInflight {
		sess.inflight.Add(-1)
		sess.answer(&req, nil, &protoError{code: codeRateLimited, retryable: true, retryAfter: 100 * time.Millisecond,
			msg: fmt.Sprintf("more than %d requests in progress on this socket", lim.MaxInflight)})
		return
	}
	// A subscription is registered here, on the read goroutine, so that
	// subscribe and unsubscribe of one room take effect in frame order.
	var sub *subscription
	var wantEpoch uint64
	if req.Op == opSubscribe {
		var perr *protoError
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
		var perr *protoError
		switch req.Op {
		case opJoin:
			reply, perr = sess.join(ctx, ident, &req)
		case opLeave:
			reply, perr = sess.leaveOp(ctx, ident, &req)
		case opPublish:
			reply, perr = sess.publish(ctx, ident, &req)
		case opHistory:
			sess.history(ctx, &req)
			return // history sends its reply itself, through its read budget
		case opMembers:
			reply, perr = sess.members(ctx, &req)
		case opSubscribe:
			sess.subscribe(ctx, &req, sub, wantEpoch)
			return // subscribe sends its reply itself, before its events
		}
		sess.answer(&req, reply, perr)
	})
}

// answer sends a request's reply, or its error when perr is not nil, and
// reports the op's outcome.
func (sess *session) answer(req *request, reply []byte, perr *protoError) {
	code := "ok"
	if perr != nil {
		reply = errorReply(req.ID, perr)
		code = perr.code
	}
	sess.srv.obs.Op(opLabel(req.Op), code, time.Since(req.received))
	sess.send(reply)
}

// answerAndClose answers req with perr, then closes the socket with
// perr.closeCode once the answer is written, so that the client reads why
// before it sees the close.
func (sess *session) answerAndClose(req *request, perr *protoError) {
	sess.srv.obs.Op(opLabel(req.Op), perr.code, time.Since(req.received))
	sess.sendThen(errorReply(req.ID, perr), func() { sess.closeWith(perr.closeCode, perr.closeReason) })
}

func (sess *session) auth(req *request) ([]byte, *protoError) {
	v := sess.srv.verifier
	var ident *auth.Identity
	var err error
	switch {
	case req.Token != "":
		ident, err = v.Token(req.Token)
	case req.User != "":
		if !validText(req.User) || len(req.User) > fsm.MaxMemberBytes {
			return nil, badRequest("user must be 1..%d bytes of UTF-8 without control characters", fsm.MaxMemberBytes)
		}
		ident, err = v.User(req.User)
	default:
		return nil, badRequest("auth needs a token")
	}
	if err != nil {
		return nil, &protoError{code: codeUnauthorized, msg: err.Error()}
	}
	sess.mu.Lock()
	if sess.ident != nil && sess.ident.User != ident.User {
		sess.mu.Unlock()
		return nil, &protoError{code: codeUnauthorized,
			msg: fmt.Sprintf("this socket is authenticated as %q; open a new socket for %q", sess.ident.User, ident.User)}
	}
	counted := sess.userCounted
	sess.mu.Unlock()
	// The user is known only now, so this is where its socket limit is
	// enforced. A refused socket is closed: it could do nothing but send
	// auth again.
	adm := sess.srv.adm
	if !counted && !adm.admitUser(ident.User, sess.remote) {
		return nil, &protoError{code: codeLimitExceeded, closeCode: closeTooManySockets,
			closeReason: "too many sockets for this user on this node",
			msg:         fmt.Sprintf("user %q holds its maximum of %d sockets on this node; close one before opening another", ident.User, adm.perUser)}
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
			return nil, &protoError{code: codeUnavailable, retryable: true, msg: "the socket is closing"}
		}
		return nil, &protoError{code: codeForbidden, closeCode: CloseDisconnected, closeReason: "blocked by the server",
			msg: fmt.Sprintf("user %q is blocked by the server until %s; do not reconnect before then",
				ident.User, until.UTC().Format(time.RFC3339))}
	}
	w := newReply(req.ID, true).str("user", ident.User).str("node", sess.srv.be.NodeID())
	if !ident.Expires.IsZero() {
		w.str("expires", ident.Expires.UTC().Format(time.RFC3339))
	}
	w.raw("limits", sess.srv.limitsJSON)
	return w.done(), nil
}

// authorized checks that the socket may run op on room.
func (sess *session) authorized(op, room string) (*auth.Identity, *protoError) {
	sess.mu.Lock()
	ident, expires := sess.ident, sess.expires
	sess.mu.Unlock()
	if ident == nil {
		return nil, &protoError{code: codeUnauthorized, msg: "send auth first"}
	}
	if now := time.Now(); !expires.IsZero() && !now.Before(expires) || expires.IsZero() && ident.Expired(now) {
		return nil, &protoError{code: codeUnauthorized, msg: "token expired; send auth with a fresh token"}
	}
	if perr := checkRoom(room); perr != nil {
		return nil, perr
	}
	var action auth.Action
	switch op {
	case opJoin, opLeave:
		action = auth.Join
	case opPublish:
		action = auth.Publish
	case opHistory, opMembers, opSubscribe:
		action = auth.Read
	default:
		return ident, nil
	}
	if !ident.Can(action, room) {
		return nil, &protoError{code: codeForbidden, msg: fmt.Sprintf("user %q may not %s room %q", ident.User, action, room)}
	}
	return ident, nil
}

// roomsInUse counts the rooms the socket holds against MaxRooms.
func (sess *session) roomsInUseLocked() int { return sess.subs.len() + len(sess.joined) }

func (sess *session) join(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protoError) {
	lim := sess.srv.cfg.Limits
	if max := min(lim.MaxData, fsm.MaxMetaBytes); len(req.Meta) > max {
		return nil, &protoError{code: codeTooLarge, msg: fmt.Sprintf("meta is %d bytes; at most %d", len(req.Meta), max)}
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
		return nil, &protoError{code: codeUnavailable, retryable: true, msg: "this node has not joined its cluster yet"}
	}
	meta := []byte(req.Meta)
	if string(meta) == "null" {
		meta = nil
	}
	cmd := fsm.Command{Op: fsm.OpJoin, Room: req.Room, Member: ident.User, Meta: meta,
		Ephemeral: true, NodeID: sess.srv.be.NodeID(), NodeEpoch: epoch}
	res, perr := sess.srv.propose(ctx, cmd, false)
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

func (sess *session) leaveOp(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protoError) {
	res, perr := sess.srv.leave(ctx, ident.User, req.Room)
	if perr == nil {
		sess.mu.Lock()
		delete(sess.joined, req.Room)
		sess.mu.Unlock()
	}
	return seqReply(req.ID, res, perr)
}

func (s *Server) leave(ctx context.Context, member, room string) (*fsm.Result, *protoError) {
	return s.propose(ctx, fsm.Command{Op: fsm.OpLeave, Room: room, Member: member}, false)
}

// leaveJoin undoes one join, the one that got joinSeq: if the member joined
// again since (another socket, maybe on another node, after a reconnect),
// that newer membership stays. A closing socket leaves this way.
func (s *Server) leaveJoin(ctx context.Context, member, room string, joinSeq uint64) (*fsm.Result, *protoError) {
	res, perr := s.propose(ctx, fsm.Command{Op: fsm.OpLeave, Room: room, Member: member,
		HasExpectSeq: true, ExpectSeq: joinSeq}, false)
	if perr != nil && (perr.code == codeConflict || perr.code == codeNotFound) {
		return nil, nil // renewed elsewhere, or already gone: nothing to undo
	}
	return res, perr
}

func seqReply(id []byte, res *fsm.Result, perr *protoError) ([]byte, *protoError) {
	if perr != nil {
		return nil, perr
	}
	return newReply(id, true).uint("seq", res.Seq).epoch(res.Epoch).done(), nil
}

func limitExceeded(n int) *protoError {
	return &protoError{code: codeLimitExceeded, msg: fmt.Sprintf("this socket already uses %d rooms (joined plus subscribed); leave or unsubscribe one first", n)}
}

func (sess *session) publish(ctx context.Context, ident *auth.Identity, req *request) ([]byte, *protoError) {
	lim := sess.srv.cfg.Limits
	switch {
	case len(req.Data) == 0:
		return nil, badRequest("publish needs data")
	case len(req.Data) > lim.MaxData:
		return nil, &protoError{code: codeTooLarge, msg: fmt.Sprintf("data is %d bytes; at most %d", len(req.Data), lim.MaxData)}
	case len(req.Key) > fsm.MaxKeyBytes:
		return nil, badRequest("key is %d bytes; at most %d", len(req.Key), fsm.MaxKeyBytes)
	}
	if wait, ok := sess.takePublishToken(time.Now()); !ok {
		return nil, &protoError{code: codeRateLimited, retryable: true, retryAfter: wait,
			msg: fmt.Sprintf("over %v publishes per second on this socket", lim.PublishRate)}
	}
	cmd := fsm.Command{Op: fsm.OpPublish, Room: req.Room, Member: ident.User, Data: req.Data, Key: req.Key,
		FromClient: sess.srv.marksClientPublishes()}
	if req.ExpectSeq != nil {
		cmd.HasExpectSeq, cmd.ExpectSeq = true, *req.ExpectSeq
	}
	res, perr := plantedAckEarly(sess.srv.propose(ctx, cmd, req.Key != ""))
	if perr != nil {
		return nil, perr
	}
	return newReply(req.ID, true).uint("seq", res.Seq).epoch(res.Epoch).bool("duplicate", res.Duplicate).done(), nil
}

func (s *Server) marksClientPublishes() bool {
	m, ok := s.be.(ClientPublishMarker)
	return !ok || m.MarkClientPublishes()
}

var plantedAckEarly = func(r *fsm.Result, p *protoError) (*fsm.Result, *protoError) { return r, p } // see jepsenbug_ackearly.go

// propose commits cmd, retrying while the request's deadline allows when
// nothing was written (no leader yet) and, for a keyed publish, when the
// outcome was lost (the key makes the retry harmless). Once any attempt may
// have committed, a later failure is reported as unknown_outcome, never as a
// failure the client would take as final.
func (s *Server) propose(ctx context.Context, cmd fsm.Command, retryUnknown bool) (*fsm.Result, *protoError) {
	return propose(ctx, s.be, cmd, retryUnknown)
}

// proposer is the part of Backend that commits.
type proposer interface {
	Propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
}

func propose(ctx context.Context, be proposer, cmd fsm.Command, retryUnknown bool) (*fsm.Result, *protoError) {
	uncertain := false
	backoff := 20 * time.Millisecond
	for {
		res, err := be.Propose(ctx, cmd)
		if err == nil {
			if res.Err != nil {
				return nil, resultError(cmd.Op, res)
			}
			return res, nil
		}
		unknown := errors.Is(err, multiraft.ErrUnknownOutcome) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
		if unknown {
			uncertain = true
		}
		retry := errors.Is(err, multiraft.ErrUnavailable) || (unknown && retryUnknown)
		if !retry || !sleep(ctx, backoff) {
			if uncertain {
				return nil, &protoError{code: codeUnknownOutcome, retryable: true,
					msg: fmt.Sprintf("the write may or may not have committed (%v); retry with the same key to find out", err)}
			}
			return nil, backendError(err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// resultError maps what the state machine refused to the protocol's codes.
func resultError(op fsm.Op, res *fsm.Result) *protoError {
	err := res.Err
	switch {
	case errors.Is(err, fsm.ErrConflict):
		return &protoError{code: codeConflict, lastSeq: res.LastSeq, msg: err.Error()}
	case errors.Is(err, fsm.ErrNotMember) && op == fsm.OpLeave:
		return &protoError{code: codeNotFound, msg: err.Error()}
	case errors.Is(err, fsm.ErrNotMember), errors.Is(err, fsm.ErrForbidden):
		return &protoError{code: codeForbidden, msg: err.Error()}
	case errors.Is(err, fsm.ErrRoomFull):
		return &protoError{code: codeLimitExceeded, msg: err.Error()}
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, fsm.ErrBadCommand):
		return &protoError{code: codeBadRequest, msg: err.Error()}
	case errors.Is(err, fsm.ErrRoomNotFound):
		return &protoError{code: codeNotFound, msg: err.Error()}
	}
	return &protoError{code: codeInternal, retryable: true, msg: err.Error()}
}

// backendError maps a failed read or a write that certainly did not commit.
func backendError(err error) *protoError {
	switch {
	case errors.Is(err, fsm.ErrRoomNotFound):
		return &protoError{code: codeNotFound, msg: err.Error()}
	case errors.Is(err, fsm.ErrInvalid):
		return &protoError{code: codeBadRequest, msg: err.Error()}
	case errors.Is(err, fsm.ErrCorrupt):
		// The replica that answered found its stored data corrupt and
		// stopped serving; another replica has it right.
		return &protoError{code: codeInternal, retryable: true, msg: err.Error()}
	case errors.Is(err, multiraft.ErrUnavailable), errors.Is(err, multiraft.ErrClosed),
		errors.Is(err, multiraft.ErrNoReplica), errors.Is(err, multiraft.ErrUnknownOutcome),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, fsm.ErrClosed),
		errors.Is(err, fsm.ErrNeedsRestore), errors.Is(err, fsm.ErrStorage):
		return &protoError{code: codeUnavailable, retryable: true, msg: err.Error()}
	}
	return &protoError{code: codeInternal, retryable: true, msg: err.Error()}
}

func consistencyOf(req *request) (stale bool, perr *protoError) {
	switch req.Consistency {
	case "", "linearizable":
		return false, nil
	case "stale":
		return true, nil
	}
	return false, badRequest("consistency must be \"linearizable\" or \"stale\", not %q", req.Consistency)
}
