package jepsen

import (
	"testing"

	"github.com/heraldhq/herald/internal/leakcheck"
)

// Every goroutine the tests start must be stopped by the time they end.
func TestMain(m *testing.M) { leakcheck.Main(m) }
