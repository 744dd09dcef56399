package server

import (
	"context"
	"sync/atomic"
	"time"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// coordinator is the node's client-facing half: it validates and splits
// ingest requests and routes each part to its partition's Replica, and it
// scatter-gathers queries over the partitions and merges them, with the
// result cache in front. It sees partitions only through Replica, so where
// a partition lives (here or on a peer) is not its concern.
type coordinator struct {
	coordDeps
	pending atomic.Int64 // events of ingest requests in progress (MaxPendingEvents)
	cache   *resultCache
	lanes   *producerLanes // producer ids for requests that carry none
}

// coordDeps are a coordinator's dependencies, passed in.
type coordDeps struct {
	policy   IngestPolicy
	clock    Clock
	metrics  *metrics
	mem      *memoryGuard
	boards   func(name string) (*pb.LeaderboardConfig, error)
	replicas []Replica // by partition; len is P
	nodeID   string    // names the producer ids this node assigns
	// ready fails until this node may answer (its logs replayed).
	ready func(ctx context.Context) error
}

func newCoordinator(d coordDeps, cacheEvery time.Duration, refreshed func(TopKAnswer)) *coordinator {
	co := &coordinator{coordDeps: d, lanes: newProducerLanes(d.nodeID, uint64(d.clock.Now().UnixMilli()))}
	whole := func(ctx context.Context, cfg *pb.LeaderboardConfig, window time.Duration, k int, c Consistency) (TopKAnswer, error) {
		return co.gather(ctx, cfg, window, k, c, false) // the cache holds whole answers only
	}
	co.cache = newResultCache(cacheDeps{every: cacheEvery, clock: d.clock, boards: d.boards, gather: whole,
		refreshed: refreshed})
	return co
}
