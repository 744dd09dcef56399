package main

import (
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/rpc/rpctest"
	"github.com/topkd/topkd/server"
)

func newTestNode(t *testing.T) *rpctest.Node { return rpctest.New(t) }

// bench against a node that refuses all ingest stops at the first batch
// whose retries ran out, saying why, instead of sending on.
func TestBenchStopsWhenRefused(t *testing.T) {
	node := rpctest.NewWith(t, func(c *server.Config) { c.MemoryHighWater = 1 })
	start := time.Now()
	out, err := run(t, node.Addr, "", "--timeout", "3s", "bench", "--events", "200000", "--producers", "4", "--batch", "100",
		"--query-rate", "0", "--progress=false")
	if err == nil {
		t.Fatalf("bench against a refusing node succeeded:\n%s", out)
	}
	if !strings.Contains(err.Error(), "high-water") || strings.Contains(err.Error(), "outcome unknown") {
		t.Errorf("error %q: want the refusal named, not an unknown outcome", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("bench took %v to stop", d)
	}
}

// Against an address where nothing listens, a command fails in about
// --refused-timeout (2 s), not --timeout, and says why.
func TestRefusedConnectionFailsFast(t *testing.T) {
	start := time.Now()
	_, err := run(t, "127.0.0.1:1", "", "status")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("status against a closed port: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("took %v, want about 2 s", d)
	}
}
