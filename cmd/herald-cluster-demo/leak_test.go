package main

import (
	"testing"

	"github.com/heraldhq/herald/internal/leakcheck"
)

// The demo's cluster must leave no goroutine running once it returns.
func TestMain(m *testing.M) { leakcheck.Main(m) }
