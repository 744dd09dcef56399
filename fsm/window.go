package fsm

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// window keeps the exact counts of one window ("all" or a sliding duration)
// and the structure that answers its top-K without scanning every item:
//
//   - top: an indexed min-heap holding up to cap = K_max + slack items;
//   - classes: every other item with a positive count sits in a count class
//     (one per power of two below 16, four per power of two above), down
//     to a floor below which items are only counted (untracked). Each
//     class keeps an upper bound on the rank of its members.
//
// The bound of the highest non-empty class bounds every item outside the
// heap, so heap members ranking above it are certain. When fewer than
// min(K_max, positive items) are certain, refill evicts the uncertain members
// and pulls the best items of the top classes back in, scanning only those
// classes. DESIGN.md explains the amortized cost.
type window struct {
	span

	items *cowArray[string] // owned by the exact board; for tie-breaks

	// Counts and positions live in the exact board's records (recs.go),
	// at word off. A position is >=0 for a slot in its class, -1 for none,
	// <=-2 for heap index -(pos+2).
	rec *recStore
	off int

	heap     []hnode
	capacity int
	kmax     int

	// classes is allocated when an item is first classed (14 KiB): an
	// empty leaderboard's windows stay small.
	classes  *[numClasses]class
	nonEmpty [numClasses / 64]uint64
	positive int
	dirty    bool
	// Classes below floor are not kept: an outsider whose count falls in
	// one is untracked, in no class (its position may be stale), and costs
	// no class move. The untracked items number positive - len(heap) -
	// tracked, and all rank below classLow(floor). refill lowers the floor
	// by a scan of the records when the kept classes run out; settle raises
	// it when they hold far more than a refill needs (keepTracked).
	floor      int
	tracked    int // members of the kept classes
	trackedMin int // tuning.trackedMin
	lowered    int // scans that lowered the floor (benchmarks report them)

	buckets []*bucket // ascending index; sliding windows only
	// The newest bucket finds an item's entry through its record instead
	// of a map: a record generation equal to fastGen means its slot is the
	// item's entry there. 64 bits never wrap, so a match needs no check
	// against the bucket's ids (a dependent miss): an id is freed only
	// with no bucket entry left, so a reused id's record names an older
	// generation, and restored buckets have none.
	fastGen uint64
}

func (w *window) cnt(id uint32) int64 { return int64(*w.rec.word(id, w.off)) }

func (w *window) setCnt(id uint32, c int64) { *w.rec.word(id, w.off) = uint64(c) }

func (w *window) posOf(id uint32) int32 { return int32(*w.rec.half(id, w.off+1, 0)) - 1 }

func (w *window) setPos(id uint32, p int32) { *w.rec.half(id, w.off+1, 0) = uint32(p + 1) }

// newestSlot is id's entry in the newest bucket as its record last saw it.
func (w *window) newestSlot(id uint32) (gen uint64, slot int) {
	return *w.rec.word(id, w.off+2), int(int32(*w.rec.half(id, w.off+1, 1)))
}

func (w *window) setNewestSlot(id uint32, gen uint64, slot int) {
	*w.rec.half(id, w.off+1, 1) = uint32(slot)
	*w.rec.word(id, w.off+2) = gen
}

// hnode is a heap member: its count (kept equal to the count in its
// record) and the 16-byte prefix key of its item ride in the heap, so a
// sift compares nodes without loading records or, unless counts and
// prefixes tie, the item strings.
type hnode struct {
	count int64
	key   pkey
	id    uint32
}

// pkey is the first 16 bytes of an item, big-endian and zero-padded: keys
// order as the strings do, except that equal keys need the strings. 16,
// not 8: ids such as "song_1234567" share their first 8 bytes in runs.
type pkey struct{ hi, lo uint64 }

func prefixKey(s string) pkey {
	var b [16]byte
	copy(b[:], s)
	return pkey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// less orders keys as their strings' prefixes.
func (a pkey) less(b pkey) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (w *window) node(id uint32) hnode {
	return hnode{count: w.cnt(id), key: prefixKey(w.items.get(int(id))), id: id}
}

// aboveByKey orders (count desc, key asc); settled is false when counts
// and keys tie and only the item strings can tell.
func aboveByKey(ca int64, ka pkey, cb int64, kb pkey) (above, settled bool) {
	if ca != cb {
		return ca > cb, true
	}
	if ka != kb {
		return ka.less(kb), true
	}
	return false, false
}

// nodeAbove reports whether heap node a ranks above b.
func (w *window) nodeAbove(a, b hnode) bool {
	if above, ok := aboveByKey(a.count, a.key, b.count, b.key); ok {
		return above
	}
	if a.id == b.id {
		return false
	}
	return w.items.get(int(a.id)) < w.items.get(int(b.id))
}

type class struct {
	ids      []uint32
	hasBound bool
	// stale: the bound may be too low. Only the top class's bound is ever
	// read, so classes below it skip the (string-comparing) raise and are
	// rescanned once, when they become the top class.
	stale  bool
	bCount int64
	bItem  string // by value: the bound's id may be freed and reused by another item
}

// bucket holds one tumbling slice of a sliding window: each item at most
// once, entries in first-seen log order (the canonical order).
type bucket struct {
	index  int64
	ids    cowArray[uint32]
	deltas cowArray[int64]
	slot   map[uint32]int32 // id -> entry, built on first use when the per-id arrays do not apply
	gen    uint64           // the window's fastGen when this bucket was the newest; 0 for others
}

const (
	numClasses = 256
	posNone    = -1
)

// classOf maps a positive count to its class: one class per power of two
// below 16, four per power of two from 16 on (241 classes in all). Below 16
// a class per count would make almost every increment of a tail item a
// class move (a swap-remove that writes a random class slot and the moved
// member's record); these classes halve the moves at 1M items (DESIGN.md).
func classOf(c int64) int {
	b := bits.Len64(uint64(c))
	if c < 16 {
		return b
	}
	sub := int(uint64(c)>>(b-3)) & 3
	return 5 + (b-5)*4 + sub
}

// classLow is the smallest count in class ci (1 for classes 0 and 1).
func classLow(ci int) int64 {
	if ci <= 1 {
		return 1
	}
	if ci < 5 {
		return 1 << (ci - 1)
	}
	b := (ci-5)/4 + 5
	return int64(4|(ci-5)%4) << (b - 3)
}

// keepTracked is how many outsiders the kept classes hold at least after
// the floor moves (or all of them, if fewer): enough that refills rarely
// exhaust them, and at least a 64th of the window's items, so that the
// O(ids) scan which lowers the floor follows at least three times as many
// class changes in a window that holds most of the ids. Windows of fewer
// than 16 x capacity items keep every class (they never exceed four times
// keepTracked), so a small window on a large leaderboard never scans.
func (w *window) keepTracked() int {
	k := 4 * w.capacity
	if w.trackedMin >= 0 {
		k = w.trackedMin
	}
	return max(k, w.positive/64, 1)
}

// cls returns the classes, allocating them on first use.
func (w *window) cls() *[numClasses]class {
	if w.classes == nil {
		w.classes = new([numClasses]class)
	}
	return w.classes
}

func (w *window) untracked() int { return w.positive - len(w.heap) - w.tracked }

func newWindow(s span, kmax int, items *cowArray[string], rec *recStore, off, trackedMin int) *window {
	w := &window{span: s, kmax: kmax, items: items, rec: rec, off: off, trackedMin: trackedMin}
	w.setKmax(kmax)
	return w
}

func (w *window) setKmax(kmax int) {
	w.kmax = kmax
	w.capacity = kmax + kmax/2 + 16
	w.dirty = true
}

// greater reports whether (ca, a) ranks above (cb, b): higher count, then smaller item.
func (w *window) greater(ca int64, a uint32, cb int64, b uint32) bool {
	if ca != cb {
		return ca > cb
	}
	if a == b {
		return false
	}
	return w.items.get(int(a)) < w.items.get(int(b))
}

func (w *window) rankAbove(a, b uint32) bool {
	return w.greater(w.cnt(a), a, w.cnt(b), b)
}

// add applies delta to item id's count in this window.
func (w *window) add(id uint32, delta int64) {
	if delta == 0 {
		return
	}
	old := w.cnt(id)
	nw := old + delta
	w.setCnt(id, nw)
	if old <= 0 && nw > 0 {
		w.positive++
	} else if old > 0 && nw <= 0 {
		w.positive--
	}
	p := w.posOf(id)
	if p >= 0 && (old <= 0 || classOf(old) < w.floor) {
		p = posNone // untracked, its position stale
	}
	switch {
	case p <= -2:
		hi := int(-(p + 2))
		w.heap[hi].count = nw
		if nw <= 0 {
			w.heapRemove(hi)
			w.setPos(id, posNone)
			w.dirty = true
			return
		}
		if nw > old {
			w.siftDown(hi)
		} else {
			w.siftUp(hi)
			w.dirty = true
		}
	case p == posNone:
		if nw <= 0 {
			w.setPos(id, posNone)
		} else if !w.promote(id, nw) {
			w.park(id, nw)
		}
	default:
		oc := classOf(old)
		if nw <= 0 {
			w.classRemove(oc, int(p))
			w.setPos(id, posNone)
			return
		}
		// An item that goes straight into the heap must not raise a class bound.
		if nw > old && w.beatsHeapMin(id, nw) {
			w.classRemove(oc, int(p))
			w.promote(id, nw)
			return
		}
		if nc := classOf(nw); nc != oc {
			w.classRemove(oc, int(p))
			w.park(id, nw)
		} else if nw > old {
			w.raiseBound(nc, nw, id)
		}
	}
}

// beatsHeapMin reports whether an outsider with count c belongs in the heap.
func (w *window) beatsHeapMin(id uint32, c int64) bool {
	if len(w.heap) < w.capacity {
		return true
	}
	m := w.heap[0]
	return w.greater(c, id, m.count, m.id)
}

// promote pushes an item that is in no class into the heap if it belongs
// there, evicting the heap minimum into its class when the heap is full.
func (w *window) promote(id uint32, c int64) bool {
	if !w.beatsHeapMin(id, c) {
		return false
	}
	w.heapPush(id)
	if len(w.heap) > w.capacity {
		m := w.heap[0]
		w.heapRemove(0)
		w.park(m.id, m.count)
	}
	return true
}

// park puts an outsider with count c > 0 in its class, or leaves it
// untracked below the floor.
func (w *window) park(id uint32, c int64) {
	if classOf(c) >= w.floor {
		w.classInsert(id, c)
		return
	}
	w.setPos(id, posNone)
	if w.topClass() < 0 {
		w.dirty = true // the outside bound may have been none until now
	}
}

func (w *window) raiseBound(ci int, c int64, id uint32) {
	cl := &w.cls()[ci]
	if cl.stale {
		return
	}
	if ci < w.topClass() {
		cl.stale = true
		return
	}
	if !cl.hasBound || w.aboveBound(c, id, cl.bCount, cl.bItem) {
		cl.hasBound, cl.bCount, cl.bItem = true, c, w.items.get(int(id))
		w.dirty = true
	}
}

func (w *window) classInsert(id uint32, c int64) {
	ci := classOf(c)
	cl := &w.cls()[ci]
	w.setPos(id, int32(len(cl.ids)))
	cl.ids = append(cl.ids, id)
	w.tracked++
	w.nonEmpty[ci>>6] |= 1 << (ci & 63)
	w.raiseBound(ci, c, id)
}

func (w *window) classRemove(ci, p int) {
	cl := &w.cls()[ci]
	last := len(cl.ids) - 1
	if p != last {
		moved := cl.ids[last]
		cl.ids[p] = moved
		w.setPos(moved, int32(p))
	}
	cl.ids = cl.ids[:last]
	w.tracked--
	if last == 0 {
		w.nonEmpty[ci>>6] &^= 1 << (ci & 63)
		cl.hasBound, cl.stale = false, false
		w.dirty = true // the next class down becomes the top: settle freshens its bound
		if cap(cl.ids) > 1024 {
			cl.ids = nil
		}
	}
}

// topClass is the highest non-empty class, or -1.
func (w *window) topClass() int {
	for i := len(w.nonEmpty) - 1; i >= 0; i-- {
		if x := w.nonEmpty[i]; x != 0 {
			return i*64 + bits.Len64(x) - 1
		}
	}
	return -1
}

// freshenTop recomputes the top class's bound if it is stale. It runs on the
// apply goroutine (settle, refill); readers rely on it having run.
func (w *window) freshenTop() {
	ci := w.topClass()
	if ci < 0 || !w.cls()[ci].stale {
		return
	}
	cl := &w.cls()[ci]
	best := cl.ids[0]
	for _, id := range cl.ids[1:] {
		if w.rankAbove(id, best) {
			best = id
		}
	}
	cl.hasBound, cl.stale, cl.bCount, cl.bItem = true, false, w.cnt(best), w.items.get(int(best))
}

// outsideBound returns an upper bound on the rank of every item outside the
// heap. The top class's bound is fresh after settle.
// With no kept class, untracked items are bounded by the count below the
// floor's and the smallest string, which no item ranks above.
func (w *window) outsideBound() (c int64, item string, ok bool) {
	ci := w.topClass()
	if ci < 0 {
		if w.untracked() > 0 {
			return classLow(w.floor) - 1, "", true
		}
		return 0, "", false
	}
	cl := &w.cls()[ci]
	return cl.bCount, cl.bItem, true
}

// nodeAboveBound is aboveBound for a heap node, with the bound's key
// precomputed: certain, certainCount and refill compare every heap member
// with one bound, mostly on ties of small counts.
func (w *window) nodeAboveBound(nd hnode, bc int64, bk pkey, bItem string) bool {
	if above, ok := aboveByKey(nd.count, nd.key, bc, bk); ok {
		return above
	}
	return w.items.get(int(nd.id)) < bItem
}

// aboveBound reports whether (c, id) ranks above the bound (bc, bItem).
func (w *window) aboveBound(c int64, id uint32, bc int64, bItem string) bool {
	if c != bc {
		return c > bc
	}
	return w.items.get(int(id)) < bItem
}

// topNodes returns the k best certain heap members, unordered. It selects
// over heap positions, so the nodes themselves (32 bytes) are neither copied
// for every member nor swapped.
func (w *window) topNodes(k int) []hnode {
	bc, bItem, ok := w.outsideBound()
	bk := prefixKey(bItem)
	pos := make([]uint32, 0, len(w.heap))
	for i, nd := range w.heap {
		if !ok || w.nodeAboveBound(nd, bc, bk, bItem) {
			pos = append(pos, uint32(i))
		}
	}
	if len(pos) > k {
		selectPos(pos, k, w.heap, w)
		pos = pos[:k]
	}
	out := make([]hnode, len(pos))
	for i, p := range pos {
		out[i] = w.heap[p]
	}
	return out
}

// selectPos partially orders positions in nodes so the k best nodes come
// first (quickselect; median-of-three pivots keep adversarial orders
// linear in practice). Moving 4-byte positions, not 32-byte nodes.
func selectPos(pos []uint32, k int, nodes []hnode, w *window) {
	above := func(a, b uint32) bool { return w.nodeAbove(nodes[a], nodes[b]) }
	lo, hi := 0, len(pos)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if above(pos[mid], pos[lo]) {
			pos[mid], pos[lo] = pos[lo], pos[mid]
		}
		if above(pos[hi], pos[lo]) {
			pos[hi], pos[lo] = pos[lo], pos[hi]
		}
		if above(pos[mid], pos[hi]) {
			pos[mid], pos[hi] = pos[hi], pos[mid]
		}
		pivot := pos[hi]
		i := lo
		for j := lo; j < hi; j++ {
			if above(pos[j], pivot) {
				pos[i], pos[j] = pos[j], pos[i]
				i++
			}
		}
		pos[i], pos[hi] = pos[hi], pos[i]
		switch {
		case i == k-1 || i == k:
			return
		case i < k:
			lo = i + 1
		default:
			hi = i - 1
		}
	}
}

// certainAtLeast reports certainCount() >= target without scanning the whole
// heap. A parent never ranks above its children, so the members at or below
// the outside bound (the uncertain ones) form a subtree at the root: a walk
// of that subtree counts them and stops once too many are found. Between
// refills that subtree is a fraction of the heap, and settle runs after
// every applied batch, so at low ingest rates the full scan was a fifth of
// apply.
func (w *window) certainAtLeast(target int) bool {
	bc, bItem, ok := w.outsideBound()
	if !ok {
		return len(w.heap) >= target
	}
	bk := prefixKey(bItem)
	allowed := len(w.heap) - target // uncertain members that still leave target certain ones
	if allowed < 0 {
		return false
	}
	// The walk pushes right then left children, so the stack holds at most
	// one pending sibling per level plus the node at hand: 64 levels is more
	// than any heap can have.
	var stack [64]int
	sp := 0
	if len(w.heap) > 0 {
		stack[0], sp = 0, 1
	}
	for sp > 0 {
		sp--
		i := stack[sp]
		if w.nodeAboveBound(w.heap[i], bc, bk, bItem) {
			continue
		}
		if allowed--; allowed < 0 {
			return false
		}
		if r := 2*i + 2; r < len(w.heap) {
			stack[sp] = r
			sp++
		}
		if l := 2*i + 1; l < len(w.heap) {
			stack[sp] = l
			sp++
		}
	}
	return true
}

// settle restores the invariant that at least min(K_max, positive) heap
// members are certain. It runs once per applied batch, on the apply goroutine.
func (w *window) settle() {
	if !w.dirty {
		return
	}
	w.dirty = false
	if keep := w.keepTracked(); w.tracked > 4*keep {
		w.raiseFloor(keep)
	}
	w.freshenTop()
	target := min(w.kmax, w.positive)
	if _, _, ok := w.outsideBound(); !ok || w.certainAtLeast(target) {
		return
	}
	w.refill()
}

// raiseFloor drops the kept classes below the highest ones that hold at
// least keep members. Their members become untracked where they are,
// their records untouched: add reads a position as a class slot only for
// counts at or above the floor.
func (w *window) raiseFloor(keep int) {
	var sizes [numClasses]int
	top := w.topClass()
	for ci := w.floor; ci <= top; ci++ {
		sizes[ci] = len(w.cls()[ci].ids)
	}
	nf, _ := floorKeeping(&sizes, top, 0, keep)
	if nf <= w.floor {
		return
	}
	for ci := w.floor; ci < nf; ci++ {
		cl := &w.cls()[ci]
		w.tracked -= len(cl.ids)
		*cl = class{}
		w.nonEmpty[ci>>6] &^= 1 << (ci & 63)
	}
	w.floor = nf
}

// floorKeeping adds the sizes of the classes from `from` down to n and
// returns the first class at which n reaches keep (0 if none), and n.
func floorKeeping(sizes *[numClasses]int, from, n, keep int) (int, int) {
	for ci := from; ci > 0; ci-- {
		if n += sizes[ci]; n >= keep {
			return ci, n
		}
	}
	return 0, n
}

// lowerFloor brings untracked items back into their classes, down to the
// highest floor that keeps keepTracked members, by two scans of the
// records. It reports whether any item came back.
func (w *window) lowerFloor() bool {
	var sizes [numClasses]int
	for i := range w.rec.n {
		id := uint32(i)
		if c := w.cnt(id); c > 0 && w.posOf(id) > -2 {
			if ci := classOf(c); ci < w.floor {
				sizes[ci]++
			}
		}
	}
	if !w.bringBack(&sizes) {
		return false
	}
	w.lowered++
	return true
}

// bringBack lowers the floor to the highest class that keeps keepTracked
// members, given sizes, the untracked items per class below the floor,
// and appends those items to their classes in id order (one scan of the
// records). It reports whether any item came back.
func (w *window) bringBack(sizes *[numClasses]int) bool {
	nf, n := floorKeeping(sizes, w.floor-1, w.tracked, w.keepTracked())
	if n == w.tracked {
		return false
	}
	for ci := nf; ci < w.floor; ci++ {
		if sizes[ci] > 0 {
			w.cls()[ci].ids = make([]uint32, 0, sizes[ci])
		}
	}
	for i := range w.rec.n {
		id := uint32(i)
		c := w.cnt(id)
		if c <= 0 || w.posOf(id) <= -2 {
			continue
		}
		if ci := classOf(c); ci >= nf && ci < w.floor {
			cl := &w.cls()[ci]
			w.setPos(id, int32(len(cl.ids)))
			cl.ids = append(cl.ids, id)
			cl.stale = true
			w.nonEmpty[ci>>6] |= 1 << (ci & 63)
			w.tracked++
		}
	}
	w.floor = nf
	return true
}

func (w *window) refill() {
	// Evict the uncertain members; afterwards every heap member outranks every outsider.
	w.freshenTop()
	bc, bItem, ok := w.outsideBound()
	bk := prefixKey(bItem)
	if ok {
		kept := w.heap[:0]
		var evict []hnode
		for _, nd := range w.heap {
			if w.nodeAboveBound(nd, bc, bk, bItem) {
				kept = append(kept, nd)
			} else {
				evict = append(evict, nd)
			}
		}
		w.heap = kept
		for _, nd := range evict {
			w.park(nd.id, nd.count)
		}
	}
	// Pull the best outsiders in, one class at a time from the top.
	for len(w.heap) < w.capacity {
		ci := w.topClass()
		if ci < 0 {
			if w.untracked() > 0 && w.lowerFloor() {
				continue
			}
			break
		}
		cl := &w.cls()[ci]
		room := w.capacity - len(w.heap)
		if len(cl.ids) <= room {
			ids := cl.ids
			cl.ids = nil
			cl.hasBound, cl.stale = false, false
			w.tracked -= len(ids)
			w.nonEmpty[ci>>6] &^= 1 << (ci & 63)
			for _, id := range ids {
				w.heap = append(w.heap, w.node(id))
			}
			continue
		}
		w.takeBest(ci, room)
		break
	}
	for i, nd := range w.heap {
		w.setPos(nd.id, int32(-(i + 2)))
	}
	for i := len(w.heap)/2 - 1; i >= 0; i-- {
		w.siftDown(i)
	}
	w.freshenTop()
	w.dirty = false
}

// takeBest moves the n best members of class ci to the heap and tightens the
// class bound to the best member left behind. Quickselect keeps it linear in
// the class size: large classes are ties of small counts. It selects over
// heap nodes (count and key prefix loaded once per member) rather than ids:
// ranking ids loads two records, and on ties two strings, per comparison,
// which made restoring a class of a million count-1 items take seconds.
func (w *window) takeBest(ci, n int) {
	cl := &w.cls()[ci]
	nodes := make([]hnode, len(cl.ids))
	pos := make([]uint32, len(cl.ids))
	for i, id := range cl.ids {
		nodes[i], pos[i] = w.node(id), uint32(i)
	}
	selectPos(pos, n, nodes, w)
	for _, p := range pos[:n] {
		w.heap = append(w.heap, nodes[p])
	}
	best := pos[n]
	for _, p := range pos[n+1:] {
		if w.nodeAbove(nodes[p], nodes[best]) {
			best = p
		}
	}
	w.tracked -= n
	rest := cl.ids[:0]
	for _, p := range pos[n:] {
		rest = append(rest, nodes[p].id)
	}
	cl.ids = rest
	for i, id := range rest {
		w.setPos(id, int32(i))
	}
	b := nodes[best]
	cl.hasBound, cl.stale, cl.bCount, cl.bItem = true, false, b.count, w.items.get(int(b.id))
}

// ---- indexed min-heap by rank ----

// heapPush adds id, whose count is already set, to the heap.
func (w *window) heapPush(id uint32) {
	w.heap = append(w.heap, w.node(id))
	i := len(w.heap) - 1
	w.setPos(id, int32(-(i + 2)))
	w.siftUp(i)
}

func (w *window) heapRemove(i int) {
	last := len(w.heap) - 1
	if i != last {
		w.swap(i, last)
	}
	w.heap = w.heap[:last]
	if i != last {
		w.siftDown(i)
		w.siftUp(i)
	}
}

func (w *window) swap(i, j int) {
	h := w.heap
	h[i], h[j] = h[j], h[i]
	w.setPos(h[i].id, int32(-(i + 2)))
	w.setPos(h[j].id, int32(-(j + 2)))
}

// below reports whether heap[i] ranks below heap[j] (min-heap order).
func (w *window) below(i, j int) bool { return w.nodeAbove(w.heap[j], w.heap[i]) }

func (w *window) siftUp(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !w.below(i, p) {
			return
		}
		w.swap(i, p)
		i = p
	}
}

func (w *window) siftDown(i int) {
	n := len(w.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && w.below(r, l) {
			m = r
		}
		if !w.below(m, i) {
			return
		}
		w.swap(i, m)
		i = m
	}
}

// ---- buckets (sliding windows) ----

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// bucketFor finds or creates the bucket with the given index.
func (w *window) bucketFor(idx int64) *bucket {
	i := len(w.buckets)
	for i > 0 && w.buckets[i-1].index > idx {
		i--
	}
	if i > 0 && w.buckets[i-1].index == idx {
		return w.buckets[i-1]
	}
	b := &bucket{index: idx}
	if i == len(w.buckets) {
		w.fastGen++ // the newest bucket: entries found through the records
		b.gen = w.fastGen
	}
	w.buckets = slices.Insert(w.buckets, i, b)
	return b
}

// addToBucket records delta for id in bucket b. It reports whether the
// item gained a new bucket entry (a reference the exact board tracks).
func (w *window) addToBucket(b *bucket, id uint32, delta int64) bool {
	w.add(id, delta)
	if b.gen != 0 && b.gen == w.fastGen {
		if g, s := w.newestSlot(id); g == b.gen && s < b.ids.len() {
			b.deltas.set(s, b.deltas.get(s)+delta)
			return false
		}
		w.setNewestSlot(id, b.gen, b.ids.append(id))
		b.deltas.append(delta)
		return true
	}
	if b.slot == nil {
		b.slot = make(map[uint32]int32, b.ids.len())
		for i := range b.ids.len() {
			b.slot[b.ids.get(i)] = int32(i)
		}
	}
	if s, ok := b.slot[id]; ok {
		b.deltas.set(int(s), b.deltas.get(int(s))+delta)
		return false
	}
	b.slot[id] = int32(b.ids.append(id))
	b.deltas.append(delta)
	return true
}

// expire drops buckets that fell out of the window, subtracting their
// counts; release is called once per dropped entry, in canonical order.
func (w *window) expire(clockMs int64, release func(id uint32), pf bool) {
	start := w.startIndex(clockMs)
	n := 0
	for n < len(w.buckets) && w.buckets[n].index < start {
		b := w.buckets[n]
		m := b.ids.len()
		for lo := 0; lo < m; lo += expireBlock {
			hi := min(m, lo+expireBlock)
			for i := lo; pf && i < hi; i++ {
				w.rec.prefetch(b.ids.get(i))
			}
			for i := lo; i < hi; i++ {
				id := b.ids.get(i)
				w.add(id, -b.deltas.get(i))
				release(id)
			}
		}
		w.buckets[n] = nil
		n++
	}
	if n > 0 {
		w.buckets = slices.Delete(w.buckets, 0, n)
	}
}

// expireBlock is how many entries expiry prefetches the records of before
// it subtracts them. Blocks of 64-128 measured 1.09x faster at 10M items
// than prefetching 16 entries ahead of the loop (DESIGN.md). Class slots
// are not prefetched: with the class floor most expiring items are in no
// class, and reading the record to find out stalled the loop.
const expireBlock = 128

// recAhead is how many entries ahead a restore's loops prefetch records.
const recAhead = 16

// adoptNewest makes a restored window's newest bucket the fast one: its
// entries are found through the records, not a map built on first use. The
// log replayed after a restore lands mostly in that bucket, and building and
// probing a map of its (up to millions of) entries dominated a restart.
func (w *window) adoptNewest() {
	n := len(w.buckets)
	if n == 0 {
		return
	}
	b := w.buckets[n-1]
	w.fastGen++
	b.gen, b.slot = w.fastGen, nil
	m := b.ids.len()
	for i := 0; i < m; i++ {
		if j := i + recAhead; j < m {
			w.rec.prefetch(b.ids.get(j))
		}
		w.setNewestSlot(b.ids.get(i), b.gen, i)
	}
}

// resize changes K_max and rebuilds the heap from scratch.
func (w *window) resize(kmax int) {
	for _, nd := range w.heap {
		w.park(nd.id, nd.count)
	}
	w.heap = w.heap[:0]
	w.setKmax(kmax)
	w.refill()
}

// rawAdd changes a count without maintaining classes or heap; restore uses
// it and calls rebuild once all counts are in.
func (w *window) rawAdd(id uint32, d int64) {
	w.setCnt(id, w.cnt(id)+d)
}

// rebuild derives positive, classes and heap from the counts in one pass.
func (w *window) rebuild() {
	w.heap = w.heap[:0]
	w.classes = nil
	w.nonEmpty = [numClasses / 64]uint64{}
	w.positive, w.tracked = 0, 0
	// Size the classes first: growing a class of millions by appends
	// copied it over and over (a seventh of a restart's CPU).
	var sizes [numClasses]int
	for i := range w.rec.n {
		id := uint32(i)
		w.setPos(id, posNone)
		if c := w.cnt(id); c > 0 {
			sizes[classOf(c)]++
			w.positive++
		}
	}
	// Everything starts untracked; bringBack keeps the classes a refill
	// needs (keepTracked, which depends on positive).
	w.floor = numClasses
	if !w.bringBack(&sizes) {
		w.floor = 0
	}
	w.refill()
}
