package fsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// BenchmarkApplyModes applies the same Zipf(1.1) stream over 1M items, 1,000
// events per entry pre-aggregated per (item, second), to one leaderboard
// with windows all, 1h and 1d in each mode, side by side. It reports apply
// cost per event and the state's size (live heap growth and snapshot bytes).
//
//	go test ./fsm -run '^$' -bench ApplyModes -benchtime 20x
func BenchmarkApplyModes(b *testing.B) {
	modes := []struct {
		name string
		cfg  func(c *pb.LeaderboardConfig)
	}{
		{"exact", func(c *pb.LeaderboardConfig) {}},
		{"spacesaving", func(c *pb.LeaderboardConfig) { c.Mode = pb.Mode_MODE_SPACESAVING }},
		{"cms", func(c *pb.LeaderboardConfig) { c.Mode = pb.Mode_MODE_CMS }},
	}
	for _, m := range modes {
		b.Run("items=1M/mode="+m.name, func(b *testing.B) {
			const n = 1_000_000
			cfg := benchConfig(benchWindows)
			m.cfg(cfg)
			h0 := heapAlloc()
			f := New(Options{})
			var idx uint64
			next := func(data []byte) *raft.Log {
				idx++
				return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
			}
			if r := f.ApplyBatch([]*raft.Log{next(mustEncode(EncodeConfig(cfg)))}); r[0] != nil {
				b.Fatal(r[0])
			}
			zs := newZipfItems(n, 0x70bd)
			sec := int64(benchBaseHour * benchSecsPerHour)
			// 10 minutes of entries (600K events) per iteration.
			gen := func() ([]*raft.Log, int64) {
				logs := make([]*raft.Log, 0, 600)
				for range 600 {
					d := zs.deltas(benchEventsPerEntry, sec)
					e := &pb.IngestEntry{LeaderTimeMs: sec*1000 + 500, Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{d}}}}
					logs = append(logs, next(mustEncode(EncodeIngest(e))))
					sec++
				}
				return logs, 600 * benchEventsPerEntry
			}
			var events int64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				logs, ev := gen()
				b.StartTimer()
				f.applyLogs(logs, benchBatch)
				events += ev
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(heapAlloc()-h0)/(1<<20), "heapMB")
			b.ReportMetric(float64(len(snapshotBytes(b, f)))/(1<<20), "snapMB")
			b.ReportMetric(float64(f.DistinctAt(benchBoard, 0)), "tracked")
			r, err := f.TopK(benchBoard, 0, 100)
			if err != nil || len(r.Items) != 100 {
				b.Fatalf("top-100: %d items, %v", len(r.Items), err)
			}
			start := time.Now()
			for range 100 {
				if _, err := f.TopK(benchBoard, time.Hour, 100); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/100, "µs/top100-1h")
			_ = fmt.Sprint()
		})
	}
}

// BenchmarkApplySmallBatches is apply as a partition sees it at low ingest
// rates: every ApplyBatch holds one entry of 250 events (a 1,000-event
// request split over 4 partitions), on the default leaderboard's windows
// (all, 1m, 1h, 1d, 7d) after 2M events over 1M items. Per-batch work (settle
// of five windows) weighs here as it does not in BenchmarkApply's batches of
// 64 entries of 1,000 events.
//
//	go test ./fsm -run '^$' -bench ApplySmallBatches -benchtime 20x
func BenchmarkApplySmallBatches(b *testing.B) {
	const n, perEntry, entries = 1_000_000, 250, 4000
	f := New(Options{})
	var idx uint64
	next := func(data []byte) *raft.Log {
		idx++
		return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
	}
	cfg := benchConfig([]time.Duration{time.Minute, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour})
	if r := f.ApplyBatch([]*raft.Log{next(mustEncode(EncodeConfig(cfg)))}); r[0] != nil {
		b.Fatal(r[0])
	}
	zs := newZipfItems(n, 0x5a11)
	ms := int64(benchBaseHour) * benchSecsPerHour * 1000
	// one entry of perEntry events per 2 ms of log time (125K events/s).
	gen := func(k int) []*raft.Log {
		logs := make([]*raft.Log, 0, k)
		for range k {
			d := zs.deltas(perEntry, ms/1000)
			e := &pb.IngestEntry{LeaderTimeMs: ms, Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{d}}}}
			logs = append(logs, next(mustEncode(EncodeIngest(e))))
			ms += 2
		}
		return logs
	}
	f.applyLogs(gen(2_000_000/perEntry), benchBatch)
	var events int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		logs := gen(entries)
		b.StartTimer()
		f.applyLogs(logs, 1)
		events += entries * perEntry
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/batch")
}
