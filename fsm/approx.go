package fsm

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Defaults and limits of the approximate modes (DESIGN.md, "Approximate modes").
const (
	DefaultEpsilon = 0.001
	DefaultDelta   = 0.01
	// MaxSketchCells bounds one Count-Min sketch (32 MiB of cells).
	MaxSketchCells = 4 << 20
	// MaxBoardCells bounds the sketches of one cms leaderboard on one partition (512 MiB).
	MaxBoardCells = 64 << 20
	// MaxCapacity bounds a Space-Saving summary.
	MaxCapacity = 100_000
	// MaxApproxTotal bounds the total weight of an approximate leaderboard
	// on one partition (about 2.9e17 events).
	MaxApproxTotal = 1 << 58
	// MaxFilterCells bounds a Space-Saving summary's filter cells per counter.
	MaxFilterCells = 32
	// LegacyFilterCells is what a spacesaving config without filter_cells
	// means: the ratio of the logs and snapshots written before the field.
	// New leaderboards get sketch.FilterCellsPerCounter (FillNewDefaults).
	LegacyFilterCells = 8
)

// DefaultCapacity is the Space-Saving capacity of a leaderboard that names none.
func DefaultCapacity(kmax uint32) uint64 { return 2 * uint64(kmax) }

// FillNewDefaults sets the defaults that only a new leaderboard takes,
// before it is proposed: every replica then reads them from the log, and
// NormalizeConfig, which replicas run on every config they apply or
// restore, keeps its meaning for configs written by older versions.
func FillNewDefaults(c *pb.LeaderboardConfig) {
	if c.Mode == pb.Mode_MODE_SPACESAVING && c.FilterCells == 0 {
		c.FilterCells = sketch.FilterCellsPerCounter
	}
}

// MaxSummaryBoardBytes bounds the estimated summaries of one spacesaving
// leaderboard on one partition: for "all", and per sliding window up to two
// summaries per bucket plus the running one.
const MaxSummaryBoardBytes = 1 << 30

// ssCounterBytes is a Space-Saving counter's footprint without its filter
// cells (measured about 92-100 B; make accuracy prints it per stream).
const ssCounterBytes = 100

// CheckNewConfig applies the limits that only a new leaderboard must pass,
// before it is proposed (NormalizeConfig first). Replicas never run it: a
// limit added later must not refuse a config already in a log.
func CheckNewConfig(c *pb.LeaderboardConfig) error {
	if err := CheckName(c.Name); err != nil {
		return err
	}
	if c.Mode != pb.Mode_MODE_SPACESAVING {
		return nil
	}
	summaries := int64(1)
	for _, w := range c.Windows {
		summaries += 2*(w.DurationMs/w.BucketMs) + 1
	}
	per := int64(c.Capacity) * (ssCounterBytes + 4*int64(c.FilterCells))
	if n := summaries * per; n > MaxSummaryBoardBytes {
		return fmt.Errorf("leaderboard %q: up to %d summaries of %d KiB (capacity %d) may take %d MiB per partition, more than %d MiB: lower capacity or use fewer buckets",
			c.Name, summaries, per>>10, c.Capacity, n>>20, MaxSummaryBoardBytes>>20)
	}
	return nil
}

// normalizeApprox fills and checks the mode parameters.
func normalizeApprox(c *pb.LeaderboardConfig) error {
	switch c.Mode {
	case pb.Mode_MODE_EXACT:
		if c.Epsilon != 0 || c.Delta != 0 || c.Capacity != 0 || c.FilterCells != 0 {
			return fmt.Errorf("leaderboard %q: epsilon, delta and capacity apply to the approximate modes, not exact", c.Name)
		}
	case pb.Mode_MODE_CMS:
		if c.Capacity != 0 || c.FilterCells != 0 {
			return fmt.Errorf("leaderboard %q: capacity applies to mode spacesaving; cms is sized by epsilon and delta", c.Name)
		}
		if c.MaxItems != 0 {
			return fmt.Errorf("leaderboard %q: max_items applies to mode exact; cms memory is fixed by epsilon and delta", c.Name)
		}
		if c.Epsilon == 0 {
			c.Epsilon = DefaultEpsilon
		}
		if c.Delta == 0 {
			c.Delta = DefaultDelta
		}
		if !(c.Epsilon >= 1e-6 && c.Epsilon < 1) || math.IsNaN(c.Epsilon) {
			return fmt.Errorf("leaderboard %q: epsilon %g must be in [1e-6, 1)", c.Name, c.Epsilon)
		}
		if !(c.Delta >= 1e-6 && c.Delta < 1) || math.IsNaN(c.Delta) {
			return fmt.Errorf("leaderboard %q: delta %g must be in [1e-6, 1)", c.Name, c.Delta)
		}
		w, d := sketch.CountMinSize(c.Epsilon, c.Delta)
		if w*d > MaxSketchCells {
			return fmt.Errorf("leaderboard %q: epsilon %g and delta %g need %d sketch cells, more than %d", c.Name, c.Epsilon, c.Delta, w*d, MaxSketchCells)
		}
		sketches := 1
		for _, win := range c.Windows {
			sketches += 1 + int(win.DurationMs/win.BucketMs)
		}
		if n := w * d * sketches; n > MaxBoardCells {
			return fmt.Errorf("leaderboard %q: %d sketches of %d cells (%d MiB per partition) exceed %d MiB: raise epsilon or use fewer buckets",
				c.Name, sketches, w*d, n*8>>20, MaxBoardCells*8>>20)
		}
	case pb.Mode_MODE_SPACESAVING:
		if c.Epsilon != 0 || c.Delta != 0 {
			return fmt.Errorf("leaderboard %q: epsilon and delta apply to mode cms; spacesaving is sized by capacity", c.Name)
		}
		if c.MaxItems != 0 {
			return fmt.Errorf("leaderboard %q: max_items applies to mode exact; spacesaving memory is fixed by capacity", c.Name)
		}
		if c.Capacity == 0 {
			c.Capacity = DefaultCapacity(c.KMax)
		}
		if c.Capacity < uint64(c.KMax) || c.Capacity > MaxCapacity {
			return fmt.Errorf("leaderboard %q: capacity %d must be in [k_max=%d, %d]", c.Name, c.Capacity, c.KMax, MaxCapacity)
		}
		if c.FilterCells == 0 {
			// Written before the field existed: those logs built 8 cells.
			c.FilterCells = LegacyFilterCells
		}
		if c.FilterCells > MaxFilterCells {
			return fmt.Errorf("leaderboard %q: filter_cells %d exceeds %d", c.Name, c.FilterCells, MaxFilterCells)
		}
	}
	return nil
}

// approxBoard is the counting state of a cms or spacesaving leaderboard:
// one approxWindow for "all" and one per sliding window.
type approxBoard struct {
	mode        pb.Mode
	spans       []span
	all         approxWindow
	wins        []approxWindow
	width       int
	depth       int
	seed        uint64
	rejectedNeg uint64
}

// approxWindow is one window of an approximate leaderboard. idx is the
// bucket index of the delta's time (ignored by "all"); loc is its sketch
// location (cms only).
type approxWindow interface {
	add(item string, loc sketch.Loc, idx int64, w uint64)
	expire(start int64)
	result(k int) sketch.Result
	lookup(item string) sketch.Counter
	bytes() int
	monitored() int
	capture(wi uint32) (*pb.ApproxWindow, []*pb.ApproxBucket)
}

// total is the weight "all" has counted: every accepted delta.
func (a *approxBoard) total() uint64 {
	switch w := a.all.(type) {
	case *ssAll:
		return w.s.Total()
	case *cmsAll:
		return w.t.Sketch().Total()
	}
	return 0
}

func newApproxBoard(c *pb.LeaderboardConfig, spans []span) *approxBoard {
	a := &approxBoard{mode: c.Mode, spans: spans}
	switch c.Mode {
	case pb.Mode_MODE_CMS:
		a.width, a.depth = sketch.CountMinSize(c.Epsilon, c.Delta)
		// Hash seeds come from the log (name and incarnation), so replicas agree.
		a.seed = xxhash.Sum64String(c.Name) ^ c.Incarnation*0x9e3779b97f4a7c15
		a.all = &cmsAll{t: sketch.NewCMSTopK(int(c.KMax), a.width, a.depth, a.seed)}
		for range c.Windows {
			a.wins = append(a.wins, newCMSWindow(int(c.KMax), a.width, a.depth, a.seed))
		}
	case pb.Mode_MODE_SPACESAVING:
		sh := shapeOf(c)
		a.all = &ssAll{s: sh.summary()}
		for range c.Windows {
			a.wins = append(a.wins, &ssWindow{sh: sh, back: sh.summary()})
		}
	}
	return a
}

// apply follows exact mode's late and clock rules; negative deltas are
// refused (counted).
func (a *approxBoard) apply(lb *leaderboard, d *pb.LeaderboardDeltas, entryMs int64, st []int64, lh []uint64, out *pb.Outcome) {
	var cms *sketch.CountMin
	if c, ok := a.all.(*cmsAll); ok {
		cms = c.t.Sketch()
	}
	for i, item := range d.Items {
		// Summaries keep items; decoded items alias the log entry.
		item = strings.Clone(item)
		ev := eventsAt(d, i)
		delta := d.Deltas[i]
		if delta < 0 {
			a.rejectedNeg += ev
			out.Rejected += ev
			continue
		}
		// Totals stay below MaxApproxTotal: no count, sketch cell or sum of
		// up to 64 partitions' answers wraps uint64.
		if uint64(delta) > MaxApproxTotal-a.total() {
			lb.rejectedOF += ev
			out.Rejected += ev
			continue
		}
		t := timeAt(d, i, entryMs)
		lb.accept(ev, t, out)
		if delta == 0 {
			continue
		}
		w := uint64(delta)
		var loc sketch.Loc
		if cms != nil {
			loc = cms.Locate(item)
		}
		a.all.add(item, loc, 0, w)
		for wi, s := range a.spans {
			idx := floorDiv(t, s.bucketMs)
			if idx < st[wi] {
				lh[wi] += ev
				continue
			}
			a.wins[wi].add(item, loc, idx, w)
		}
	}
}

func (a *approxBoard) window(wi int) approxWindow {
	if wi < 0 {
		return a.all
	}
	return a.wins[wi]
}

func (a *approxBoard) expire(clockMs int64) {
	for i, s := range a.spans {
		a.wins[i].expire(s.startIndex(clockMs))
	}
}

func (a *approxBoard) settle()    {}
func (a *approxBoard) resize(int) {} // k_max is fixed (CheckUpdate)

func (a *approxBoard) top(wi, k int) ([]Item, int64) {
	r := a.window(wi).result(k)
	items := make([]Item, len(r.Items))
	for i, c := range r.Items {
		items[i] = ItemOf(c)
	}
	return items, clampInt64(r.Rest)
}

func (a *approxBoard) count(wi int, item string) Item { return ItemOf(a.window(wi).lookup(item)) }
func (a *approxBoard) distinct() int                  { return a.all.monitored() }
func (a *approxBoard) contains(item string) bool      { return a.all.lookup(item).Lower() > 0 }
func (a *approxBoard) check() error                   { return nil }

func (a *approxBoard) stats(lb *leaderboard, ls *LeaderboardStats) {
	ls.Approximate, ls.RejectedNegative = true, a.rejectedNeg
	ls.DistinctItems = a.all.monitored()
	ls.Windows = append(ls.Windows, WindowStats{PositiveItems: ls.DistinctItems})
	for i, s := range a.spans {
		ls.Windows = append(ls.Windows, WindowStats{Window: msDuration(s.durMs), Bucket: msDuration(s.bucketMs),
			PositiveItems: a.wins[i].monitored(), LateDropped: lb.late[i]})
	}
}

func (a *approxBoard) bytes() int64 {
	n := a.all.bytes()
	for _, w := range a.wins {
		n += w.bytes()
	}
	return int64(n)
}

// ---- spacesaving ----

type ssAll struct{ s *sketch.Summary }

func (w *ssAll) add(item string, _ sketch.Loc, _ int64, n uint64) { w.s.Add(item, n) }
func (w *ssAll) expire(int64)                                     {}
func (w *ssAll) result(k int) sketch.Result                       { return w.s.Result(k) }
func (w *ssAll) lookup(item string) sketch.Counter                { return ssLookup(w.s, item) }
func (w *ssAll) bytes() int                                       { return w.s.Bytes() }
func (w *ssAll) monitored() int                                   { return w.s.Len() }
func (w *ssAll) capture(wi uint32) (*pb.ApproxWindow, []*pb.ApproxBucket) {
	return &pb.ApproxWindow{Window: wi, Summary: summaryState(w.s)}, nil
}

// ssLookup bounds one item: its counter, or [0, its filter cell] when unmonitored.
func ssLookup(s *sketch.Summary, item string) sketch.Counter {
	if c, ok := s.Lookup(item); ok {
		return c
	}
	b := s.Unmonitored(item)
	return sketch.Counter{Item: item, Count: b, Err: b}
}

// ssWindow answers a sliding window from Space-Saving summaries, which merge
// but cannot subtract, with two stacks: buckets[:front] form the front stack,
// each with the suffix aggregate agg[i] = merge(buckets[i:front]); the newer
// buckets feed one running summary, back. A query merges two summaries
// (agg[0] and back); expiry pops the front; when the front runs out, the live
// buckets but the newest are re-aggregated (amortized one merge per bucket).
type ssWindow struct {
	sh      ssShape
	buckets []ssBucket
	agg     []*sketch.Summary
	front   int
	back    *sketch.Summary
}

type ssBucket struct {
	index int64
	s     *sketch.Summary
}

func (w *ssWindow) add(item string, _ sketch.Loc, idx int64, n uint64) {
	p, ok := slices.BinarySearchFunc(w.buckets, idx, func(b ssBucket, i int64) int { return cmp.Compare(b.index, i) })
	if !ok {
		w.buckets = slices.Insert(w.buckets, p, ssBucket{index: idx, s: w.sh.summary()})
		if p < w.front {
			// A late event opened a bucket inside the front stack: it joins
			// the stack, its aggregate covering the older-suffix below it.
			w.agg = slices.Insert(w.agg, p, w.agg[p].Clone())
			w.front++
		}
	}
	w.buckets[p].s.Add(item, n)
	if p < w.front {
		for j := 0; j <= p; j++ {
			w.agg[j].Add(item, n)
		}
		return
	}
	w.back.Add(item, n)
}

func (w *ssWindow) expire(start int64) {
	e := 0
	for e < len(w.buckets) && w.buckets[e].index < start {
		e++
	}
	switch {
	case e == 0:
		return
	case e == len(w.buckets):
		w.buckets, w.agg, w.front = w.buckets[:0], w.agg[:0], 0
		w.back.Reset()
		return
	case e <= w.front:
		clear(w.buckets[:e])
		w.buckets = slices.Delete(w.buckets, 0, e)
		w.agg = slices.Delete(w.agg, 0, e)
		w.front -= e
		return
	}
	w.buckets = slices.Delete(w.buckets, 0, e)
	w.rebuild()
}

// rebuild puts every live bucket but the newest on the front stack.
func (w *ssWindow) rebuild() {
	n := len(w.buckets)
	w.front = n - 1
	w.agg = w.agg[:0]
	for range w.front {
		w.agg = append(w.agg, nil)
	}
	for i := w.front - 1; i >= 0; i-- {
		if i == w.front-1 {
			w.agg[i] = w.buckets[i].s.Clone()
		} else {
			w.agg[i] = sketch.Merge(w.sh.m, w.buckets[i].s, w.agg[i+1])
		}
	}
	w.back = w.buckets[n-1].s.Clone()
}

func (w *ssWindow) merged() *sketch.Summary {
	if w.front == 0 {
		return w.back
	}
	return sketch.Merge(w.sh.m, w.agg[0], w.back)
}

func (w *ssWindow) result(k int) sketch.Result { return w.merged().Result(k) }

func (w *ssWindow) lookup(item string) sketch.Counter {
	c := ssLookup(w.back, item)
	if w.front > 0 {
		f := ssLookup(w.agg[0], item)
		c.Count += f.Count
		c.Err += f.Err
	}
	return c
}

func (w *ssWindow) bytes() int {
	n := w.back.Bytes()
	for _, b := range w.buckets {
		n += b.s.Bytes()
	}
	for _, s := range w.agg {
		n += s.Bytes()
	}
	return n
}

func (w *ssWindow) monitored() int { return w.merged().Len() }

func (w *ssWindow) capture(wi uint32) (*pb.ApproxWindow, []*pb.ApproxBucket) {
	h := &pb.ApproxWindow{Window: wi, Summary: summaryState(w.back), Front: uint32(w.front), Buckets: uint32(len(w.buckets))}
	bs := make([]*pb.ApproxBucket, len(w.buckets))
	for i, b := range w.buckets {
		bs[i] = &pb.ApproxBucket{Window: wi, Index: b.index, Summary: summaryState(b.s)}
		if i < w.front {
			bs[i].Aggregate = summaryState(w.agg[i])
		}
	}
	return h, bs
}

func summaryState(s *sketch.Summary) *pb.SummaryState {
	cs := s.Counters()
	st := &pb.SummaryState{Capacity: uint64(s.Capacity()), Total: s.Total(), Floor: s.Floor(),
		Items: make([]string, len(cs)), Counts: make([]uint64, len(cs)), Errs: make([]uint64, len(cs)),
		Filter: s.Filter()}
	for i, c := range cs {
		st.Items[i], st.Counts[i], st.Errs[i] = c.Item, c.Count, c.Err
	}
	return st
}

// ssShape is the size of every summary of a spacesaving leaderboard.
type ssShape struct{ m, cells int }

func shapeOf(c *pb.LeaderboardConfig) ssShape {
	return ssShape{m: int(c.Capacity), cells: int(c.Capacity) * int(c.FilterCells)}
}

func (sh ssShape) summary() *sketch.Summary { return sketch.NewFilteredSummary(sh.m, sh.cells) }

func restoreSummary(st *pb.SummaryState, sh ssShape) (*sketch.Summary, error) {
	m := sh.m
	if st == nil {
		return nil, fmt.Errorf("summary missing")
	}
	if st.Capacity != uint64(m) {
		return nil, fmt.Errorf("summary capacity %d, config says %d", st.Capacity, m)
	}
	if len(st.Counts) != len(st.Items) || len(st.Errs) != len(st.Items) {
		return nil, fmt.Errorf("summary columns of different lengths")
	}
	cs := make([]sketch.Counter, len(st.Items))
	for i := range cs {
		cs[i] = sketch.Counter{Item: st.Items[i], Count: st.Counts[i], Err: st.Errs[i]}
	}
	s, err := sketch.RestoreFiltered(m, sh.cells, st.Total, st.Filter, cs)
	if err != nil {
		return nil, err
	}
	if s.Floor() != st.Floor {
		return nil, fmt.Errorf("summary floor %d, its cells say %d", st.Floor, s.Floor())
	}
	return s, nil
}

// ItemOf is an approximate counter as an Item: Count and Upper are its
// estimate, Lower its lower bound, each clamped to int64.
func ItemOf(c sketch.Counter) Item {
	return Item{Item: c.Item, Count: clampInt64(c.Count), Lower: clampInt64(c.Lower()), Upper: clampInt64(c.Count)}
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
