//go:build accuracy

package sketch_test

// The memory of the counting modes (make mode-memory): measured live heap of
// the exact FSM (a leaderboard with only the all-time window) against the
// cms and spacesaving structures, at 1M and 10M distinct items.

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

const (
	memBoard      = "bench"
	memZipfEvents = 10_000_000 // Zipf(1.0) events after every item once
	memChunk      = 8192       // deltas per ingest entry
	memBatch      = 64         // entries per ApplyBatch (hashicorp/raft's MaxAppendEntries)
	memLogMs      = 1_700_000_000_000
	memCMSEps     = 0.001
	memCMSDelta   = 0.01
	memCMSK       = 1000
)

// memStream is every one of n items once (in rank order), then Zipf(1.0)
// events: all n items occur, with a realistic skew on top.
type memStream struct {
	names []string
	ids   []uint32
}

func newMemStream(n int) memStream {
	names := zipfNames(n, zipfSeed)
	ids := make([]uint32, 0, n+memZipfEvents)
	for i := range n {
		ids = append(ids, uint32(i))
	}
	z := newZipfSampler(n, 1.0, zipfSeed+uint64(n))
	for range memZipfEvents {
		ids = append(ids, z.next())
	}
	return memStream{names: names, ids: ids}
}

// buildExact applies the stream to a real FSM through its command path:
// a config with only the all-time window, then ingest entries of memChunk
// deltas (delta 1, untimed, no producer id) in batches of memBatch logs.
func buildExact(t *testing.T, ms memStream) *fsm.FSM {
	t.Helper()
	f := fsm.New(fsm.Options{})
	var index uint64
	var pend []*raft.Log
	flush := func() {
		for i, r := range f.ApplyBatch(pend) {
			switch r := r.(type) {
			case nil:
			case *fsm.IngestResult:
				for _, o := range r.Outcomes {
					if o.Status != pb.PartStatus_PART_STATUS_APPLIED || o.Rejected != 0 {
						t.Fatalf("log %d: outcome %v, want applied with nothing rejected", pend[i].Index, o)
					}
				}
			case error:
				t.Fatalf("log %d: %v", pend[i].Index, r)
			default:
				t.Fatalf("log %d: result %T %v", pend[i].Index, r, r)
			}
		}
		pend = pend[:0]
	}
	add := func(data []byte, err error) {
		if err != nil {
			t.Fatal(err)
		}
		index++
		pend = append(pend, &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
		if len(pend) == memBatch {
			flush()
		}
	}
	add(fsm.EncodeConfig(&pb.LeaderboardConfig{Name: memBoard, Incarnation: 1, Version: 1,
		Mode: pb.Mode_MODE_EXACT, Clock: pb.Clock_CLOCK_WALL}))
	for start := 0; start < len(ms.ids); start += memChunk {
		end := min(start+memChunk, len(ms.ids))
		d := &pb.LeaderboardDeltas{Leaderboard: memBoard, Incarnation: 1,
			Items: make([]string, 0, end-start), Deltas: make([]int64, 0, end-start), EventTimesS: make([]int64, end-start)}
		for _, id := range ms.ids[start:end] {
			d.Items = append(d.Items, ms.names[id])
			d.Deltas = append(d.Deltas, 1)
		}
		add(fsm.EncodeIngest(&pb.IngestEntry{LeaderTimeMs: memLogMs, Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{d}}}}))
	}
	flush()
	return f
}

// memRow is one measured structure.
type memRow struct {
	name, params string
	bytes        [2]int64 // at 1M and 10M distinct
	build        [2]time.Duration
}

func TestModeMemory(t *testing.T) {
	start := time.Now()
	sizes := []int{1_000_000, 10_000_000}
	if os.Getenv("ACCURACY_QUICK") != "" {
		sizes = []int{100_000, 1_000_000}
	}
	cw, cd := sketch.CountMinSize(memCMSEps, memCMSDelta)
	clone := [2]bool{retainsCallerStrings(modeSS), retainsCallerStrings(modeCMS)}
	rows := []*memRow{
		{name: "exact", params: "FSM, all-time window only"},
		{name: "cms", params: fmt.Sprintf("K=%d w=%d d=%d (eps %g, delta %g)", memCMSK, cw, cd, memCMSEps, memCMSDelta)},
		{name: "cms sketch only", params: fmt.Sprintf("CountMin w=%d d=%d, no candidates", cw, cd)},
		{name: "spacesaving", params: "m=1000"},
		{name: "spacesaving", params: "m=10000"},
	}
	var fsmEst [2]int64
	for si, n := range sizes {
		t0 := time.Now()
		ms := newMemStream(n)
		t.Logf("%d distinct: stream of %d events generated in %v", n, len(ms.ids), time.Since(t0).Round(time.Millisecond))

		measure := func(r *memRow, build func() any) any {
			before := heapAlloc()
			t0 := time.Now()
			x := build()
			r.build[si] = time.Since(t0)
			r.bytes[si] = heapAlloc() - before
			runtime.KeepAlive(x)
			return x
		}
		f := measure(rows[0], func() any { return buildExact(t, ms) }).(*fsm.FSM)
		if got := f.DistinctAt(memBoard, 0); got != n {
			t.Fatalf("exact FSM holds %d distinct items, want %d", got, n)
		}
		if got, want := f.AcceptedEvents(), uint64(len(ms.ids)); got != want {
			t.Fatalf("exact FSM accepted %d events, want %d", got, want)
		}
		fsmEst[si] = f.Stats().Bytes
		f = nil
		measure(rows[2], func() any {
			c := sketch.NewCountMin(cw, cd, cmsSeed)
			for _, id := range ms.ids {
				c.Add(ms.names[id], 1)
			}
			return c
		})
		for i, mk := range []func() adder{
			func() adder { return sketch.NewCMSTopK(memCMSK, cw, cd, cmsSeed) },
			func() adder { return sketch.NewSpaceSaving(1000) },
			func() adder { return sketch.NewSpaceSaving(10000) },
		} {
			r := rows[i+2]
			if i == 0 {
				r = rows[1]
			}
			measure(r, func() any {
				// A fresh copy of the item strings, garbage once built: the
				// strings the structure keeps (copied or not) are counted.
				names := make([]string, len(ms.names))
				for i, s := range ms.names {
					names[i] = strings.Clone(s)
				}
				a := mk()
				items := make([]string, 0, memChunk)
				for start := 0; start < len(ms.ids); start += memChunk {
					items = items[:0]
					for _, id := range ms.ids[start:min(start+memChunk, len(ms.ids))] {
						items = append(items, names[id])
					}
					feed(a, items, nil)
				}
				return a
			})
		}
		ms = memStream{}
		runtime.GC()
	}
	printMemTable(os.Stdout, sizes, rows, fsmEst, clone)
	fmt.Printf("\ntotal run time %v\n", time.Since(start).Round(time.Second))
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
}

func printMemTable(w io.Writer, sizes []int, rows []*memRow, fsmEst [2]int64, clone [2]bool) {
	fmt.Fprintf(w, `Memory of the counting modes: measured live heap (runtime.GC + MemStats.HeapAlloc before and after
building the structure, while it is referenced), %d cores, %s.
Stream: every one of n distinct items once, then %d Zipf(1.0) events over them (items "song_<perm>",
  5-12 bytes). exact = a github.com/topkd/topkd/fsm FSM with one leaderboard (mode exact, all-time window
  only), fed by ingest commands of %d deltas (EncodeIngest, ApplyBatch of %d raft.Logs): its item strings
  come from decoding the log, as in production. The sketches are fed the same events%s.
`, runtime.NumCPU(), runtime.Version(), memZipfEvents, memChunk, memBatch, cloneNote(clone))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\tparams\t")
	for _, n := range sizes {
		fmt.Fprintf(tw, "bytes @%s\tbytes/item @%s\tbuild @%s\t", count(n), count(n), count(n))
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t", r.name, r.params)
		for i, n := range sizes {
			fmt.Fprintf(tw, "%d (%s)\t%.2f\t%v\t", r.bytes[i], human(r.bytes[i]), float64(r.bytes[i])/float64(n), r.build[i].Round(time.Millisecond))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "exact FSM's own estimate (Stats().Bytes): %s @%s, %s @%s\n",
		human(fsmEst[0]), count(sizes[0]), human(fsmEst[1]), count(sizes[1]))
	last := len(sizes) - 1
	per := float64(rows[0].bytes[last]) / float64(sizes[last])
	fmt.Fprintf(w, "extrapolated to 100M distinct items (exact: linear from %s at %.1f B/item; the approximate structures\n", count(sizes[last]), per)
	fmt.Fprintf(w, "do not grow with the number of distinct items, their %s sizes are shown):\n", count(sizes[last]))
	fmt.Fprintf(w, "  %-26s ≈ %s\n", "exact", human(int64(per*100e6)))
	fmt.Fprintf(w, "  %-26s ≈ %s, of which the sketch ≈ %s\n", fmt.Sprintf("cms (K=%d, eps %g)", memCMSK, memCMSEps), human(rows[1].bytes[last]), human(rows[2].bytes[last]))
	fmt.Fprintf(w, "  %-26s ≈ %s\n", "spacesaving m=1000", human(rows[3].bytes[last]))
	fmt.Fprintf(w, "  %-26s ≈ %s\n", "spacesaving m=10000", human(rows[4].bytes[last]))
}

func cloneNote(clone [2]bool) string {
	does := func(keeps bool) string {
		if keeps {
			return "keeps the strings it is given"
		}
		return "copies the strings it keeps"
	}
	return fmt.Sprintf(", as strings from a\n  fresh copy of the item table made inside the measurement and dropped before its end (Summary %s,\n  CMSTopK %s: either way the keys they keep are counted)",
		does(clone[modeSS]), does(clone[modeCMS]))
}

func count(n int) string {
	if n >= 1_000_000 && n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return fmt.Sprintf("%dK", n/1000)
}
