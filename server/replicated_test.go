package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
)

// TestIngestWaitsWhileGrowingTowardR: a single node acknowledges ingest on
// its own; once a second member joins, a partition still on one node holds
// ingest (ErrNotReady, retried until the deadline) rather than acknowledge
// an event that node's loss would take. The member here never runs, so the
// moves toward it never finish.
func TestIngestWaitsWhileGrowingTowardR(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	evs := []Event{{Item: "a"}, {Item: "b"}, {Item: "c"}, {Item: "d"}}
	if _, err := n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p", Epoch: 1, Sequence: 1}); err != nil {
		t.Fatalf("one member: %v", err)
	}
	if _, err := n.Join(ctx, &metapb.Node{Id: "n2", RaftAddr: "127.0.0.1:1", HttpAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, err := n.Ingest(wctx, IngestRequest{Events: evs, ProducerID: "p", Epoch: 1, Sequence: 2})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "has 1 of its 2 replicas") {
		t.Fatalf("ingest with a second member and partitions on one node: %v; want it held (ErrNotReady)", err)
	}
	// Reads do not wait.
	if _, err := n.TopK(ctx, TopKQuery{K: 10, Consistency: Linearizable}); err != nil {
		t.Fatalf("read: %v", err)
	}
}
