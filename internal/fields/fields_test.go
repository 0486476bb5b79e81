package fields

import (
	"testing"
	"time"
)

type inner struct{ N int }

type sample struct {
	Timeout time.Duration
	Name    string
	Hook    func() int
	Inner   inner // nested: left to its own defaults
	hidden  int
}

func TestFillSetsOnlyZeroTopLevelFields(t *testing.T) {
	defaults := sample{Timeout: time.Second, Name: "d", Hook: func() int { return 1 }, Inner: inner{N: 7}, hidden: 9}
	c := sample{Name: "set"}
	Fill(&c, defaults)
	if c.Timeout != time.Second || c.Name != "set" || c.Hook == nil || c.Hook() != 1 {
		t.Fatalf("filled %+v", c)
	}
	if c.Inner.N != 0 || c.hidden != 0 {
		t.Fatalf("Fill reached into a nested struct or an unexported field: %+v", c)
	}
}
