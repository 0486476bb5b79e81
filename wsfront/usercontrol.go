package wsfront

import (
	"errors"
	"fmt"
	"time"
)

// This file is what an application's backend may do to a user's sockets on
// this node, through the server API (docs/server-api.md#user-ops): close
// them, end their subscriptions to a room, set their expiry, and refuse the
// user's auth for a while. Each call acts on this node's sockets only; the
// server API reaches the other nodes.

// MaxBlockedUsers bounds the users a node refuses at once, so that the
// block list cannot grow without end.
const MaxBlockedUsers = 100_000

// ErrTooManyBlocked is returned by BlockUser when the node already refuses
// MaxBlockedUsers users.
var ErrTooManyBlocked = errors.New("wsfront: too many users blocked on this node")

// userSessions returns this node's live sockets authenticated as user.
//
// It walks every socket of the node: the user ops are rare, backend-driven
// calls, and an index kept up on every auth and close would cost every
// socket for their sake.
func (s *Server) userSessions(user string) []*session {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	var out []*session
	for _, sess := range all {
		if ident := sess.identity(); ident != nil && ident.User == user && !sess.closing.Load() {
			out = append(out, sess)
		}
	}
	return out
}

// DisconnectUser closes every socket of user on this node with code and
// reason, and returns how many it closed. The caller checks code and
// reason (CloseAppMin..CloseAppMax or CloseDisconnected; at most
// MaxCloseReasonBytes of UTF-8).
func (s *Server) DisconnectUser(user string, code uint16, reason string) int {
	n := 0
	for _, sess := range s.userSessions(user) {
		if sess.closeWith(code, reason) {
			n++
		}
	}
	return n
}

// BlockUser makes this node refuse user's auth until until (with
// forbidden, and the socket is closed with CloseDisconnected). A later
// block replaces an earlier one, also to lift it (until in the past). The
// list lives in memory: a node that restarts forgets it.
func (s *Server) BlockUser(user string, until time.Time) error {
	now := time.Now()
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	if !until.After(now) {
		delete(s.blocks, user)
		return nil
	}
	if _, ok := s.blocks[user]; !ok && len(s.blocks) >= MaxBlockedUsers {
		s.pruneBlocksLocked(now)
		if len(s.blocks) >= MaxBlockedUsers {
			return fmt.Errorf("%w: %d users are refused until their blocks end", ErrTooManyBlocked, len(s.blocks))
		}
	}
	if s.blocks == nil {
		s.blocks = make(map[string]time.Time)
	}
	s.blocks[user] = until
	return nil
}

// blockedLocked returns when the block on user ends, if it has not yet.
func (s *Server) blockedLocked(user string, now time.Time) (time.Time, bool) {
	until, ok := s.blocks[user]
	return until, ok && now.Before(until)
}

func (s *Server) pruneBlocksLocked(now time.Time) {
	for user, until := range s.blocks {
		if !now.Before(until) {
			delete(s.blocks, user)
		}
	}
}

func (s *Server) pruneBlocks(now time.Time) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	s.pruneBlocksLocked(now)
}

// UnsubscribeUser ends the subscriptions of user's sockets on this node to
// room, pushing each socket an unsubscribed notice after its last event,
// and returns how many it ended.
func (s *Server) UnsubscribeUser(user, room string) int {
	n := 0
	for _, sess := range s.userSessions(user) {
		sess.mu.Lock()
		sub := sess.subs.get(room)
		sess.mu.Unlock()
		if sub == nil {
			continue
		}
		// Dropped first: once its subscription is closed, no event of
		// the room is queued after the notice.
		sess.dropSubscription(sub)
		sess.send(newPush("unsubscribed").str("room", room).done())
		n++
	}
	return n
}

// RefreshUser sets the expiry of user's sockets on this node to expires,
// in place of their tokens' exp, and returns how many it set: their
// requests are served until then, and at expires they are closed with
// CloseExpired, unless a socket sent auth with a new token before. An
// expires already past closes them at once.
func (s *Server) RefreshUser(user string, expires time.Time) int {
	n := 0
	for _, sess := range s.userSessions(user) {
		if sess.setExpiry(expires) {
			n++
		}
	}
	return n
}

// setExpiry gives the socket a server-set expiry; false if it is closing.
func (sess *session) setExpiry(at time.Time) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended || sess.closing.Load() {
		return false
	}
	sess.stopExpiryLocked()
	sess.expires = at
	// A timer rather than the sweeper: the sweeper's tick is seconds, and
	// the application chose this instant.
	sess.expiryTimer = time.AfterFunc(time.Until(at), func() {
		sess.closeWith(CloseExpired, "expired: the server set this socket's expiry; reconnect with a fresh token")
	})
	return true
}

// stopExpiryLocked drops a server-set expiry.
func (sess *session) stopExpiryLocked() {
	if sess.expiryTimer != nil {
		sess.expiryTimer.Stop()
		sess.expiryTimer = nil
	}
	sess.expires = time.Time{}
}
