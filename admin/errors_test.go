package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Every error a handler lets through gets its status and code, also when
// wrapped, and an error the API does not know is internal.
func TestErrorsBecomeAPIErrors(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{fsm.ErrRoomNotFound, http.StatusNotFound, "room_not_found"},
		{multiraft.ErrNoGroup, http.StatusNotFound, "group_not_found"},
		{multiraft.ErrNoReplica, http.StatusNotFound, "no_local_replica"},
		{fsm.ErrInvalid, http.StatusBadRequest, "invalid"},
		{multiraft.ErrMoveInProgress, http.StatusConflict, "move_in_progress"},
		{multiraft.ErrNotVoter, http.StatusConflict, "not_a_voter"},
		{meta.ErrConflict, http.StatusConflict, "conflict"},
		{multiraft.ErrNodeRemoved, http.StatusConflict, "node_removed"},
		{multiraft.ErrUnknownOutcome, http.StatusServiceUnavailable, "unknown_outcome"},
		{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout"},
		{context.Canceled, http.StatusServiceUnavailable, "canceled"},
		{multiraft.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
		{multiraft.ErrClosed, http.StatusServiceUnavailable, "unavailable"},
		{errors.New("something else"), http.StatusInternalServerError, "internal"},
	}
	for _, tc := range cases {
		err := fmt.Errorf("doing it: %w", tc.err)
		ae := toAPIError(err)
		if ae.Status != tc.status || ae.Code != tc.code || ae.Message[:len(err.Error())] != err.Error() {
			t.Errorf("%v: %d %s %q, want %d %s", tc.err, ae.Status, ae.Code, ae.Message, tc.status, tc.code)
		}
	}
	if ae := toAPIError(multiraft.ErrUnknownOutcome); ae.Message != multiraft.ErrUnknownOutcome.Error()+" (the change may or may not have been made; check before retrying)" {
		t.Errorf("unknown outcome: %q", ae.Message)
	}
	own := conflict("already_member", "x")
	if toAPIError(fmt.Errorf("wrapped: %w", own)) != own {
		t.Error("an API error is not passed through as it is")
	}
}
