package wsfront

import (
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
)

// This file is what the front shares with the node's other client-facing
// API (package serverapi): its rules for names and its JSON forms, so that
// a request gets the same answer whichever way it came in. The error codes
// are package protocol's, and the mapping of cluster errors to them the
// room layer's (rooms.Commit, rooms.Read, rooms.ErrorOf).

// CheckRoom applies the protocol's rule for room names.
func CheckRoom(room string) *protocol.Error { return checkRoom(room) }

// ValidName reports whether s can name a member: UTF-8 without control
// characters, at most fsm.MaxMemberBytes, not empty.
func ValidName(s string) bool { return s != "" && len(s) <= fsm.MaxMemberBytes && validText(s) }

// AppendEvent appends ev as the protocol frames an event push.
func AppendEvent(b []byte, ev *fsm.Event) []byte { return appendEvent(b, ev) }

// AppendJSON appends v, which the front stores as JSON; a value that is
// not JSON (written by another kind of client) goes out as a JSON string.
func AppendJSON(b, v []byte) []byte { return appendRawJSON(b, v) }

// EpochString is the protocol's form of a room epoch: "" for a room that
// does not exist.
func EpochString(e uint64) string { return epochString(e) }
