package transport

import (
	"testing"

	"github.com/heraldhq/herald/internal/leakcheck"
)

// Every goroutine the tests start must be stopped by the time they end
// (TestNoGoroutineLeak checks the same of one scenario, by count).
func TestMain(m *testing.M) { leakcheck.Main(m) }
