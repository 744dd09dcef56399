package server

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a node starts (combiners, loops, raft, transports) ends with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
