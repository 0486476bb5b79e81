package fsm_test

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/fsm"
)

func TestCheckRoomName(t *testing.T) {
	for _, tt := range []struct {
		room    string
		wantErr string // "" means accepted
	}{
		{"lobby", ""},
		{"ünïcødé ✓ 😀", ""},
		{"no\u00a0break", ""}, // U+00A0 is the first printable code point after C1
		{"line\u2028sep", ""},
		{strings.Repeat("x", fsm.MaxRoomBytes), ""},
		{"", "empty"},
		{strings.Repeat("x", fsm.MaxRoomBytes+1), "at most 1024"},
		{"bad\xffutf8", "UTF-8"},
		{"a\x00b", "U+0000 at byte 1"},
		{"tab\t", "U+0009"},
		{"a\x1f", "U+001F"},
		{"a\x7f", "U+007F"},
		{"a\u0080", "U+0080"},
		{"a\u0085b", "U+0085"},
		{"\u009f", "U+009F at byte 0"},
	} {
		err := fsm.CheckRoomName(tt.room)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckRoomName(%q) = %v, want nil", tt.room, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("CheckRoomName(%q) = %v, want an error with %q", tt.room, err, tt.wantErr)
		}
	}
}
