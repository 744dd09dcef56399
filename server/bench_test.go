package server

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkNodeIngest measures durable ingest through the node (validation,
// split, combiner, Raft commit on raft-boltdb, apply) without the HTTP layer:
// 4 producers, batches of 1,000 Zipf(1.1) events over 1M items.
func BenchmarkNodeIngest(b *testing.B) {
	n := openBenchNode(b)
	const producers, batch, items = 4, 1000, 1_000_000
	names := make([]string, items)
	for i := range names {
		names[i] = "song_" + strconv.Itoa(i)
	}
	batches := make([][]Event, 64)
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, items-1)
	for i := range batches {
		batches[i] = make([]Event, batch)
		for j := range batches[i] {
			batches[i][j] = Event{Item: names[z.Uint64()]}
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / producers
	start := time.Now()
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				evs := batches[(p*per+i)%len(batches)]
				if _, err := n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p" + strconv.Itoa(p), Epoch: 1, Sequence: uint64(i + 1)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*producers*batch)/time.Since(start).Seconds(), "events/s")
}

func openBenchNode(b *testing.B) *Node {
	b.Helper()
	n, err := Open(context.Background(), Config{NodeID: "n1", DataDir: b.TempDir(), RaftAddr: "127.0.0.1:0",
		Raft: DefaultRaftPolicy(), Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return n
}

// BenchmarkSplit: validating, aggregating and partitioning one request of
// 1,000 untimed Zipf(1.1) events over 1M items (the ingest handler's work
// before the combiners).
func BenchmarkSplit(b *testing.B) {
	n := openBenchNode(b)
	cfg, err := n.leaderboard("default")
	if err != nil {
		b.Fatal(err)
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, 999_999)
	evs := make([]Event, 1000)
	for i := range evs {
		evs[i] = Event{Item: "song_" + strconv.FormatUint(z.Uint64(), 10)}
	}
	b.ResetTimer()
	for range b.N {
		if _, _, err := n.coord.split(cfg, IngestRequest{Events: evs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
}
