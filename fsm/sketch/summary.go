package sketch

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Summary is a Space-Saving summary of at most Capacity counters (Metwally
// et al. 2005) in its mergeable form (Agarwal et al. 2012): a map from item
// to slot and an indexed min-heap by the total order, so Add is O(log m)
// and the eviction victim is fixed by the counters alone, never by layout.
type Summary struct {
	capacity int
	total    uint64
	floor    uint64
	// filter, when present, bounds unmonitored items per cell (filtered
	// Space-Saving, Homem & Carvalho 2010): an item is admitted only once
	// its cell's bound plus its weight beats the minimum counter, so the
	// tail stops churning the counters. floor is then the largest cell.
	// The cells are allocated on first use: until then all are zero, and
	// a bucket's summary that never fills costs nothing for them.
	cells  int
	filter cellArray
	r      ranked
}

// FilterCellsPerCounter is how many filter cells a new spacesaving
// leaderboard gives each counter (fsm.FillNewDefaults), about 40% of the
// memory with 32-bit cells. At 32 KB on the flights routes, 8 cells reach
// top-100 precision 0.85 and 16 reach 1.00 (DESIGN.md, "Filtered
// Space-Saving").
const FilterCellsPerCounter = 16

// NewFilteredSummary returns an empty summary with a filter of cells cells
// (0: none, a plain Space-Saving summary).
func NewFilteredSummary(capacity, cells int) *Summary {
	s := NewSummary(capacity)
	s.cells = max(cells, 0)
	return s
}

// Cells is the number of filter cells (0 for a plain summary).
func (s *Summary) Cells() int { return s.cells }

// Filter returns a copy of the filter cells (for snapshots); nil while
// every cell is zero.
func (s *Summary) Filter() []uint64 { return s.filter.values() }

// cell maps an item's hash to its filter cell (multiply-shift of the high half).
func (s *Summary) cell(h uint64) int { return int((h >> 32) * uint64(s.cells) >> 32) }

// cellValue is filter cell c (0 before the filter is allocated).
func (s *Summary) cellValue(c int) uint64 { return s.filter.get(c) }

// setCell writes filter cell c, allocating the filter on first use.
func (s *Summary) setCell(c int, v uint64) {
	s.filter.set(s.cells, c, v)
	s.floor = max(s.floor, v)
}

// bound is the upper bound on an unmonitored item with hash h.
func (s *Summary) bound(h uint64) uint64 {
	if s.cells > 0 {
		return s.cellValue(s.cell(h))
	}
	return s.floor
}

// Unmonitored returns the upper bound on item's true count if it is not
// monitored: its filter cell, or Floor for a plain summary.
func (s *Summary) Unmonitored(item string) uint64 { return s.bound(xxhash.Sum64String(item)) }

// NewSummary returns an empty summary. A capacity below 1 is raised to 1.
func NewSummary(capacity int) *Summary {
	return &Summary{capacity: max(capacity, 1), r: newRanked(max(capacity, 1))}
}

// Capacity is the maximum number of counters.
func (s *Summary) Capacity() int { return s.capacity }

// Len is the number of monitored items.
func (s *Summary) Len() int { return s.r.len() }

// Total is the sum of all weights added, including merged parts.
func (s *Summary) Total() uint64 { return s.total }

// Floor is an upper bound on the true count of any unmonitored item.
func (s *Summary) Floor() uint64 { return s.floor }

// Add counts w occurrences of item. A zero weight is a no-op: it must not
// evict anything. Counts wrap beyond 2^64-1; callers keep Total below that.
func (s *Summary) Add(item string, w uint64) {
	if w == 0 {
		return
	}
	s.total += w
	id, h, ok := s.r.findForAdd(item)
	if ok {
		p := int(s.r.slots[id].pos)
		s.r.nodes[p].count += w
		s.r.down(p)
		return
	}
	if s.cells > 0 {
		s.addFiltered(item, h, w)
		return
	}
	if s.r.len() < s.capacity {
		// Unmonitored items may have up to floor occurrences already.
		s.r.push(item, h, s.floor+w, s.floor)
		return
	}
	m := s.r.nodes[0].count
	s.floor = max(s.floor, m)
	s.r.replaceRoot(item, h, m+w, m)
}

// addFiltered adds an unmonitored item to a filtered summary. Every cell
// stays at or below the minimum counter once the summary is full: it only
// grows to base+w <= min, or to an evicted minimum.
func (s *Summary) addFiltered(item string, h, w uint64) {
	c := s.cell(h)
	base := s.cellValue(c)
	if s.r.len() < s.capacity {
		s.r.push(item, h, base+w, base)
		return
	}
	m := s.r.nodes[0].count
	if base+w <= m {
		s.setCell(c, base+w)
		return
	}
	vc := s.cell(s.r.slots[s.r.nodes[0].id].hash)
	s.setCell(vc, max(s.cellValue(vc), m))
	s.r.replaceRoot(item, h, base+w, base)
}

// Lookup returns the item's counter if it is monitored.
func (s *Summary) Lookup(item string) (Counter, bool) {
	id, ok := s.r.find(item)
	if !ok {
		return Counter{}, false
	}
	return s.counter(id), true
}

func (s *Summary) counter(id int32) Counter {
	sl := &s.r.slots[id]
	return Counter{Item: sl.item, Count: s.r.nodes[sl.pos].count, Err: sl.aux}
}

// Top returns the best k counters by the total order in a new slice.
func (s *Summary) Top(k int) []Counter {
	n := s.r.len()
	k = max(k, 0)
	if k < n/8 {
		// Few wanted: a k-heap over the counters, no copy of them all.
		b := newBestK(k, n)
		for _, nd := range s.r.nodes {
			sl := &s.r.slots[nd.id]
			b.offer(nd.count, sl.item, sl.aux)
		}
		return b.sorted()
	}
	return topOf(s.all(), k)
}

// all returns the counters in no particular order.
func (s *Summary) all() []Counter {
	cs := make([]Counter, len(s.r.nodes))
	for i, nd := range s.r.nodes {
		sl := &s.r.slots[nd.id]
		cs[i] = Counter{Item: sl.item, Count: nd.count, Err: sl.aux}
	}
	return cs
}

// Counters returns all counters in the total order: the canonical form
// that snapshots store and Restore takes.
func (s *Summary) Counters() []Counter {
	cs := s.all()
	slices.SortFunc(cs, cmpCounters)
	return cs
}

// Result answers a top-k query: Rest bounds every item not in Items, both
// the unmonitored ones (Floor) and the monitored ones ranked below k.
func (s *Summary) Result(k int) Result {
	k = max(k, 0)
	cs := s.Top(k + 1)
	rest := s.floor // the largest cell, for a filtered summary
	if len(cs) > k {
		rest = max(rest, cs[k].Count)
		cs = cs[:k]
	}
	return Result{Items: cs, Rest: rest}
}

// Clone returns an independent deep copy.
func (s *Summary) Clone() *Summary {
	return &Summary{capacity: s.capacity, total: s.total, floor: s.floor, cells: s.cells, filter: s.filter.clone(), r: s.r.clone()}
}

// Reset empties the summary, keeping its capacity and allocations.
func (s *Summary) Reset() {
	s.total, s.floor = 0, 0
	s.filter.reset()
	s.r.reset()
}

// Bytes estimates the heap bytes held.
func (s *Summary) Bytes() int {
	return int(unsafe.Sizeof(*s)) + s.filter.bytes() + s.r.bytes()
}

func restore(capacity int, total, floor uint64, cs []Counter) (*Summary, error) {
	if capacity < 1 {
		return nil, fmt.Errorf("restore summary: capacity %d < 1: %w", capacity, ErrInvalid)
	}
	if len(cs) > capacity {
		return nil, fmt.Errorf("restore summary: %d counters > capacity %d: %w", len(cs), capacity, ErrInvalid)
	}
	if floor > total {
		return nil, fmt.Errorf("restore summary: floor %d > total %d: %w", floor, total, ErrInvalid)
	}
	seen := make(map[string]struct{}, len(cs))
	for i, c := range cs {
		switch {
		case c.Err > c.Count:
			return nil, fmt.Errorf("restore summary: counter %d %q: err %d > count %d: %w", i, c.Item, c.Err, c.Count, ErrInvalid)
		case c.Count < floor:
			return nil, fmt.Errorf("restore summary: counter %d %q: count %d < floor %d: %w", i, c.Item, c.Count, floor, ErrInvalid)
		case c.Count > total:
			return nil, fmt.Errorf("restore summary: counter %d %q: count %d > total %d: %w", i, c.Item, c.Count, total, ErrInvalid)
		}
		if _, dup := seen[c.Item]; dup {
			return nil, fmt.Errorf("restore summary: counter %d: duplicate item %q: %w", i, c.Item, ErrInvalid)
		}
		seen[c.Item] = struct{}{}
	}
	s := NewSummary(capacity)
	s.total, s.floor = total, floor
	s.r.build(len(cs), func(i int) (string, uint64, uint64) {
		return strings.Clone(cs[i].Item), cs[i].Count, cs[i].Err
	})
	return s, nil
}

// RestoreFiltered rebuilds a filtered summary of cells cells from Total,
// its filter (empty: all cells zero) and Counters. Floor is the largest
// cell. It rejects duplicates, Err > Count, Count or a cell above total,
// and more counters than capacity.
func RestoreFiltered(capacity, cells int, total uint64, filter []uint64, cs []Counter) (*Summary, error) {
	if cells < 1 || (len(filter) != 0 && len(filter) != cells) {
		return nil, fmt.Errorf("restore summary: %d filter values for %d cells: %w", len(filter), cells, ErrInvalid)
	}
	var floor uint64
	for i, c := range filter {
		if c > total {
			return nil, fmt.Errorf("restore summary: cell %d holds %d > total %d: %w", i, c, total, ErrInvalid)
		}
		floor = max(floor, c)
	}
	s, err := restore(capacity, total, 0, cs)
	if err != nil {
		return nil, err
	}
	s.floor, s.cells = floor, cells
	if len(filter) > 0 {
		s.filter.load(filter)
	}
	return s, nil
}

// Merge combines summaries of disjoint sub-streams into one of the given
// capacity (raised to 1 if lower). An item missing from a part may have up
// to that part's floor there, so it is charged the floor in both Count and
// Err: the upper bound grows, the lower bound does not. The best capacity
// counters by the total order are kept; the floor becomes the larger of the
// parts' floor sum and the largest discarded Count. The result depends only
// on the multiset of parts: Merge(a, b) and Merge(b, a) are identical.
// Nil parts are skipped.
func Merge(capacity int, parts ...*Summary) *Summary {
	capacity = max(capacity, 1)
	if len(parts) > 0 && parts[0] != nil && parts[0].cells > 0 {
		return mergeFiltered(capacity, parts)
	}
	ps := make([]*Summary, 0, len(parts))
	var sumFloor, total uint64
	n := 0
	for _, p := range parts {
		if p != nil {
			ps = append(ps, p)
			sumFloor += p.floor
			total += p.total
			n += p.r.len()
		}
	}
	cs := unionByIndex(ps, sumFloor, n)
	floor := max(sumFloor, partitionBest(cs, capacity))
	cs = cs[:min(len(cs), capacity)]
	s := NewSummary(capacity)
	s.total, s.floor = total, floor
	s.r.build(len(cs), func(i int) (string, uint64, uint64) {
		return cs[i].Item, cs[i].Count, cs[i].Err
	})
	return s
}

// unionByIndex merges parts through one map from item to its sums.
func unionByIndex(ps []*Summary, sumFloor uint64, n int) []Counter {
	// floors: per item, the floors of the parts holding it.
	cs, _, floors := unionSums(ps, n, func(p *Summary, _ *slot) uint64 { return p.floor })
	for k := range cs {
		cs[k].Count += sumFloor - floors[k]
		cs[k].Err += sumFloor - floors[k]
	}
	return cs
}

// unionSums sums each item's Count and Err over the parts holding it, and
// per item held(p, slot) over those parts, through one map from item to
// its sums; hashes are the items' hashes. A part lacking an item is the
// caller's to charge (from the held sums).
func unionSums(ps []*Summary, n int, held func(p *Summary, sl *slot) uint64) (cs []Counter, hashes, helds []uint64) {
	cs = make([]Counter, 0, n)
	hashes = make([]uint64, 0, n)
	helds = make([]uint64, 0, n)
	index := make(map[string]int32, n)
	for _, p := range ps {
		for j := range p.r.slots {
			sl := &p.r.slots[j]
			k, ok := index[sl.item]
			if !ok {
				k = int32(len(cs))
				index[sl.item] = k
				cs = append(cs, Counter{Item: sl.item})
				hashes = append(hashes, sl.hash)
				helds = append(helds, 0)
			}
			cs[k].Count += p.r.nodes[sl.pos].count
			cs[k].Err += sl.aux
			helds[k] += held(p, sl)
		}
	}
	return cs, hashes, helds
}

// mergeFiltered merges filtered summaries with equal cell counts (a part
// without a filter, or of another size, is charged through its Floor in
// every cell). An item missing from a part is charged that part's bound for
// it (its cell); the merged filter is the cell-wise sum, raised to every
// discarded counter's Count in its cell, so it bounds every item the
// result does not monitor.
func mergeFiltered(capacity int, parts []*Summary) *Summary {
	cells := parts[0].cells
	ps := make([]*Summary, 0, len(parts))
	var total uint64
	n := 0
	for _, p := range parts {
		if p != nil {
			ps = append(ps, p)
			total += p.total
			n += p.r.len()
		}
	}
	s := NewFilteredSummary(capacity, cells)
	filter := make([]uint64, cells)
	boundOf := func(p *Summary, h uint64) uint64 {
		if p.cells == cells {
			return p.cellValue(s.cell(h))
		}
		return p.floor
	}
	for _, p := range ps {
		switch {
		case p.cells == cells && !p.filter.allocated():
		case p.cells == cells:
			for c := range filter {
				filter[c] += p.filter.get(c)
			}
		default:
			for c := range filter {
				filter[c] += p.floor
			}
		}
	}
	// held: per item, the bounds of the parts holding it.
	cs, hashes, held := unionSums(ps, n, func(p *Summary, sl *slot) uint64 { return boundOf(p, sl.hash) })
	for k := range cs {
		missing := filter[s.cell(hashes[k])] - held[k]
		cs[k].Count += missing
		cs[k].Err += missing
	}
	// Order by the total order; the hash travels with its counter.
	ord := make([]int32, len(cs))
	for i := range ord {
		ord[i] = int32(i)
	}
	slices.SortFunc(ord, func(a, b int32) int { return cmpCounters(cs[a], cs[b]) })
	for _, k := range ord[min(len(ord), capacity):] {
		c := s.cell(hashes[k])
		filter[c] = max(filter[c], cs[k].Count)
	}
	ord = ord[:min(len(ord), capacity)]
	for _, v := range filter {
		s.floor = max(s.floor, v)
	}
	s.filter.load(filter)
	s.total = total
	s.r.build(len(ord), func(i int) (string, uint64, uint64) {
		c := cs[ord[i]]
		return c.Item, c.Count, c.Err
	})
	return s
}
