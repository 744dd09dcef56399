//go:build accuracy

package sketch_test

// Building the approximate structures from a stream, measuring their live
// heap, and calibrating their parameters to a memory budget by measurement.

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/topkd/topkd/fsm/sketch"
)

type mode int

const (
	modeSS  mode = iota // sketch.Summary (Space-Saving)
	modeCMS             // sketch.CMSTopK (CountMin + K candidates)
)

func (m mode) String() string {
	if m == modeSS {
		return "spacesaving"
	}
	return "cms"
}

// params are one structure's parameters: m for spacesaving; k, width, depth for cms.
type params struct {
	m               int
	k, width, depth int
}

func (p params) String(md mode) string {
	if md == modeSS {
		return fmt.Sprintf("m=%d", p.m)
	}
	return fmt.Sprintf("K=%d w=%d d=%d", p.k, p.width, p.depth)
}

// epsilon is e/width, the CountMin error factor actually used.
func (p params) epsilon() float64 { return math.E / float64(p.width) }

// delta is e^-depth, the CountMin failure probability actually used.
func (p params) delta() float64 { return math.Exp(-float64(p.depth)) }

// cmsSeed is the CountMin hash seed of every cms structure of the benchmark.
const cmsSeed = 0x70bd5eed

// adder is what both modes offer the benchmark.
type adder interface {
	Add(item string, w uint64)
	Result(k int) sketch.Result
}

func newAdder(md mode, p params) adder {
	if md == modeSS {
		return sketch.NewSpaceSaving(p.m)
	}
	return sketch.NewCMSTopK(p.k, p.width, p.depth, cmsSeed)
}

// feed adds events to a with concrete (not interface) calls.
func feed(a adder, items []string, ws []uint64) {
	switch x := a.(type) {
	case *sketch.Summary:
		if ws == nil {
			for _, it := range items {
				x.Add(it, 1)
			}
		} else {
			for i, it := range items {
				x.Add(it, ws[i])
			}
		}
	case *sketch.CMSTopK:
		if ws == nil {
			for _, it := range items {
				x.Add(it, 1)
			}
		} else {
			for i, it := range items {
				x.Add(it, ws[i])
			}
		}
	default:
		panic(fmt.Sprintf("unknown structure %T", a))
	}
}

// heapAlloc is the live heap after a full collection: the smaller of two
// collections' results, because about one measurement in thirty includes a
// transient object of the runtime or the test harness (+5.5 KB).
func heapAlloc() int64 {
	var ms runtime.MemStats
	runtime.GC() // a full cycle, swept: HeapAlloc is the live heap
	runtime.ReadMemStats(&ms)
	h := ms.HeapAlloc
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(min(h, ms.HeapAlloc))
}

// retainsCallerStrings reports (for the output header: the measurements
// count the kept item strings either way) whether a structure keeps an item
// string it is given instead of copying it, on either insertion path: it adds one
// 1 MiB item to an empty structure of one counter (insert), then a second
// heavier one (evicts the first), and measures what each step retains.
func retainsCallerStrings(md mode) bool {
	const size = 1 << 20
	big1, big2 := strings.Repeat("x", size), strings.Repeat("y", size)
	p := params{m: 1, k: 1, width: 1024, depth: 1}
	h0 := heapAlloc()
	a := newAdder(md, p)
	a.Add(big1, 1)
	h1 := heapAlloc()
	a.Add(big2, 2)
	h2 := heapAlloc()
	runtime.KeepAlive(a)
	runtime.KeepAlive(big1)
	runtime.KeepAlive(big2)
	// Copying both times: h1-h0 >= size (copy of big1), h2-h1 ~ 0 (copy of big2 replaces it).
	return h1-h0 < size || h2-h1 < -size/2
}

// built is a structure (one, or one per partition) built from a stream.
type built struct {
	md    mode
	p     params
	split bool    // one structure per partition
	parts []adder // 1 or accPartitions
	bytes int64   // measured live heap of all parts (-1: not measured)
	nsEv  float64 // wall time of the Add loops per event (-1: not timed)
}

func (b *built) kb() float64 { return float64(b.bytes) / 1024 }

// result is the top-k answer: the single structure's, or the partitions'
// answers merged with MergeDisjoint (partitions hold disjoint items).
func (b *built) result(k int) sketch.Result {
	if !b.split {
		return b.parts[0].Result(k)
	}
	rs := make([]sketch.Result, len(b.parts))
	for i, a := range b.parts {
		rs[i] = a.Result(k)
	}
	return sketch.MergeDisjoint(k, rs...)
}

// calibPrefix is the number of events of the stream prefix that calibration
// searches on; the parameter it finds is then verified on the whole stream.
const calibPrefix = 1_000_000

// builder builds structures from one stream.
type builder struct {
	st      *stream
	full    int // structures built from the whole stream
	partial int // structures built from the calibration prefix
	debug   bool
}

// build feeds the stream (its first n events if n < events, for the split
// variant the same share of every partition) to a new structure or to one
// per partition, each fed its partition's events in stream order.
//
// The item strings are materialized first, outside the timed loop (for a
// timed build, one allocation per event in stream order). measure
// brackets the build with heap measurements: the materialized strings are
// allocated after the first and dropped before the second, and for a
// measured build they come from a fresh copy of the item table, so whatever
// item strings the structure keeps (its own copies, or the strings it was
// given, as items decoded from the log are allocations of their own) are
// counted, and nothing else of the stream. The Add loops of a build of the
// whole stream are timed, from a collected heap.
func (bd *builder) build(md mode, p params, split, measure bool, n int) *built {
	st := bd.st
	n = min(n, st.events())
	whole := n == st.events()
	if whole {
		bd.full++
	} else {
		bd.partial++
	}
	b := &built{md: md, p: p, split: split, bytes: -1, nsEv: -1}
	var before int64
	if measure {
		before = heapAlloc()
	}
	names := st.names
	if measure {
		names = make([]string, len(st.names))
		for i, s := range st.names {
			names[i] = strings.Clone(s)
		}
	}
	materialize := func(ids []uint32) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = names[id]
		}
		if whole {
			// A timed build reads each event's item from its own
			// allocation, in stream order, as the FSM reads items decoded
			// from a log entry (and as bench_test.go does): not a random
			// read into the table of distinct items, which on Zipf 0.8
			// costs more than the update itself.
			for i, s := range out {
				out[i] = strings.Clone(s)
			}
		}
		return out
	}
	type input struct {
		items []string
		ws    []uint64
	}
	var in []input
	if !split {
		ws := st.weights
		if ws != nil {
			ws = ws[:n]
		}
		in = []input{{materialize(st.ids[:n]), ws}}
	} else {
		in = make([]input, accPartitions)
		for i := range in {
			ps := &st.parts[i]
			m := len(ps.ids)
			if !whole {
				m = int(int64(m) * int64(n) / int64(st.events()))
			}
			ws := ps.weights
			if ws != nil {
				ws = ws[:m]
			}
			in[i] = input{materialize(ps.ids[:m]), ws}
		}
	}
	names = nil
	b.parts = make([]adder, len(in))
	for i := range b.parts {
		b.parts[i] = newAdder(md, p)
	}
	if whole {
		runtime.GC() // start the timed loop with no collection pending
	}
	t0 := time.Now()
	for i, a := range b.parts {
		feed(a, in[i].items, in[i].ws)
	}
	el := time.Since(t0)
	in = nil
	if measure {
		b.bytes = heapAlloc() - before
	}
	runtime.KeepAlive(b.parts)
	if whole {
		b.nsEv = float64(el.Nanoseconds()) / float64(n)
	}
	if bd.debug {
		fmt.Printf("      [build %s %s split=%v n=%d: %d B, %.1f ns/ev]\n", md, p.String(md), split, n, b.bytes, b.nsEv)
	}
	return b
}

// search looks for the largest x in [xmin, xmax] whose build fits the
// budget, starting at x0. Footprints are step functions (map tables and
// slices grow in steps; between steps a unit costs little), so it first
// brackets the answer, growing by the room left over slope (the modelled
// bytes per unit) or shrinking by the excess, by at least minStep*x per step,
// then bisects until the bracket is within 1%, or tries values of x were
// measured. A build that does not fit by at most 25% is built once more
// (footprints vary a little between builds) and x fits if either does. It
// returns the best fitting build (nil if none) and the bracket.
func search(budget int64, xmin, xmax, x0 int, slope, minStep float64, tries int, try func(x int) *built) (best *built, lo, hi int) {
	lo, hi = xmin-1, xmax+1 // lo fits (or is below xmin), hi does not (or is above xmax)
	x := min(max(x0, xmin), xmax)
	for range tries {
		b := try(x)
		if b.bytes > budget && b.bytes-budget <= budget/4 {
			// Measurements of identical builds can differ (map layout
			// depends on Go's random hash seed): one more try.
			if b2 := try(x); b2.bytes < b.bytes {
				b = b2
			}
		}
		if b.bytes <= budget {
			lo, best = x, b
		} else {
			hi = x
		}
		if hi-lo <= 1 || (best != nil && hi-lo <= max(1, lo/100)) {
			break
		}
		var next int
		switch {
		case hi > xmax: // nothing too big yet: grow
			next = x + max(int(float64(budget-b.bytes)/slope), int(float64(x)*minStep), 1)
		case lo < xmin: // nothing fits yet: shrink
			next = x - max(int(math.Ceil(float64(b.bytes-budget)/slope)), int(float64(x)*minStep), 1)
		default:
			next = lo + (hi-lo)/2
		}
		next = min(max(next, xmin), xmax)
		if next <= lo || next >= hi {
			next = lo + (hi-lo)/2
		}
		x = next
	}
	return best, lo, hi
}

// calibrate finds the largest x whose structure, built from the whole
// stream, measures <= budget: a search on the calibration prefix (at most 8
// values of x), then a build of the whole stream at the prefix's answer.
// If that fits with less than 5% of the budget left, or the smallest x the
// prefix found too big is also too big on the whole stream, it is the
// answer; otherwise the search goes on with builds of the whole stream (up,
// or down if it did not fit; at most 4 more values). A stream no longer
// than the prefix is searched whole.
func (bd *builder) calibrate(budget int64, xmin, xmax, x0 int, slope, minStep float64, try func(x, n int) *built) *built {
	all := bd.st.events()
	whole := func(x int) *built { return try(x, all) }
	if all <= calibPrefix {
		best, _, _ := search(budget, xmin, xmax, x0, slope, minStep, 8, whole)
		return best
	}
	_, lo, hi := search(budget, xmin, xmax, x0, slope, minStep, 8, func(x int) *built { return try(x, calibPrefix) })
	x := max(lo, xmin)
	first := try(x, all)
	if first.bytes > budget {
		best, _, _ := search(budget, xmin, x-1, x-max(1, int(float64(x)*minStep)), slope, minStep, 4, whole)
		return best
	}
	if budget-first.bytes < budget/20 || hi > xmax {
		return first
	}
	up := try(hi, all)
	if up.bytes > budget {
		return first
	}
	// The whole stream needs less than its prefix: continue upwards.
	if best, _, _ := search(budget, hi+1, xmax, hi+1, slope, minStep, 4, whole); best != nil {
		return best
	}
	return up
}

// ---- per-mode calibration policies ----

// linear is a footprint model, bytes ~ base + slope*x, measured on the
// stream and used only to guess: every chosen parameter is measured.
type linear struct{ base, slope float64 }

func (l linear) x(budget int64) int {
	return int(math.Floor((float64(budget) - l.base) / l.slope))
}

// ssModel measures a Summary at two capacities on the calibration prefix.
func (bd *builder) ssModel() linear {
	const m1, m2 = 200, 2000
	f1 := bd.build(modeSS, params{m: m1}, false, true, calibPrefix).bytes
	f2 := bd.build(modeSS, params{m: m2}, false, true, calibPrefix).bytes
	slope := max(float64(f2-f1)/float64(m2-m1), 1)
	return linear{base: float64(f1) - slope*m1, slope: slope}
}

// ssCalibrate is the largest capacity (per partition, if split) whose
// measured footprint fits the budget; capacities beyond the number of
// distinct items (per partition) are pointless: the summary is then exact.
func (bd *builder) ssCalibrate(budget int64, split bool, model linear) *built {
	xmax := bd.st.distinct()
	n := 1
	if split {
		n = accPartitions
		xmax = slices.Max(partDistinct(bd.st))
	}
	x0 := int((float64(budget)/float64(n) - model.base) / model.slope)
	return bd.calibrate(budget, 1, max(xmax, 1), x0, model.slope*float64(n), 0.1, func(m, events int) *built {
		return bd.build(modeSS, params{m: m}, split, true, events)
	})
}

// partDistinct is the number of distinct items of every partition.
func partDistinct(st *stream) []int {
	out := make([]int, accPartitions)
	for _, id := range st.order {
		out[partOf(st.names[id])]++
	}
	return out
}

// cmsCost is the measured footprint model of CMSTopK on the stream: fixed
// bytes plus bytes per candidate (cells cost 8 bytes each).
type cmsCost struct{ base, perCand float64 }

// cmsModel measures CMSTopK with 1,000 and 100 candidates over the same
// sketch on the calibration prefix; the difference is the candidates' cost.
func (bd *builder) cmsModel() cmsCost {
	const w, d = 1024, 5
	f1 := bd.build(modeCMS, params{k: 1000, width: w, depth: d}, false, true, calibPrefix).bytes
	f2 := bd.build(modeCMS, params{k: 100, width: w, depth: d}, false, true, calibPrefix).bytes
	per := max(float64(f1-f2)/900, 1)
	return cmsCost{base: float64(f2) - 100*per - 8*w*d, perCand: per}
}

// The cms budget policy (also in the output header):
//   - candidates: K = clamp(floor(budget/2 / bytes-per-candidate), 100, 1000):
//     half the budget for the candidate heap, at least the 100 a top-100
//     query needs and at most the 1,000 a top-1000 query needs; but the
//     candidates never take more than 3/4 of the budget, so at the smallest
//     budgets K is below 100 (bytes-per-candidate is measured per stream);
//   - sketch: everything else, calibrated by measurement with K fixed.
//     depth = 5 = ceil(ln(1/0.01)) (delta = 0.01) while every row gets at
//     least cmsMinWidth cells, else the largest depth that does (at least 1);
//     width = cells/depth; epsilon = e/width;
//   - if not even one cell fits, K shrinks until it does.
//
// Split (16p-same-mem), every partition gets budget/16 and K_p =
// ceil(2*K/16) candidates, K being the single structure's K for the whole
// budget (a partition holds about 1/16 of the top items; 2x slack for
// uneven partitions), but at most half of budget/16; the sketches get the
// rest.
const (
	cmsDelta    = 0.01
	cmsMinWidth = 256
	cmsKMin     = 100
	cmsKMax     = 1000
)

func cmsK(budget int64, c cmsCost) int {
	k := int(float64(budget) / 2 / c.perCand)
	k = min(max(k, cmsKMin), cmsKMax)
	return min(k, int(0.75*float64(budget)/c.perCand))
}

func cmsShape(k, cells int) params {
	_, d5 := sketch.CountMinSize(0.01, cmsDelta)
	d := min(d5, max(1, cells/cmsMinWidth))
	return params{k: k, width: max(1, cells/d), depth: d}
}

// cmsCalibrate applies the cms policy to a budget (per partition: budget/16, if split).
func (bd *builder) cmsCalibrate(budget int64, split bool, c cmsCost) *built {
	per, n := budget, 1.0
	if split {
		per, n = budget/accPartitions, accPartitions
	}
	k := cmsK(budget, c)
	if split {
		k = min((2*k+accPartitions-1)/accPartitions, int(float64(per)/2/c.perCand))
	}
	for k >= 1 {
		try := func(cells, events int) *built {
			return bd.build(modeCMS, cmsShape(k, cells), split, true, events)
		}
		// If not even one cell fits, fewer candidates.
		if b := try(1, calibPrefix); b.bytes > budget {
			over := float64(b.bytes-budget) / (c.perCand * n)
			k = min(k*3/4, k-int(math.Ceil(over)))
			continue
		}
		x0 := int((float64(per) - c.base - float64(k)*c.perCand) / 8)
		if b := bd.calibrate(budget, 1, int(budget/8), x0, 8*n, 0.01, try); b != nil {
			return b
		}
		k = k * 3 / 4
	}
	return nil
}
