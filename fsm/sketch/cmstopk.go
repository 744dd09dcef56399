package sketch

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Candidate is one item of a CMSTopK heap.
type Candidate struct {
	Item  string
	Est   uint64 // sketch estimate when last updated (ranking key of the heap)
	Lower uint64 // exact weight added while a candidate: a deterministic lower bound
}

// CMSTopK is a Count-Min sketch plus at most k candidates in an indexed
// min-heap by (Est asc, item desc). Unlike the textbook design it also keeps
// Bound, the largest estimate any item had when it was refused or evicted:
// an item outside the heap received nothing since then, so its true count
// is at most Bound. With Lower per candidate this makes Top's answers
// carry deterministic bounds.
type CMSTopK struct {
	k     int
	sk    *CountMin
	bound uint64
	r     ranked // count = Est, aux = Lower
}

// NewCMSTopK returns an empty structure with a fresh sketch (see
// NewCountMin for the clamping of width and depth). A k below 1 is raised
// to 1.
func NewCMSTopK(k, width, depth int, seed uint64) *CMSTopK {
	return &CMSTopK{k: max(k, 1), sk: NewCountMin(width, depth, seed), r: newRanked(max(k, 1))}
}

// K is the maximum number of candidates.
func (t *CMSTopK) K() int { return t.k }

// Add counts w occurrences of item. A zero weight is a no-op.
func (t *CMSTopK) Add(item string, w uint64) {
	t.AddAt(item, t.sk.locateHash(xxhash.Sum64String(item)), w)
}

// AddAt is Add with the item's location from Locate on a sketch of the
// same shape and seed, which callers feeding several sketches compute once.
func (t *CMSTopK) AddAt(item string, l Loc, w uint64) {
	if w == 0 {
		return
	}
	h := l.h // one hash for the sketch and the index
	est := t.sk.addLoc(l, w)
	id, ok := t.r.findForAddHashed(item, h)
	if ok {
		sl := &t.r.slots[id]
		sl.aux += w
		p := int(sl.pos)
		t.r.nodes[p].count = est
		t.r.fix(p) // est only grows unless the caller subtracts from the sketch
		return
	}
	if t.r.len() < t.k {
		t.r.push(item, h, est, w)
		return
	}
	root := t.r.nodes[0]
	victim := &t.r.slots[root.id]
	if better(est, item, root.count, victim.item) {
		t.bound = max(t.bound, t.sk.EstimateAt(t.sk.locateHash(victim.hash)))
		t.r.replaceRoot(item, h, est, w)
		return
	}
	t.bound = max(t.bound, est)
}

// Bound is an upper bound on the true count of any item that is not a
// candidate.
func (t *CMSTopK) Bound() uint64 { return t.bound }

// Sketch is the underlying Count-Min sketch. Subtracting from it breaks
// Candidate.Lower as a lower bound (see DESIGN.md).
func (t *CMSTopK) Sketch() *CountMin { return t.sk }

// current returns the candidate in slot id with its current estimate.
func (t *CMSTopK) current(id int32) Counter {
	sl := &t.r.slots[id]
	est := t.sk.EstimateAt(t.sk.locateHash(sl.hash))
	return Counter{Item: sl.item, Count: est, Err: est - min(sl.aux, est)}
}

// Top ranks the candidates by their current sketch estimate and returns
// the best k: Count is the estimate (an upper bound), Count-Err the exact
// weight added while a candidate (a lower bound).
func (t *CMSTopK) Top(k int) []Counter {
	b := newBestK(k, t.r.len())
	for _, nd := range t.r.nodes {
		c := t.current(nd.id)
		b.offer(c.Count, c.Item, c.Err)
	}
	return b.sorted()
}

// Result answers a top-k query: Rest bounds both the non-candidates
// (Bound) and the candidates ranked below k by current estimate.
func (t *CMSTopK) Result(k int) Result {
	k = max(k, 0)
	cs := t.Top(k + 1)
	rest := t.bound
	if len(cs) > k {
		rest = max(rest, cs[k].Count)
		cs = cs[:k]
	}
	return Result{Items: cs, Rest: rest}
}

// Lookup returns a candidate as Top would, with true. Any other item gets
// its sketch estimate as Count and a zero lower bound, with false.
func (t *CMSTopK) Lookup(item string) (Counter, bool) {
	if id, ok := t.r.find(item); ok {
		return t.current(id), true
	}
	est := t.sk.Estimate(item)
	return Counter{Item: item, Count: est, Err: est}, false
}

// Candidates returns the candidates sorted by item: the canonical form for
// snapshots.
func (t *CMSTopK) Candidates() []Candidate {
	cs := make([]Candidate, len(t.r.slots))
	for i := range t.r.slots {
		sl := &t.r.slots[i]
		cs[i] = Candidate{Item: sl.item, Est: t.r.nodes[sl.pos].count, Lower: sl.aux}
	}
	slices.SortFunc(cs, func(a, b Candidate) int { return strings.Compare(a.Item, b.Item) })
	return cs
}

// Clone returns an independent deep copy, sketch included.
func (t *CMSTopK) Clone() *CMSTopK {
	return &CMSTopK{k: t.k, sk: t.sk.Clone(), bound: t.bound, r: t.r.clone()}
}

// Bytes estimates the heap bytes held, sketch included.
func (t *CMSTopK) Bytes() int {
	return int(unsafe.Sizeof(*t)) + t.sk.Bytes() + t.r.bytes()
}

// RestoreCMSTopK rebuilds the structure around sk, which it takes over
// (restore it with RestoreCountMin). It rejects k < 1, a nil sketch, more
// than k candidates, duplicate items and Lower > Est. The candidates may
// come in any order: the heap order depends only on (Est, item).
func RestoreCMSTopK(k int, sk *CountMin, bound uint64, cs []Candidate) (*CMSTopK, error) {
	if k < 1 {
		return nil, fmt.Errorf("restore cms top-k: k %d < 1: %w", k, ErrInvalid)
	}
	if sk == nil {
		return nil, fmt.Errorf("restore cms top-k: nil sketch: %w", ErrInvalid)
	}
	if len(cs) > k {
		return nil, fmt.Errorf("restore cms top-k: %d candidates > k %d: %w", len(cs), k, ErrInvalid)
	}
	seen := make(map[string]struct{}, len(cs))
	for i, c := range cs {
		if c.Lower > c.Est {
			return nil, fmt.Errorf("restore cms top-k: candidate %d %q: lower %d > est %d: %w", i, c.Item, c.Lower, c.Est, ErrInvalid)
		}
		if _, dup := seen[c.Item]; dup {
			return nil, fmt.Errorf("restore cms top-k: candidate %d: duplicate item %q: %w", i, c.Item, ErrInvalid)
		}
		seen[c.Item] = struct{}{}
	}
	t := &CMSTopK{k: k, sk: sk, bound: bound, r: newRanked(k)}
	t.r.build(len(cs), func(i int) (string, uint64, uint64) {
		return strings.Clone(cs[i].Item), cs[i].Est, cs[i].Lower
	})
	return t, nil
}
