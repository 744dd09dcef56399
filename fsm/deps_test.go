package fsm

// Test-only dependencies, pinned in go.mod for the test files of this package.
import (
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "go.uber.org/goleak"
	_ "pgregory.net/rapid"
)
