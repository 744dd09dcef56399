package raftlog

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// appendCycles drives groups the way raft does under sustained ingest: each
// group appends entries one commit at a time and, every snapshotEvery
// entries, compacts all but trailing of them. It returns the file size after
// every cycle and the latency of every StoreLogs call.
func appendCycles(tb testing.TB, s *Store, groups, cycles, snapshotEvery, trailing, size int) ([]int64, []time.Duration) {
	data := make([]byte, size)
	var (
		mu    sync.Mutex
		lats  []time.Duration
		sizes []int64
	)
	for c := range cycles {
		var wg sync.WaitGroup
		for g := range groups {
			gs := s.Group(uint32(g))
			wg.Go(func() {
				local := make([]time.Duration, 0, snapshotEvery)
				base := uint64(c * snapshotEvery)
				for i := 1; i <= snapshotEvery; i++ {
					start := time.Now()
					if err := gs.StoreLogs([]*raft.Log{{Index: base + uint64(i), Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
						tb.Error(err)
						return
					}
					local = append(local, time.Since(start))
				}
				// The snapshot's compaction, while the other groups keep appending.
				last := base + uint64(snapshotEvery)
				if err := gs.DeleteRange(1, last-uint64(trailing)); err != nil {
					tb.Error(err)
				}
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			})
		}
		wg.Wait()
		fs, err := s.FileStats()
		if err != nil {
			tb.Fatal(err)
		}
		sizes = append(sizes, fs.Size)
	}
	return sizes, lats
}

// TestFileLevelsOff: under sustained appends with a compaction per
// snapshot, the file stops growing once the freed pages are reused. Each
// cycle writes about 19 MiB; without reuse the file would grow by that much
// per cycle (bbolt grows it in 16 MiB steps).
func TestFileLevelsOff(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "raftlog.db"), Options{})
	const groups, perCycle, size = 4, 300, 16 << 10
	sizes, _ := appendCycles(t, s, groups, 6, perCycle, 20, size)
	t.Logf("file size after each snapshot-and-compaction cycle: %v", sizes)
	if cycle := int64(groups * perCycle * size); sizes[5]-sizes[2] >= cycle {
		t.Errorf("the file grew from %d bytes after cycle 3 to %d after cycle 6, a cycle's data (%d) or more: freed pages are not reused",
			sizes[2], sizes[5], cycle)
	}
}

// BenchmarkCompaction measures StoreLogs latency of four groups appending
// 2.5 KB entries while each compacts 8,192 entries per snapshot cycle
// (raft's defaults here: SnapshotThreshold 8192, TrailingLogs 512), and
// reports the file size after each cycle.
func BenchmarkCompaction(b *testing.B) {
	for b.Loop() {
		s, err := Open(filepath.Join(b.TempDir(), "raftlog.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		sizes, lats := appendCycles(b, s, 4, 3, 8704, 512, 2500)
		s.Close()
		slices.Sort(lats)
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lats[len(lats)-1].Microseconds()), "max-µs")
		for i, sz := range sizes {
			b.ReportMetric(float64(sz)/(1<<20), fmt.Sprintf("MiB-after-cycle-%d", i+1))
		}
	}
}

// BenchmarkGroupCommit: concurrent writers of `groups` groups each store
// one 2.5 KB entry per op; commits and writes per commit show the sharing.
func BenchmarkGroupCommit(b *testing.B) {
	for _, groups := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			var nCommits, nWrites atomic.Int64
			s, err := Open(filepath.Join(b.TempDir(), "raftlog.db"), Options{Observer: observerFunc(func(st CommitStats) {
				nCommits.Add(1)
				nWrites.Add(int64(st.Writes))
			})})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([]byte, 2500)
			idx := uint64(0)
			for b.Loop() {
				idx++
				var wg sync.WaitGroup
				for g := range groups {
					gs := s.Group(uint32(g))
					wg.Go(func() {
						if err := gs.StoreLogs([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(nWrites.Load())/float64(nCommits.Load()), "writes/commit")
			b.ReportMetric(float64(nCommits.Load())/float64(b.N), "commits/op")
		})
	}
}

type observerFunc func(CommitStats)

func (f observerFunc) ObserveCommit(st CommitStats) { f(st) }
