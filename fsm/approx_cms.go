package fsm

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// cmsAll is the all-time window of a cms leaderboard.
type cmsAll struct{ t *sketch.CMSTopK }

func (w *cmsAll) add(item string, loc sketch.Loc, _ int64, n uint64) { w.t.AddAt(item, loc, n) }
func (w *cmsAll) expire(int64)                                       {}
func (w *cmsAll) result(k int) sketch.Result                         { return w.t.Result(k) }
func (w *cmsAll) bytes() int                                         { return w.t.Bytes() }
func (w *cmsAll) monitored() int                                     { return len(w.t.Candidates()) }
func (w *cmsAll) lookup(item string) sketch.Counter {
	c, ok := w.t.Lookup(item)
	if !ok { // a non-candidate is also bounded by what was refused or evicted
		c.Count = min(c.Count, w.t.Bound())
		c.Err = c.Count
	}
	return c
}

func (w *cmsAll) capture(wi uint32) (*pb.ApproxWindow, []*pb.ApproxBucket) {
	cs := w.t.Candidates()
	st := &pb.CandidateState{Items: make([]string, len(cs)), Ests: make([]uint64, len(cs)), Lowers: make([]uint64, len(cs))}
	for i, c := range cs {
		st.Items[i], st.Ests[i], st.Lowers[i] = c.Item, c.Est, c.Lower
	}
	return &pb.ApproxWindow{Window: wi, Sketch: sketchState(w.t.Sketch()), Candidates: st, Bound: w.t.Bound()}, nil
}

// cmsWindow is a sliding window of a cms leaderboard. The window's sketch is
// the sum of its buckets' sketches (Count-Min is linear), so expiry
// subtracts a bucket. Candidates carry a deterministic lower bound: the
// exact weight added while a candidate, per bucket, so it expires with its
// bucket. bounds keeps, per epoch (the highest bucket index seen when it was
// recorded), the largest estimate of an item refused or evicted: a
// non-candidate's deltas all lie in buckets up to its epoch, so once those
// expire its bound can go too.
type cmsWindow struct {
	k       int
	sk      *sketch.CountMin
	width   int
	depth   int
	seed    uint64
	buckets []*cmsBucket
	cands   map[string]*cmsCand
	heap    []*cmsCand // min-heap by (est asc, item desc): the first to evict on top
	nextSeq uint64
	bounds  []epochBound
	maxIdx  int64
}

type cmsCand struct {
	item  string
	est   uint64
	lower uint64
	seq   uint64
	hi    int
}

type cmsBucket struct {
	index int64
	sk    *sketch.CountMin
	cand  map[string]candDelta
}

type candDelta struct {
	seq uint64
	w   uint64
}

type epochBound struct {
	key int64
	v   uint64
}

func newCMSWindow(k, width, depth int, seed uint64) *cmsWindow {
	return &cmsWindow{k: k, width: width, depth: depth, seed: seed, sk: sketch.NewCountMin(width, depth, seed),
		cands: make(map[string]*cmsCand), maxIdx: noTime}
}

func (w *cmsWindow) bucketFor(idx int64) *cmsBucket {
	if n := len(w.buckets); n > 0 && w.buckets[n-1].index == idx {
		return w.buckets[n-1]
	}
	p, ok := slices.BinarySearchFunc(w.buckets, idx, func(b *cmsBucket, i int64) int { return cmp.Compare(b.index, i) })
	if ok {
		return w.buckets[p]
	}
	b := &cmsBucket{index: idx, sk: sketch.NewCountMin(w.width, w.depth, w.seed), cand: make(map[string]candDelta)}
	w.buckets = slices.Insert(w.buckets, p, b)
	return b
}

func (w *cmsWindow) add(item string, loc sketch.Loc, idx int64, n uint64) {
	b := w.bucketFor(idx)
	b.sk.AddAt(loc, n)
	w.sk.AddAt(loc, n)
	est := w.sk.EstimateAt(loc)
	if idx > w.maxIdx {
		w.maxIdx = idx
	}
	if c := w.cands[item]; c != nil {
		c.est = est
		c.lower += n
		d := b.cand[item]
		if d.seq != c.seq { // left over from an earlier candidacy
			d = candDelta{seq: c.seq}
		}
		d.w += n
		b.cand[item] = d
		w.fix(c.hi)
		return
	}
	if len(w.heap) >= w.k {
		m := w.heap[0]
		if !rankAboveEst(est, item, m.est, m.item) {
			w.noteBound(est)
			return
		}
		w.noteBound(w.sk.Estimate(m.item))
		w.remove(0)
	}
	w.nextSeq++
	c := &cmsCand{item: item, est: est, lower: n, seq: w.nextSeq}
	w.cands[item] = c
	b.cand[item] = candDelta{seq: c.seq, w: n}
	c.hi = len(w.heap)
	w.heap = append(w.heap, c)
	w.up(c.hi)
}

func (w *cmsWindow) noteBound(v uint64) {
	if n := len(w.bounds); n > 0 && w.bounds[n-1].key == w.maxIdx {
		w.bounds[n-1].v = max(w.bounds[n-1].v, v)
		return
	}
	w.bounds = append(w.bounds, epochBound{key: w.maxIdx, v: v})
}

func (w *cmsWindow) bound() uint64 {
	var b uint64
	for _, e := range w.bounds {
		b = max(b, e.v)
	}
	return b
}

func (w *cmsWindow) expire(start int64) {
	e := 0
	for e < len(w.buckets) && w.buckets[e].index < start {
		b := w.buckets[e]
		if err := w.sk.Subtract(b.sk); err != nil {
			panic(fmt.Sprintf("topkd fsm: cms window expiry: %v", err)) // the window sketch is the sum of its buckets
		}
		for item, d := range b.cand {
			if c := w.cands[item]; c != nil && c.seq == d.seq {
				c.lower -= d.w
			}
		}
		e++
	}
	if e == 0 {
		return
	}
	clear(w.buckets[:e])
	w.buckets = slices.Delete(w.buckets, 0, e)
	b := 0
	for b < len(w.bounds) && w.bounds[b].key < start {
		b++
	}
	w.bounds = slices.Delete(w.bounds, 0, b)
	// Estimates fell: refresh them, drop candidates with nothing left, re-heap.
	kept := w.heap[:0]
	for _, c := range w.heap {
		c.est = w.sk.Estimate(c.item)
		if c.est == 0 {
			delete(w.cands, c.item)
			continue
		}
		kept = append(kept, c)
	}
	clear(w.heap[len(kept):])
	w.heap = kept
	w.reheap()
}

func (w *cmsWindow) reheap() {
	for i, c := range w.heap {
		c.hi = i
	}
	for i := len(w.heap)/2 - 1; i >= 0; i-- {
		w.down(i)
	}
}

// rankAboveEst orders candidates: higher estimate, then smaller item.
func rankAboveEst(ea uint64, a string, eb uint64, b string) bool {
	if ea != eb {
		return ea > eb
	}
	return a < b
}

// less: i is evicted before j.
func (w *cmsWindow) less(i, j int) bool {
	return rankAboveEst(w.heap[j].est, w.heap[j].item, w.heap[i].est, w.heap[i].item)
}

func (w *cmsWindow) swap(i, j int) {
	w.heap[i], w.heap[j] = w.heap[j], w.heap[i]
	w.heap[i].hi, w.heap[j].hi = i, j
}

func (w *cmsWindow) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !w.less(i, p) {
			return
		}
		w.swap(i, p)
		i = p
	}
}

func (w *cmsWindow) down(i int) {
	n := len(w.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && w.less(r, l) {
			m = r
		}
		if !w.less(m, i) {
			return
		}
		w.swap(i, m)
		i = m
	}
}

func (w *cmsWindow) fix(i int) {
	w.up(i)
	w.down(w.heap[i].hi)
}

func (w *cmsWindow) remove(i int) {
	c := w.heap[i]
	last := len(w.heap) - 1
	if i != last {
		w.swap(i, last)
	}
	w.heap[last] = nil
	w.heap = w.heap[:last]
	if i != last {
		w.fix(i)
	}
	delete(w.cands, c.item)
}

// ranked returns every candidate with its current estimate, best first.
func (w *cmsWindow) ranked() []sketch.Counter {
	out := make([]sketch.Counter, len(w.heap))
	for i, c := range w.heap {
		est := w.sk.Estimate(c.item)
		out[i] = sketch.Counter{Item: c.item, Count: est, Err: est - min(c.lower, est)}
	}
	slices.SortFunc(out, func(a, b sketch.Counter) int {
		if rankAboveEst(a.Count, a.Item, b.Count, b.Item) {
			return -1
		}
		if rankAboveEst(b.Count, b.Item, a.Count, a.Item) {
			return 1
		}
		return 0
	})
	return out
}

func (w *cmsWindow) result(k int) sketch.Result {
	all := w.ranked()
	r := sketch.Result{Rest: w.bound()}
	if len(all) > k {
		r.Rest = max(r.Rest, all[k].Count)
		all = all[:k]
	}
	r.Items = all
	return r
}

func (w *cmsWindow) lookup(item string) sketch.Counter {
	est := w.sk.Estimate(item)
	c := w.cands[item]
	if c == nil { // a non-candidate is also bounded by what was refused or evicted
		est = min(est, w.bound())
		return sketch.Counter{Item: item, Count: est, Err: est}
	}
	lower := min(c.lower, est)
	return sketch.Counter{Item: item, Count: est, Err: est - lower}
}

func (w *cmsWindow) bytes() int {
	n := w.sk.Bytes() + len(w.heap)*(64+8)
	for _, b := range w.buckets {
		n += b.sk.Bytes() + len(b.cand)*48
	}
	for _, c := range w.heap {
		n += len(c.item)
	}
	return n
}

func (w *cmsWindow) monitored() int { return len(w.heap) }

func (w *cmsWindow) capture(wi uint32) (*pb.ApproxWindow, []*pb.ApproxBucket) {
	h := &pb.ApproxWindow{Window: wi, NextSeq: w.nextSeq, MaxBucket: w.maxIdx, Buckets: uint32(len(w.buckets))}
	items := make([]string, 0, len(w.cands))
	for it := range w.cands {
		items = append(items, it)
	}
	slices.Sort(items)
	h.Candidates = &pb.CandidateState{Items: items}
	for _, it := range items {
		c := w.cands[it]
		h.Candidates.Ests = append(h.Candidates.Ests, c.est)
		h.Candidates.Lowers = append(h.Candidates.Lowers, c.lower)
		h.Candidates.Seqs = append(h.Candidates.Seqs, c.seq)
	}
	for _, e := range w.bounds {
		h.BoundKeys = append(h.BoundKeys, e.key)
		h.BoundValues = append(h.BoundValues, e.v)
	}
	bs := make([]*pb.ApproxBucket, len(w.buckets))
	for i, b := range w.buckets {
		its := make([]string, 0, len(b.cand))
		for it := range b.cand {
			its = append(its, it)
		}
		slices.Sort(its)
		cs := &pb.CandidateState{Items: its}
		for _, it := range its {
			d := b.cand[it]
			cs.Seqs = append(cs.Seqs, d.seq)
			cs.Lowers = append(cs.Lowers, d.w)
		}
		bs[i] = &pb.ApproxBucket{Window: wi, Index: b.index, Sketch: sketchState(b.sk), Candidates: cs}
	}
	return h, bs
}

func sketchState(c *sketch.CountMin) *pb.SketchState {
	return &pb.SketchState{Width: uint32(c.Width()), Depth: uint32(c.Depth()), Seed: c.Seed(), Total: c.Total(),
		Cells: slices.Clone(c.Cells())}
}

func restoreSketch(st *pb.SketchState, width, depth int, seed uint64) (*sketch.CountMin, error) {
	if st == nil {
		return nil, fmt.Errorf("sketch missing")
	}
	if int(st.Width) != width || int(st.Depth) != depth || st.Seed != seed {
		return nil, fmt.Errorf("sketch shape %dx%d seed %d, config says %dx%d seed %d", st.Width, st.Depth, st.Seed, width, depth, seed)
	}
	return sketch.RestoreCountMin(width, depth, st.Seed, st.Total, slices.Clone(st.Cells))
}
