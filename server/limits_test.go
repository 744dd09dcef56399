package server

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/fsm"

	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// The leaderboard limit counts the default leaderboard; at the limit a
// creation is refused with a clear error, and a drop makes room again.
func TestLeaderboardLimit(t *testing.T) {
	n, err := openNodeConfig(t, Config{DataDir: t.TempDir(), MaxLeaderboards: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := t.Context()
	for i := range 2 {
		if _, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: fmt.Sprintf("b%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "b2"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--max-leaderboards") {
		t.Fatalf("fourth leaderboard: %v, want the limit named", err)
	}
	if got := len(n.Leaderboards()); got != 3 {
		t.Fatalf("%d leaderboards after a refused creation", got)
	}
	if err := n.DropLeaderboard(ctx, "b0"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "b2"}); err != nil {
		t.Fatalf("after a drop: %v", err)
	}
}

// The meta group enforces the limit itself: two nodes that each saw room
// cannot both add one.
func TestLeaderboardLimitInMeta(t *testing.T) {
	n, err := openNodeConfig(t, Config{DataDir: t.TempDir(), MaxLeaderboards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := t.Context()
	if _, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "b0"}); err != nil {
		t.Fatal(err)
	}
	// As if proposed by a node that had not seen b0 yet.
	put := func(name string) error {
		_, err := n.proposeMeta(ctx, metaPut(name, 2))
		return err
	}
	if err := put("b1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("past the limit in the meta group: %v", err)
	}
}

func metaPut(name string, limit uint32) *metapb.Command {
	return &metapb.Command{Cmd: &metapb.Command_PutLeaderboard{PutLeaderboard: &metapb.PutLeaderboard{
		Config: &pb.LeaderboardConfig{Name: name}, CreateOnly: true, MaxLeaderboards: limit}}}
}

// BenchmarkEmptyLeaderboard measures what one empty leaderboard costs a
// node: creation time and live heap (off-heap item records included).
func BenchmarkEmptyLeaderboard(b *testing.B) {
	n := openBenchNode(b)
	before := liveHeap()
	start := time.Now()
	for i := range b.N {
		if _, err := n.CreateLeaderboard(b.Context(), &pb.LeaderboardConfig{Name: fmt.Sprintf("empty-%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1000, "ms/create")
	b.ReportMetric(float64(liveHeap()-before)/float64(b.N)/1024, "KiB/board")
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + uint64(fsm.OffHeapBytes())
}
