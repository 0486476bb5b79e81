package jepsen

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/jepsen/lazyfs"
)

func TestChooseDisks(t *testing.T) {
	avail := lazyfs.Available()
	for _, tc := range []struct {
		mode     string
		wantLazy bool
		wantErr  bool
	}{
		{"plain", false, false},
		{"auto", avail == nil, false},
		{"", avail == nil, false},
		{"lazy", avail == nil, avail != nil},
		{"tape", false, true},
	} {
		lazy, desc, err := chooseDisks(tc.mode)
		if lazy != tc.wantLazy || (err != nil) != tc.wantErr {
			t.Errorf("chooseDisks(%q) = %v, %q, %v; want lazy %v, error %v", tc.mode, lazy, desc, err, tc.wantLazy, tc.wantErr)
		}
		// Without lazy disks the run must say so, and why.
		if err == nil && !lazy && !strings.Contains(desc, "plain") {
			t.Errorf("chooseDisks(%q) without lazy disks says %q", tc.mode, desc)
		}
	}
}
