package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Drop and re-create a leaderboard while cached reads run: no read, and no
// cached answer, may show the dropped incarnation's counts under the new
// incarnation (a drop whose wait was abandoned leaves partitions behind the
// meta group for a moment).
func TestRecreateNeverMixesIncarnations(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	mk := func() *pb.LeaderboardConfig {
		c, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "x"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mk()
	for attempt := 0; attempt < 40; attempt++ {
		var evs []Event
		for i := 0; i < 40; i++ {
			evs = append(evs, Event{Item: fmt.Sprintf("old-%d", i), Count: 5, TimeMs: time.Now().UnixMilli()})
		}
		if _, err := n.Ingest(ctx, IngestRequest{Leaderboard: "x", Events: evs}); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					n.TopK(ctx, TopKQuery{Leaderboard: "x", K: 10, Consistency: Cached})
				}
			}()
		}
		// A drop whose wait is abandoned (client gone), then a create by another client.
		dctx, cancel := context.WithCancel(ctx)
		cancel()
		n.DropLeaderboard(dctx, "x")
		created := mk() // acknowledged: every partition holds the new incarnation
		close(stop)
		wg.Wait()
		for _, c := range []Consistency{Cached, Leader, Linearizable} {
			a, err := n.TopK(ctx, TopKQuery{Leaderboard: "x", K: 10, Consistency: c})
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Items) > 0 {
				t.Fatalf("attempt %d: %v read after the acknowledged re-create (incarnation %d, answer says %d) returned the dropped incarnation's items: %v",
					attempt, c, created.Incarnation, a.Incarnation, a.Items[:min(3, len(a.Items))])
			}
		}
	}
}
