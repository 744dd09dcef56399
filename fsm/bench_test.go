package fsm

// Benchmarks of the counting state machine: apply throughput under a Zipf
// load, TopK latency, memory per item and window, and the snapshot path.
//
// None of this runs without -bench. The large cases are named by their item
// count so they can be run alone, for example:
//
//	go test ./fsm -run XXX -bench 'Apply/items=1M' -benchtime 3x
//	go test ./fsm -run XXX -bench '/items=10M' -benchtime 3x -timeout 30m
//
// One op of BenchmarkApply is one hour of traffic (3,600 entries of 1,000 raw
// events each, event time advancing 1 s per entry), so every op expires 60
// buckets of the 1h window and one bucket of the 1d window; read events/s,
// ns/event and ns/delta rather than ns/op; cpu-ns/event is process CPU time
// (GC included), which the other tenants of a shared machine do not inflate
// as much as wall time. The preloaded fixture is cached per item count for
// the whole run and shared by Apply, TopK and Snapshot (the b.N=1 and b.N=3
// runs continue the same log); `-bench .` holds both fixtures (about 2.5 GiB)
// and takes about 6 minutes on 2 cores.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

const (
	benchBoard          = "bench"
	benchZipfS          = 1.1
	benchEventsPerEntry = 1000
	benchSecsPerHour    = 3600
	benchBatch          = 64 // hashicorp/raft's default MaxAppendEntries
	benchLatencyBatch   = 8  // smaller batches for latency percentiles
	benchPreloadChunk   = 8192
	benchProducers      = 8
	// benchBaseHour is an arbitrary hour (Nov 2023) the synthetic log starts at.
	benchBaseHour = 472_222
	// benchPermMul scrambles Zipf ranks over item numbers (odd, not a multiple
	// of 5, so a bijection mod 10^k): popular items get scattered ids.
	benchPermMul = 2_654_435_761
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"1M", 1_000_000},
	{"10M", 10_000_000},
}

var benchWindows = []time.Duration{time.Hour, 24 * time.Hour}

func benchConfig(windows []time.Duration) *pb.LeaderboardConfig {
	c := &pb.LeaderboardConfig{Name: benchBoard, Incarnation: 1, Version: 1, Mode: pb.Mode_MODE_EXACT, Clock: pb.Clock_CLOCK_WALL}
	for _, d := range windows {
		c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: d.Milliseconds()})
	}
	return c
}

func benchItem(buf []byte, i int) ([]byte, string) {
	buf = strconv.AppendInt(append(buf[:0], "song_"...), int64(i), 10)
	return buf, string(buf)
}

// benchFixture is a warmed FSM plus the deterministic generator that feeds it.
type benchFixture struct {
	zipfItems
	f       *FSM
	index   uint64
	entries uint64
	nextSec int64 // event second of the next real-rate entry
	prods   []string
	events  uint64 // raw events applied, to check against the leaderboard
	late    uint64 // events of the preload sweep, late for every sliding window
	setup   time.Duration
}

// benchHour is one hour of pre-encoded entries.
type benchHour struct {
	logs   []*raft.Log
	events int64
	deltas int64
}

var benchFixtures = map[int]*benchFixture{}

// getFixture returns the cached warmed FSM with n distinct items, building it
// on first use.
func getFixture(b *testing.B, n int) *benchFixture {
	b.Helper()
	if fx := benchFixtures[n]; fx != nil {
		return fx
	}
	fx := newBenchFixture(b, n)
	benchFixtures[n] = fx
	return fx
}

func dropFixtures() {
	clear(benchFixtures)
	runtime.GC()
}

func (fx *benchFixture) board() *exactBoard { return fx.f.st.boards[benchBoard].counts.(*exactBoard) }

// zipfItems draws the benchmarks' Zipf(1.1) events over n items and
// pre-aggregates them per item, as the server does per (item, second).
type zipfItems struct {
	n     int
	z     *rand.Zipf
	cnt   []uint32 // scratch: events per item in the entry being built
	order []uint32 // scratch: items of that entry in first-seen order
	name  []byte
}

func newZipfItems(n int, seed uint64) zipfItems {
	return zipfItems{n: n, cnt: make([]uint32, n),
		z: rand.NewZipf(rand.New(rand.NewPCG(uint64(n), seed)), benchZipfS, 1, uint64(n-1))}
}

// draw returns the item number of one Zipf(1.1) event.
func (s *zipfItems) draw() uint32 {
	r := s.z.Uint64()
	return uint32((r*benchPermMul + 7) % uint64(s.n))
}

// aggregate draws events and returns their distinct items in first-seen
// order; each item's count waits in cnt until take.
func (s *zipfItems) aggregate(events int) []uint32 {
	s.order = s.order[:0]
	for range events {
		it := s.draw()
		if s.cnt[it] == 0 {
			s.order = append(s.order, it)
		}
		s.cnt[it]++
	}
	return s.order
}

// take appends item's aggregated count to d at second sec and clears it.
func (s *zipfItems) take(d *pb.LeaderboardDeltas, item uint32, sec int64) {
	s.addDelta(d, item, s.cnt[item], sec)
	s.cnt[item] = 0
}

// deltas draws events and returns them pre-aggregated per item at second sec.
func (s *zipfItems) deltas(events int, sec int64) *pb.LeaderboardDeltas {
	order := s.aggregate(events)
	d := newDeltas(len(order))
	for _, it := range order {
		s.take(d, it, sec)
	}
	return d
}

func (fx *benchFixture) log(data []byte) *raft.Log {
	fx.index++
	return &raft.Log{Index: fx.index, Term: 1, Type: raft.LogCommand, Data: data}
}

// entry wraps one leaderboard's deltas into an ingest entry from a rotating producer.
func (fx *benchFixture) entry(logMs int64, d *pb.LeaderboardDeltas) *raft.Log {
	p := fx.entries % benchProducers
	seq := fx.entries/benchProducers + 1
	fx.entries++
	e := &pb.IngestEntry{LeaderTimeMs: logMs, Parts: []*pb.ProducerPart{
		{ProducerId: fx.prods[p], Epoch: 1, Sequence: seq, Boards: []*pb.LeaderboardDeltas{d}},
	}}
	return fx.log(mustEncode(EncodeIngest(e)))
}

func newDeltas(n int) *pb.LeaderboardDeltas {
	return &pb.LeaderboardDeltas{Leaderboard: benchBoard, Incarnation: 1,
		Items: make([]string, 0, n), Deltas: make([]int64, 0, n), EventTimesS: make([]int64, 0, n), Events: make([]uint32, 0, n)}
}

func (s *zipfItems) addDelta(d *pb.LeaderboardDeltas, item uint32, events uint32, sec int64) {
	var it string
	s.name, it = benchItem(s.name, int(item))
	d.Items = append(d.Items, it)
	d.Deltas = append(d.Deltas, int64(events))
	d.EventTimesS = append(d.EventTimesS, sec)
	d.Events = append(d.Events, events)
}

// applyChecked applies logs in raft-sized batches and fails on anything but a
// fully accepted ingest.
func (fx *benchFixture) applyChecked(b *testing.B, logs []*raft.Log) {
	b.Helper()
	for len(logs) > 0 {
		n := min(benchBatch, len(logs))
		for i, r := range fx.f.ApplyBatch(logs[:n]) {
			switch r := r.(type) {
			case nil:
			case *IngestResult:
				for _, o := range r.Outcomes {
					if o.Status != pb.PartStatus_PART_STATUS_APPLIED || o.Rejected != 0 || (len(o.Late) != 0 && fx.late == 0) {
						b.Fatalf("log %d: outcome %v, want applied with nothing rejected or late", logs[i].Index, o)
					}
				}
			default:
				b.Fatalf("log %d: result %T %v", logs[i].Index, r, r)
			}
		}
		logs = logs[n:]
	}
}

// applyLogs is the measured path: ApplyBatch in raft-sized batches, nothing else.
func (f *FSM) applyLogs(logs []*raft.Log, batch int) { f.applyLogsTimed(logs, batch, nil) }

// applyLogsTimed is applyLogs that appends each ApplyBatch's duration to lat.
func (f *FSM) applyLogsTimed(logs []*raft.Log, batch int, lat *[]time.Duration) {
	for len(logs) > 0 {
		n := min(batch, len(logs))
		t0 := time.Now()
		f.ApplyBatch(logs[:n])
		if lat != nil {
			*lat = append(*lat, time.Since(t0))
		}
		logs = logs[n:]
	}
}

// genHour pre-encodes the next hour of real-rate traffic: one entry per
// second of 1,000 Zipf events, pre-aggregated per (item, second).
func (fx *benchFixture) genHour() benchHour {
	h := benchHour{logs: make([]*raft.Log, 0, benchSecsPerHour)}
	for range benchSecsPerHour {
		sec := fx.nextSec
		fx.nextSec++
		d := fx.deltas(benchEventsPerEntry, sec)
		h.logs = append(h.logs, fx.entry(sec*1000+500, d))
		h.events += benchEventsPerEntry
		h.deltas += int64(len(d.Items))
	}
	fx.events += uint64(h.events)
	return h
}

// newBenchFixture builds a state that looks like a day of Zipf(1.1) traffic
// over n items at 1,000 events/s:
//
//   - hour W-25: every item once (ids = item numbers, so ids do not follow
//     popularity), with event times too old for the sliding windows;
//   - hours W-23..W-1: each hour's 3.6M Zipf events aggregated per item into
//     the hour's first second, which gives the 1d window the same buckets a
//     real day would (one entry per distinct item per hour);
//   - hour W: one real-rate hour, which fills the 1h window.
//
// The measured hours then start at W+1; each expires the oldest 1d bucket.
func newBenchFixture(b *testing.B, n int) *benchFixture {
	b.Helper()
	start := time.Now()
	// The preload grows the heap from nothing; fewer GC cycles make it faster.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	fx := &benchFixture{zipfItems: newZipfItems(n, 0x70bd), f: New(Options{})}
	for p := range benchProducers {
		fx.prods = append(fx.prods, fmt.Sprintf("bench-producer-%d", p))
	}
	w := int64(benchBaseHour + 25)
	fx.applyChecked(b, []*raft.Log{fx.log(mustEncode(EncodeConfig(benchConfig(benchWindows))))})

	var pend []*raft.Log
	flush := func() {
		fx.applyChecked(b, pend)
		pend = pend[:0]
	}
	emit := func(logMs int64, d *pb.LeaderboardDeltas) {
		pend = append(pend, fx.entry(logMs, d))
		if len(pend) == benchBatch {
			flush()
		}
	}
	// Every item once, with event times two days old: late for the sliding
	// windows, so they count only in "all" and cost no bucket entries.
	sec := (w - 25) * benchSecsPerHour
	fx.applyChecked(b, []*raft.Log{fx.log(mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: sec * 1000})))})
	fx.late = uint64(n)
	d := newDeltas(benchPreloadChunk)
	for i := range n {
		fx.addDelta(d, uint32(i), 1, sec-2*86_400)
		if len(d.Items) == benchPreloadChunk || i == n-1 {
			emit(sec*1000, d)
			d = newDeltas(benchPreloadChunk)
		}
	}
	fx.events += uint64(n)
	flush()
	// 23 hours of Zipf traffic, aggregated per (item, hour).
	for h := w - 23; h < w; h++ {
		sec := h * benchSecsPerHour
		order := fx.aggregate(benchSecsPerHour * benchEventsPerEntry)
		d := newDeltas(benchPreloadChunk)
		for i, it := range order {
			fx.take(d, it, sec)
			if len(d.Items) == benchPreloadChunk || i == len(order)-1 {
				emit(sec*1000, d)
				d = newDeltas(benchPreloadChunk)
			}
		}
		fx.events += benchSecsPerHour * benchEventsPerEntry
		flush()
	}
	// One real-rate hour fills the 1h window.
	fx.nextSec = w * benchSecsPerHour
	fx.applyChecked(b, fx.genHour().logs)
	fx.setup = time.Since(start)
	fx.check(b)
	lb := fx.board()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.Logf("fixture items=%d: built in %v; live items %d; bucket entries 1h=%d 1d=%d; heap %d MiB + off-heap %d MiB",
		n, fx.setup.Round(time.Millisecond), lb.live, bucketEntries(lb.wins[0]), bucketEntries(lb.wins[1]), ms.HeapAlloc>>20, OffHeapBytes()>>20)
	return fx
}

// check verifies that every raw event generated so far was accepted, none late.
func (fx *benchFixture) check(b *testing.B) {
	b.Helper()
	lb := fx.f.st.boards[benchBoard]
	if lb.accepted != fx.events {
		b.Fatalf("leaderboard accepted %d events, want %d", lb.accepted, fx.events)
	}
	for i, n := range lb.late {
		if n != fx.late {
			b.Fatalf("window %d: late_dropped %d, want %d (the preload sweep)", i, n, fx.late)
		}
	}
	if e := fx.board(); e.live != fx.n {
		b.Fatalf("live items %d, want %d", e.live, fx.n)
	}
}

// cpuTime is the CPU time the process has used (user + system, every thread,
// GC workers included); it does not grow while the process waits for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func bucketEntries(w *window) int {
	n := 0
	for _, b := range w.buckets {
		n += b.ids.len()
	}
	return n
}

// ---- memory ----

type memCase struct {
	name    string
	windows []time.Duration
	rounds  int // each item lands in this many buckets of every sliding window
}

var memCases = []memCase{
	{"windows=all", nil, 1},
	{"windows=all+1h", []time.Duration{time.Hour}, 1},
	{"windows=all+1h+1d", []time.Duration{time.Hour, 24 * time.Hour}, 1},
	{"windows=all+1h/buckets=2", []time.Duration{time.Hour}, 2},
	{"windows=all+1h/buckets=4", []time.Duration{time.Hour}, 4},
}

// memResults caches heap deltas by case name so the derived metrics can use
// the baselines when the cases run in one process.
var memResults = map[string]int64{}

// buildMemState applies n distinct items rounds times, each round in the
// next minute of one hour, in entries of 8,192 deltas without a producer id.
func buildMemState(b *testing.B, n int, c memCase) *FSM {
	b.Helper()
	f := New(Options{})
	var index uint64
	apply := func(data []byte) interface{} {
		index++
		return f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
	}
	if r := apply(mustEncode(EncodeConfig(benchConfig(c.windows)))); r != nil {
		b.Fatalf("config: %v", r)
	}
	var buf []byte
	var s string
	base := int64(benchBaseHour) * benchSecsPerHour
	for round := range c.rounds {
		sec := base + int64(60*round)
		d := newDeltas(benchPreloadChunk)
		for i := range n {
			buf, s = benchItem(buf, i)
			d.Items = append(d.Items, s)
			d.Deltas = append(d.Deltas, 1)
			d.EventTimesS = append(d.EventTimesS, sec)
			if len(d.Items) == benchPreloadChunk || i == n-1 {
				e := &pb.IngestEntry{LeaderTimeMs: sec * 1000, Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{d}}}}
				r, ok := apply(mustEncode(EncodeIngest(e))).(*IngestResult)
				if !ok || r.Outcomes[0].Accepted != uint64(len(d.Items)) {
					b.Fatalf("ingest: %v, want %d accepted", r, len(d.Items))
				}
				d = newDeltas(benchPreloadChunk)
			}
		}
	}
	return f
}

// heapAlloc is the live heap plus the off-heap memory in use (mapped, less
// free blocks of shared slabs), once the cleanups of dropped blocks have run.
func heapAlloc() int64 {
	off := settledOffHeap()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc) + off
}

// measureMem returns the live heap of a state built for c, and its Stats().Bytes.
func measureMem(b *testing.B, n int, c memCase, timed bool) (heap, est int64) {
	b.Helper()
	before := heapAlloc()
	if timed {
		b.StartTimer()
	}
	f := buildMemState(b, n, c)
	if timed {
		b.StopTimer()
	}
	heap = heapAlloc() - before
	est = f.Stats().Bytes
	runtime.KeepAlive(f)
	memResults[c.name] = heap
	return heap, est
}

func memBaseline(b *testing.B, n int, name string) int64 {
	b.Helper()
	if h, ok := memResults[name]; ok {
		return h
	}
	for _, c := range memCases {
		if c.name == name {
			h, _ := measureMem(b, n, c, false)
			return h
		}
	}
	b.Fatalf("no memory case %q", name)
	return 0
}

// BenchmarkMemory measures the live heap (runtime.MemStats.HeapAlloc after
// GC, plus the off-heap record slabs) of a leaderboard holding 1M distinct items, per item and per window,
// against the FSM's own Stats().Bytes estimate. ns/op is the time to insert
// the 1M new items.
func BenchmarkMemory(b *testing.B) {
	dropFixtures() // keep other benchmarks' state out of the heap being measured
	const n = 1_000_000
	var strBytes int64
	var buf []byte
	for i := range n {
		buf, _ = benchItem(buf, i)
		strBytes += int64(len(buf))
	}
	for _, c := range memCases {
		b.Run("items=1M/"+c.name, func(b *testing.B) {
			b.StopTimer()
			var heap, est int64
			for range b.N {
				heap, est = measureMem(b, n, c, true)
			}
			per := float64(heap) / n
			b.ReportMetric(per, "heapB/item")
			b.ReportMetric(float64(est)/n, "estB/item")
			b.ReportMetric(float64(est)/float64(heap), "est/heap")
			b.ReportMetric(float64(strBytes)/n, "strB/item")
			switch {
			case len(c.windows) == 0:
				b.ReportMetric(per-float64(strBytes)/n, "B/item-beyond-str")
			case c.rounds == 1:
				all := memBaseline(b, n, "windows=all")
				b.ReportMetric(float64(heap-all)/n/float64(len(c.windows)), "B/item/window")
			default:
				one := memBaseline(b, n, "windows=all+1h")
				b.ReportMetric(float64(heap-one)/n/float64(c.rounds-1), "B/bucket-entry")
			}
		})
	}
}

// BenchmarkTopK measures TopK after the Zipf load of BenchmarkApply.
func BenchmarkTopK(b *testing.B) {
	b.Run("items=1M", func(b *testing.B) {
		fx := getFixture(b, 1_000_000)
		for _, w := range []struct {
			name string
			d    time.Duration
		}{{"all", 0}, {"1h", time.Hour}} {
			for _, k := range []int{100, 1000} {
				b.Run(fmt.Sprintf("window=%s/k=%d", w.name, k), func(b *testing.B) {
					r, err := fx.f.TopK(benchBoard, w.d, k)
					if err != nil {
						b.Fatal(err)
					}
					if len(r.Items) != k {
						b.Fatalf("TopK returned %d items, want %d", len(r.Items), k)
					}
					if !slices.IsSortedFunc(r.Items, func(x, y Item) int { return int(y.Count - x.Count) }) {
						b.Fatalf("TopK items not in count order: %v", r.Items[:10])
					}
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						if _, err := fx.f.TopK(benchBoard, w.d, k); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/topk")
				})
			}
		}
	})
}

// BenchmarkApply measures ApplyBatch (decode included) on one goroutine: a
// leaderboard with windows all + 1h + 1d, Zipf(1.1) items, 1,000 raw events
// per entry pre-aggregated per (item, second), 64 entries per ApplyBatch.
// It reports the p99 and longest ApplyBatch too: the hourly expiry of a 1d
// bucket and the all-time journal's folds land in single batches.
// The measured loop is labelled bench=apply for pprof -tagfocus.
func BenchmarkApply(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run("items="+sz.name, func(b *testing.B) {
			fx := getFixture(b, sz.n)
			var events, deltas int64
			var cpu time.Duration
			var lat []time.Duration // per ApplyBatch
			scans0 := floorScans(fx.f)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				h := fx.genHour()
				b.StartTimer()
				c0 := cpuTime()
				pprof.Do(context.Background(), pprof.Labels("bench", "apply"), func(context.Context) {
					fx.f.applyLogsTimed(h.logs, benchBatch, &lat)
				})
				cpu += cpuTime() - c0
				b.StopTimer()
				events += h.events
				deltas += h.deltas
				fx.check(b)
				b.StartTimer()
			}
			b.StopTimer()
			el := b.Elapsed()
			b.ReportMetric(float64(events)/el.Seconds(), "events/s")
			b.ReportMetric(float64(el.Nanoseconds())/float64(events), "ns/event")
			b.ReportMetric(float64(el.Nanoseconds())/float64(deltas), "ns/delta")
			b.ReportMetric(float64(deltas)/float64(b.N*benchSecsPerHour), "deltas/entry")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(events), "cpu-ns/event")
			b.ReportMetric(float64(floorScans(fx.f)-scans0)/float64(b.N), "floor-scans/op")
			slices.Sort(lat)
			b.ReportMetric(msOf(lat[len(lat)*99/100]), "p99-ms/batch")
			b.ReportMetric(msOf(lat[len(lat)-1]), "max-ms/batch")
		})
	}
}

// BenchmarkAllFold measures one fold of the all-time journal (journal.go)
// at its size when due, an eighth of the ids, filled from the next Zipf
// entries of the Apply fixture: the pause a fold adds to one ApplyBatch.
func BenchmarkAllFold(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run("items="+sz.name, func(b *testing.B) {
			fx := getFixture(b, sz.n)
			lb := fx.board()
			lb.allLog.fold(&lb.allCounts)
			var entries int
			for range b.N {
				b.StopTimer()
				// Deltas of 0 leave the counts as they are.
				for !lb.allLog.due(lb.allCounts.len(), lb.tune.foldMin) {
					for _, item := range fx.deltas(benchEventsPerEntry, fx.nextSec).Items {
						if id, ok := lb.index.get(item); ok {
							lb.allLog.add(id, 0)
						}
					}
				}
				entries = len(lb.allLog.ids)
				b.StartTimer()
				lb.allLog.fold(&lb.allCounts)
			}
			b.StopTimer()
			b.ReportMetric(msOf(b.Elapsed())/float64(b.N), "ms/fold")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries), "ns/entry")
			b.ReportMetric(float64(entries), "entries")
		})
	}
}

// BenchmarkLineMiss measures what a random cache line costs on this host:
// a chase through 1 GiB of 64-byte lines in one random cycle, each load's
// address taken from the line before. Apply at 10M items needs a few such
// lines per delta (fsm/DESIGN.md), so its ns/delta moves with this figure
// between hosts; compare apply figures only beside it.
func BenchmarkLineMiss(b *testing.B) {
	const lines = 1 << 24
	const stride = 8 // words per line
	next := make([]uint64, lines*stride)
	// Sattolo's shuffle: a single cycle through every line.
	order := make([]uint32, lines)
	for i := range order {
		order[i] = uint32(i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := lines - 1; i > 0; i-- {
		j := rng.IntN(i)
		order[i], order[j] = order[j], order[i]
	}
	for i := range order {
		next[uint64(order[i])*stride] = uint64(order[(i+1)%lines]) * stride
	}
	const steps = 1 << 22
	var p uint64
	b.ResetTimer()
	for range b.N {
		for range steps {
			p = next[p]
		}
	}
	b.StopTimer()
	if p >= uint64(len(next)) {
		b.Fatal("chase left the array")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/steps, "ns/miss")
}

// BenchmarkFloorScan measures the scan that lowers a window's class floor,
// which refill runs on the apply goroutine when the kept classes run out:
// each op drops every kept class but the top one (untimed), then lowers the
// floor back to keepTracked over the Apply fixture's records.
func BenchmarkFloorScan(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run("items="+sz.name, func(b *testing.B) {
			fx := getFixture(b, sz.n)
			lb := fx.board()
			for _, wc := range []struct {
				name string
				w    *window
			}{{"all", lb.all}, {"1h", lb.wins[0]}} {
				b.Run("window="+wc.name, func(b *testing.B) {
					w := wc.w
					var kept int
					b.ResetTimer()
					for range b.N {
						b.StopTimer()
						w.raiseFloor(1)
						b.StartTimer()
						if !w.lowerFloor() {
							b.Fatal("lowerFloor brought no item back")
						}
						kept = w.tracked
					}
					b.StopTimer()
					b.ReportMetric(msOf(b.Elapsed())/float64(b.N), "ms/scan")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(w.rec.n), "ns/record")
					b.ReportMetric(float64(kept), "kept")
					b.ReportMetric(float64(w.positive), "positive")
				})
			}
			// Traffic stops: ticks a minute apart empty the sliding windows,
			// and their kept classes run out again and again. The longest
			// batch is the pause a drain costs. Drops the fixture.
			b.Run("window=drain", func(b *testing.B) {
				var longest, total time.Duration
				var scans int
				for range b.N {
					b.StopTimer()
					fx := getFixture(b, sz.n)
					scans0 := floorScans(fx.f)
					ms := fx.nextSec * 1000
					b.StartTimer()
					for range 25 * 60 {
						ms += 60_000
						t0 := time.Now()
						fx.f.applyLogs([]*raft.Log{fx.log(mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: ms})))}, 1)
						d := time.Since(t0)
						longest, total = max(longest, d), total+d
					}
					b.StopTimer()
					scans += floorScans(fx.f) - scans0
					for _, w := range fx.board().wins {
						if w.positive != 0 {
							b.Fatalf("window of %v holds %d items after the drain", time.Duration(w.durMs)*time.Millisecond, w.positive)
						}
					}
					dropFixtures()
				}
				b.ReportMetric(msOf(longest), "max-ms/tick")
				b.ReportMetric(msOf(total)/float64(b.N), "ms/drain")
				b.ReportMetric(float64(scans)/float64(b.N), "floor-scans")
			})
		})
	}
}

// floorScans is how many times a window of f scanned its records to lower
// its class floor.
func floorScans(f *FSM) int {
	n := 0
	for _, lb := range f.st.boards {
		if e, ok := lb.counts.(*exactBoard); ok {
			for _, w := range append([]*window{e.all}, e.wins...) {
				n += w.lowered
			}
		}
	}
	return n
}

// ---- snapshots ----

type discardSink struct{ n int64 }

func (s *discardSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *discardSink) Close() error                { return nil }
func (s *discardSink) ID() string                  { return "bench" }
func (s *discardSink) Cancel() error               { return nil }

// fileSink syncs on Close, like raft's file snapshot store.
type fileSink struct{ *os.File }

func (s fileSink) Close() error {
	if err := s.File.Sync(); err != nil {
		s.File.Close()
		return err
	}
	return s.File.Close()
}
func (s fileSink) ID() string    { return "bench" }
func (s fileSink) Cancel() error { return s.File.Close() }

func newFileSink(b *testing.B, path string) fileSink {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	return fileSink{f}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// gcCycles is the number of completed GC cycles, read without stopping the world.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkSnapshot measures, on the Apply fixture: the Snapshot() pause on
// the apply goroutine, Persist into io.Discard and into a synced file,
// Restore from that file, and ApplyBatch latency while a Persist runs.
func BenchmarkSnapshot(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run("items="+sz.name, func(b *testing.B) {
			fx := getFixture(b, sz.n)
			items := float64(fx.board().items.len())
			b.Run("op=snapshot", func(b *testing.B) {
				for range b.N {
					s, err := fx.f.Snapshot()
					if err != nil {
						b.Fatal(err)
					}
					s.Release()
				}
				b.StopTimer()
				b.ReportMetric(msOf(b.Elapsed())/float64(b.N), "ms/snapshot")
			})
			b.Run("op=persist-discard", func(b *testing.B) {
				s, err := fx.f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				var size int64
				b.ResetTimer()
				for range b.N {
					sink := &discardSink{}
					if err := s.Persist(sink); err != nil {
						b.Fatal(err)
					}
					size = sink.n
				}
				b.StopTimer()
				b.SetBytes(size)
				b.ReportMetric(items*float64(b.N)/b.Elapsed().Seconds(), "items/s")
				b.ReportMetric(float64(size)/items, "B/item")
			})
			b.Run("op=persist-file", func(b *testing.B) {
				s, err := fx.f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				path := filepath.Join(b.TempDir(), "snap")
				var size int64
				b.ResetTimer()
				for range b.N {
					if err := s.Persist(newFileSink(b, path)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if st, err := os.Stat(path); err == nil {
					size = st.Size()
				}
				b.SetBytes(size)
				b.ReportMetric(items*float64(b.N)/b.Elapsed().Seconds(), "items/s")
			})
			b.Run("op=restore", func(b *testing.B) {
				s, err := fx.f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				path := filepath.Join(b.TempDir(), "snap")
				if err := s.Persist(newFileSink(b, path)); err != nil {
					b.Fatal(err)
				}
				st, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				want, err := fx.f.TopK(benchBoard, time.Hour, 1000)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(st.Size())
				runtime.GC()
				b.ResetTimer()
				for range b.N {
					r, err := os.Open(path)
					if err != nil {
						b.Fatal(err)
					}
					f2 := New(Options{})
					if err := f2.Restore(r); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					got, err := f2.TopK(benchBoard, time.Hour, 1000)
					if err != nil {
						b.Fatal(err)
					}
					if !slices.Equal(got.Items, want.Items) || got.AppliedIndex != want.AppliedIndex {
						b.Fatalf("restored TopK differs: got index %d %v..., want index %d %v...",
							got.AppliedIndex, got.Items[:3], want.AppliedIndex, want.Items[:3])
					}
					f2 = nil
					runtime.GC()
					b.StartTimer()
				}
				b.StopTimer()
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/restore")
				b.ReportMetric(items*float64(b.N)/b.Elapsed().Seconds(), "items/s")
			})
			b.Run("op=apply-during-persist", func(b *testing.B) {
				// Each op is one hour of entries applied 8 per ApplyBatch:
				// 10 min unrecorded (touches chunks an earlier snapshot froze),
				// 20 min alone, 10 min after a Snapshot() that is released
				// without Persist (copy-on-write cost alone), 20 min with a
				// Persist into a synced file running (recorded while it runs).
				dir := b.TempDir()
				var alone, cow, with []time.Duration
				var firstCow, firstWith, persistTime, pause time.Duration
				var gcs uint64
				timed := func(logs []*raft.Log, into *[]time.Duration, during func() bool) {
					for len(logs) > 0 {
						n := min(benchLatencyBatch, len(logs))
						record := during == nil || during()
						t0 := time.Now()
						fx.f.ApplyBatch(logs[:n])
						if d := time.Since(t0); record {
							*into = append(*into, d)
						}
						logs = logs[n:]
					}
				}
				snap := func() raft.FSMSnapshot {
					t0 := time.Now()
					s, err := fx.f.Snapshot()
					if err != nil {
						b.Fatal(err)
					}
					pause += time.Since(t0)
					return s
				}
				const minute = 60
				for range b.N {
					b.StopTimer()
					h := fx.genHour().logs
					b.StartTimer()
					fx.f.applyLogs(h[:10*minute], benchLatencyBatch)
					timed(h[10*minute:30*minute], &alone, nil)

					snap().Release()
					n := len(cow)
					timed(h[30*minute:40*minute], &cow, nil)
					firstCow += cow[n]

					s := snap()
					gc0 := gcCycles()
					done := make(chan error, 1)
					sink := newFileSink(b, filepath.Join(dir, "snap"))
					go func() {
						start := time.Now()
						err := s.Persist(sink)
						persistTime += time.Since(start)
						done <- err
					}()
					finished := false
					var perr error
					n = len(with)
					timed(h[40*minute:], &with, func() bool {
						if !finished {
							select {
							case perr = <-done:
								finished = true
							default:
							}
						}
						return !finished
					})
					if !finished {
						perr = <-done
					}
					if perr != nil {
						b.Fatal(perr)
					}
					gcs += gcCycles() - gc0
					if len(with) > n {
						firstWith += with[n]
					}
					b.StopTimer()
					fx.check(b)
					b.StartTimer()
				}
				b.StopTimer()
				report := func(ds []time.Duration, name string) {
					if len(ds) == 0 {
						return
					}
					b.ReportMetric(msOf(percentile(ds, 0.5)), "p50-ms-"+name)
					b.ReportMetric(msOf(percentile(ds, 0.99)), "p99-ms-"+name)
					b.ReportMetric(msOf(slices.Max(ds)), "max-ms-"+name)
				}
				report(alone, "alone")
				report(cow, "after-snapshot")
				report(with, "persist")
				b.ReportMetric(msOf(firstCow)/float64(b.N), "first-ms-after-snapshot")
				b.ReportMetric(msOf(firstWith)/float64(b.N), "first-ms-persist")
				b.ReportMetric(float64(len(with))/float64(b.N), "batches-during-persist")
				b.ReportMetric(float64(gcs)/float64(b.N), "gc-during-persist")
				b.ReportMetric(msOf(persistTime)/float64(b.N), "ms/persist")
				b.ReportMetric(msOf(pause)/float64(2*b.N), "ms/snapshot")
			})
		})
	}
}

// BenchmarkWithout measures each optimisation against its removal: apply
// with its tuning switch on and off in alternating hours of one process,
// on one fixture. gain is the events/s with it over without (cpu-gain the
// same in process CPU time); the bar for
// keeping one is 1.1x at 1M or 10M items (DESIGN.md, "Keeping an
// optimisation").
func BenchmarkWithout(b *testing.B) {
	opts := []struct {
		name string
		off  func(*tuning, bool)
	}{
		{"staged", func(t *tuning, off bool) { t.unstaged = off }},
		{"journal", func(t *tuning, off bool) { t.noJournal = off }},
		{"expiry-prefetch", func(t *tuning, off bool) { t.noExpiryPrefetch = off }},
		{"ingest-decoder", func(t *tuning, off bool) { t.protoIngest = off }},
	}
	for _, o := range opts {
		for _, sz := range benchSizes {
			b.Run("opt="+o.name+"/items="+sz.name, func(b *testing.B) {
				fx := getFixture(b, sz.n)
				defer o.off(fx.f.opts.tune, false)
				var dur, cpu [2]time.Duration // without, with
				var ev [2]int64
				b.ResetTimer()
				for i := range 2 * b.N {
					b.StopTimer()
					h := fx.genHour()
					with := i % 2
					o.off(fx.f.opts.tune, with == 0)
					b.StartTimer()
					t0, c0 := time.Now(), cpuTime()
					fx.f.applyLogs(h.logs, benchBatch)
					dur[with] += time.Since(t0)
					cpu[with] += cpuTime() - c0
					ev[with] += h.events
					b.StopTimer()
					fx.check(b)
					b.StartTimer()
				}
				without, with := float64(ev[0])/dur[0].Seconds(), float64(ev[1])/dur[1].Seconds()
				b.ReportMetric(without, "without-events/s")
				b.ReportMetric(with, "with-events/s")
				b.ReportMetric(with/without, "gain")
				// The process's CPU, GC included: the garbage a variant makes
				// is collected on the other core, unseen by the wall clock.
				b.ReportMetric(float64(cpu[0])/float64(cpu[1])*float64(ev[1])/float64(ev[0]), "cpu-gain")
			})
		}
	}
}
