package fsm

import "fmt"

// Invariants of the derived structures, next to the data they describe: the
// model test checks them after every batch, so a layout change is written
// once, here.

// check checks every leaderboard's records and windows.
func (st *state) check() error {
	for _, name := range st.sortedBoards() {
		if err := st.boards[name].counts.check(); err != nil {
			return fmt.Errorf("leaderboard %q: %w", name, err)
		}
	}
	return nil
}

// check checks the records, then every window.
func (e *exactBoard) check() error {
	if err := e.checkRecords(); err != nil {
		return err
	}
	for wi, w := range append([]*window{e.all}, e.wins...) {
		if w.dirty {
			return fmt.Errorf("window %d is dirty after a batch", wi-1)
		}
		if err := w.check(); err != nil {
			return fmt.Errorf("window %d: %w", wi-1, err)
		}
	}
	return nil
}

// checkRecords checks the records against the canonical state: the
// all-time copy against the snapshotted counts plus the journal, the reference counts
// against the bucket entries, and every newest-bucket slot that claims an
// entry.
func (e *exactBoard) checkRecords() error {
	if e.recs.n != e.items.len() || e.allCounts.len() != e.items.len() {
		return fmt.Errorf("%d records, %d all-time counts, %d item slots", e.recs.n, e.allCounts.len(), e.items.len())
	}
	unfolded := map[uint32]int64{}
	for k, id := range e.allLog.ids {
		unfolded[id] += e.allLog.deltas[k]
	}
	refs := make([]uint32, e.recs.n)
	for _, w := range e.wins {
		for _, b := range w.buckets {
			for i := range b.ids.len() {
				refs[b.ids.get(i)]++
			}
		}
		if n := len(w.buckets); n > 0 && w.buckets[n-1].gen == w.fastGen && w.fastGen != 0 {
			b := w.buckets[n-1]
			for i := range b.ids.len() {
				id := b.ids.get(i)
				if g, s := w.newestSlot(id); g != b.gen || s != i {
					return fmt.Errorf("id %d: newest-bucket record (%d, %d), entry %d of generation %d", id, g, s, i, b.gen)
				}
			}
		}
	}
	for i := range e.recs.n {
		id := uint32(i)
		// The converse: a record naming the generation of a live newest
		// bucket is that bucket's entry (addToBucket trusts it without a
		// look at the ids). Records naming an expired bucket's generation
		// stay behind; no later bucket gets that generation.
		for wi, w := range e.wins {
			g, s := w.newestSlot(id)
			n := len(w.buckets)
			if g == 0 || n == 0 || w.buckets[n-1].gen != g {
				continue
			}
			if s >= w.buckets[n-1].ids.len() || w.buckets[n-1].ids.get(s) != id {
				return fmt.Errorf("window %d: id %d's record names generation %d slot %d, not its entry", wi, id, g, s)
			}
		}
		if a, c := e.all.cnt(id), e.allCounts.get(i)+unfolded[id]; a != c {
			return fmt.Errorf("id %d: record all-time count %d, canonical %d (%d unfolded)", id, a, c, unfolded[id])
		}
		if r := e.recs.refs(id); r != refs[i] {
			return fmt.Errorf("id %d: %d references recorded, %d bucket entries", id, r, refs[i])
		}
	}
	return nil
}

// check checks the window's derived structures against its counts: heap
// positions and nodes, the count classes, their bounds and non-empty
// bits, the untracked and positive counts, and that the heap holds at
// least min(k_max, positive) members certain to rank above every other
// item.
func (w *window) check() error {
	positive, untracked := 0, 0
	for i := 0; i < w.rec.n; i++ {
		id := uint32(i)
		c := w.cnt(id)
		if c > 0 {
			positive++
		}
		switch p := w.posOf(id); {
		case p <= -2:
			hi := int(-(p + 2))
			if hi >= len(w.heap) || w.heap[hi].id != id || c <= 0 {
				return fmt.Errorf("id %d (count %d): bad heap position %d", id, c, hi)
			}
			if nd := w.heap[hi]; nd.count != c || nd.key != prefixKey(w.items.get(i)) {
				return fmt.Errorf("id %d (count %d): heap node %+v out of date", id, c, nd)
			}
		case p >= 0:
			if c <= 0 {
				return fmt.Errorf("id %d with count %d sits in a class", id, c)
			}
			if classOf(c) < w.floor {
				untracked++ // a stale position below the floor
				continue
			}
			if w.classes == nil {
				return fmt.Errorf("id %d (count %d): class slot %d, but no classes", id, c, p)
			}
			cl := &w.classes[classOf(c)]
			if int(p) >= len(cl.ids) || cl.ids[p] != id {
				return fmt.Errorf("id %d (count %d): bad class slot %d", id, c, p)
			}
		default:
			if c > 0 && classOf(c) >= w.floor {
				return fmt.Errorf("id %d with count %d (class %d, floor %d) is neither in the heap nor in a class", id, c, classOf(c), w.floor)
			}
			if c > 0 {
				untracked++
			}
		}
	}
	if positive != w.positive {
		return fmt.Errorf("positive %d, want %d", w.positive, positive)
	}
	if untracked != w.untracked() {
		return fmt.Errorf("%d untracked items, the window counts %d", untracked, w.untracked())
	}
	var classes [numClasses]class
	if w.classes != nil {
		classes = *w.classes
	}
	members := 0
	for ci := range classes {
		if n := len(classes[ci].ids); n > 0 && ci < w.floor {
			return fmt.Errorf("class %d below the floor %d holds %d members", ci, w.floor, n)
		}
		members += len(classes[ci].ids)
	}
	if members != w.tracked {
		return fmt.Errorf("classes hold %d members, the window counts %d", members, w.tracked)
	}
	if len(w.heap) > w.capacity {
		return fmt.Errorf("heap of %d exceeds capacity %d", len(w.heap), w.capacity)
	}
	for i := 1; i < len(w.heap); i++ {
		if w.below(i, (i-1)/2) {
			return fmt.Errorf("heap order broken at %d", i)
		}
	}
	for ci := range classes {
		cl := &classes[ci]
		nonEmpty := w.nonEmpty[ci>>6]&(1<<(ci&63)) != 0
		if nonEmpty != (len(cl.ids) > 0) {
			return fmt.Errorf("class %d: non-empty bit %v with %d members", ci, nonEmpty, len(cl.ids))
		}
		if cl.stale {
			if ci == w.topClass() {
				return fmt.Errorf("top class %d has a stale bound after settle", ci)
			}
			for _, id := range cl.ids {
				if c := w.cnt(id); classOf(c) != ci {
					return fmt.Errorf("id %d with count %d sits in class %d", id, c, ci)
				}
			}
			continue
		}
		if len(cl.ids) > 0 && !cl.hasBound {
			return fmt.Errorf("class %d has members but no bound", ci)
		}
		for _, id := range cl.ids {
			c := w.cnt(id)
			if classOf(c) != ci {
				return fmt.Errorf("id %d with count %d sits in class %d", id, c, ci)
			}
			if w.aboveBound(c, id, cl.bCount, cl.bItem) {
				return fmt.Errorf("class %d: member %q (%d) ranks above the class bound", ci, w.items.get(int(id)), c)
			}
		}
	}
	if got, want := w.certainCount(), min(w.kmax, w.positive); got < want {
		return fmt.Errorf("%d certain heap members, want >= %d", got, want)
	}
	return nil
}

// certainCount is how many heap members rank above every item outside
// the heap (the model test's invariants).
func (w *window) certainCount() int {
	bc, bItem, ok := w.outsideBound()
	bk := prefixKey(bItem)
	if !ok {
		return len(w.heap)
	}
	n := 0
	for _, nd := range w.heap {
		if w.nodeAboveBound(nd, bc, bk, bItem) {
			n++
		}
	}
	return n
}
