package fsm

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// CheckRoomName applies the protocol's rule for room names: 1 to
// MaxRoomBytes bytes of UTF-8 without control characters (C0, DEL and C1,
// Unicode's Cc). Every entry point that takes a room name from outside (the
// websocket front, the admin API) calls it before proposing, so all of them
// refuse the same names. The error says what is wrong in words fit for a
// client; it does not echo the name, which may be a kilobyte long.
//
// The state machine's own check, applied to committed entries, is older
// and lets C1 through. It stays so: changing what Apply refuses would make
// a replica running this code and one running older code, or a replay of
// an existing log, disagree about the same entry.
func CheckRoomName(room string) error {
	switch {
	case room == "":
		return fmt.Errorf("room name is empty")
	case len(room) > MaxRoomBytes:
		return fmt.Errorf("room name is %d bytes; at most %d", len(room), MaxRoomBytes)
	case !utf8.ValidString(room):
		return fmt.Errorf("room name is not valid UTF-8")
	}
	for i, r := range room {
		if unicode.IsControl(r) {
			return fmt.Errorf("room name has the control character %U at byte %d; control characters are not allowed", r, i)
		}
	}
	return nil
}
