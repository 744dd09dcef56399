package sketch

import (
	"errors"
	"slices"
	"strings"
)

// ErrInvalid marks restore input that no sequence of operations could have
// produced (a corrupt or foreign snapshot).
var ErrInvalid = errors.New("invalid sketch state")

// ErrMismatch marks a Count-Min merge or subtraction between sketches of
// different shape or seed, or a subtraction that would go below zero.
var ErrMismatch = errors.New("count-min sketches do not match")

// Counter is one monitored item with its bounds.
type Counter struct {
	Item  string
	Count uint64 // upper bound on the true count (the estimate)
	Err   uint64 // Count-Err is a lower bound on the true count
}

// Lower is the lower bound on the item's true count.
func (c Counter) Lower() uint64 {
	if c.Err > c.Count {
		return 0
	}
	return c.Count - c.Err
}

// better reports whether (ca, ia) ranks strictly before (cb, ib) in the
// total order: count desc, then item asc. Items are distinct within every
// structure, so this is a strict total order there.
func better(ca uint64, ia string, cb uint64, ib string) bool {
	return ca > cb || (ca == cb && ia < ib)
}

// cmpCounters sorts best first.
func cmpCounters(a, b Counter) int {
	switch {
	case a.Count > b.Count:
		return -1
	case a.Count < b.Count:
		return 1
	}
	return strings.Compare(a.Item, b.Item)
}

// partitionBest reorders cs so that cs[:k] holds the best k counters by the
// total order (in no particular order) and returns the largest Count among
// cs[k:] (0 if there is none). Quickselect with a median-of-three pivot; the
// result is fixed by the total order, not by the input order.
func partitionBest(cs []Counter, k int) uint64 {
	if k >= len(cs) {
		return 0
	}
	if k <= 0 {
		var m uint64
		for _, c := range cs {
			m = max(m, c.Count)
		}
		return m
	}
	lo, hi := 0, len(cs) // select within cs[lo:hi]; the answer boundary k is inside
	budget := 2 * bitsLen(len(cs))
	for hi-lo > 16 {
		if budget == 0 {
			slices.SortFunc(cs[lo:hi], cmpCounters)
			break
		}
		budget--
		p := pivot(cs, lo, hi)
		switch {
		case p == k:
			lo, hi = k, k
		case p < k:
			lo = p + 1
		default:
			hi = p
		}
	}
	if hi-lo > 1 {
		slices.SortFunc(cs[lo:hi], cmpCounters)
	}
	var m uint64
	for _, c := range cs[k:] {
		m = max(m, c.Count)
	}
	return m
}

// pivot partitions cs[lo:hi] around a median-of-three pivot (best first) and
// returns the pivot's final index.
func pivot(cs []Counter, lo, hi int) int {
	mid := lo + (hi-lo)/2
	last := hi - 1
	if cmpCounters(cs[mid], cs[lo]) < 0 {
		cs[mid], cs[lo] = cs[lo], cs[mid]
	}
	if cmpCounters(cs[last], cs[lo]) < 0 {
		cs[last], cs[lo] = cs[lo], cs[last]
	}
	if cmpCounters(cs[last], cs[mid]) < 0 {
		cs[last], cs[mid] = cs[mid], cs[last]
	}
	// Median now at mid; park it at last.
	cs[mid], cs[last] = cs[last], cs[mid]
	pv := cs[last]
	i := lo
	for j := lo; j < last; j++ {
		if cmpCounters(cs[j], pv) < 0 {
			cs[i], cs[j] = cs[j], cs[i]
			i++
		}
	}
	cs[i], cs[last] = cs[last], cs[i]
	return i
}

func bitsLen(n int) int {
	b := 0
	for n > 0 {
		b++
		n >>= 1
	}
	return b
}

// topOf returns the best k of cs sorted by the total order. It reorders cs.
func topOf(cs []Counter, k int) []Counter {
	k = max(k, 0)
	if k < len(cs) {
		partitionBest(cs, k)
		cs = cs[:k]
	}
	slices.SortFunc(cs, cmpCounters)
	return cs
}

// bestK collects the best k of the counters offered to it: a min-heap by
// the total order whose root is the worst kept counter, so most offers are
// rejected after one comparison and nothing is allocated for them.
type bestK struct {
	k int
	h []Counter
}

func newBestK(k, n int) *bestK {
	k = max(k, 0)
	return &bestK{k: k, h: make([]Counter, 0, min(k, n))}
}

func (b *bestK) offer(count uint64, item string, err uint64) {
	if len(b.h) < b.k {
		b.h = append(b.h, Counter{Item: item, Count: count, Err: err})
		// Sift up: a parent must not rank before its child.
		i := len(b.h) - 1
		for i > 0 {
			p := (i - 1) / 2
			if !better(b.h[p].Count, b.h[p].Item, b.h[i].Count, b.h[i].Item) {
				break
			}
			b.h[p], b.h[i] = b.h[i], b.h[p]
			i = p
		}
		return
	}
	if b.k == 0 || !better(count, item, b.h[0].Count, b.h[0].Item) {
		return
	}
	b.h[0] = Counter{Item: item, Count: count, Err: err}
	n := len(b.h)
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && better(b.h[c].Count, b.h[c].Item, b.h[r].Count, b.h[r].Item) {
			c = r
		}
		if !better(b.h[i].Count, b.h[i].Item, b.h[c].Count, b.h[c].Item) {
			break
		}
		b.h[i], b.h[c] = b.h[c], b.h[i]
		i = c
	}
}

// sorted returns the kept counters best first.
func (b *bestK) sorted() []Counter {
	slices.SortFunc(b.h, cmpCounters)
	return b.h
}
