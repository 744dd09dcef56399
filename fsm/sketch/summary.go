package sketch

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"
)

// Summary is a Space-Saving summary of at most Capacity counters (Metwally
// et al. 2005) in its mergeable form (Agarwal et al. 2012): a map from item
// to slot and an indexed min-heap by the total order, so Add is O(log m)
// and the eviction victim is fixed by the counters alone, never by layout.
type Summary struct {
	capacity int
	total    uint64
	floor    uint64
	r        ranked
}

// NewSummary returns an empty summary. A capacity below 1 is raised to 1.
func NewSummary(capacity int) *Summary {
	return &Summary{capacity: max(capacity, 1), r: newRanked()}
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
	if id, ok := s.r.idx[item]; ok {
		p := int(s.r.slots[id].pos)
		s.r.nodes[p].count += w
		s.r.down(p)
		return
	}
	if s.r.len() < s.capacity {
		// Unmonitored items may have up to floor occurrences already.
		s.r.push(item, s.floor+w, s.floor)
		return
	}
	m := s.r.nodes[0].count
	s.floor = max(s.floor, m)
	s.r.replaceRoot(item, m+w, m)
}

// Lookup returns the item's counter if it is monitored.
func (s *Summary) Lookup(item string) (Counter, bool) {
	id, ok := s.r.idx[item]
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
	if k >= n/4 {
		cs := s.Counters()
		return cs[:min(max(k, 0), n)]
	}
	b := newBestK(k, n)
	for _, nd := range s.r.nodes {
		sl := &s.r.slots[nd.id]
		b.offer(nd.count, sl.item, sl.aux)
	}
	return b.sorted()
}

// Counters returns all counters in the total order: the canonical form
// that snapshots store and Restore takes.
func (s *Summary) Counters() []Counter {
	cs := make([]Counter, len(s.r.nodes))
	for i, nd := range s.r.nodes {
		sl := &s.r.slots[nd.id]
		cs[i] = Counter{Item: sl.item, Count: nd.count, Err: sl.aux}
	}
	slices.SortFunc(cs, cmpCounters)
	return cs
}

// Result answers a top-k query: Rest bounds every item not in Items, both
// the unmonitored ones (Floor) and the monitored ones ranked below k.
func (s *Summary) Result(k int) Result {
	k = max(k, 0)
	cs := s.Top(k + 1)
	rest := s.floor
	if len(cs) > k {
		rest = max(rest, cs[k].Count)
		cs = cs[:k]
	}
	return Result{Items: cs, Rest: rest}
}

// Clone returns an independent deep copy.
func (s *Summary) Clone() *Summary {
	return &Summary{capacity: s.capacity, total: s.total, floor: s.floor, r: s.r.clone()}
}

// Reset empties the summary, keeping its capacity and allocations.
func (s *Summary) Reset() {
	s.total, s.floor = 0, 0
	s.r.reset()
}

// Bytes estimates the heap bytes held.
func (s *Summary) Bytes() int {
	return int(unsafe.Sizeof(*s)) + s.r.bytes()
}

// Restore rebuilds a summary from its canonical parts (Total, Floor,
// Counters). It rejects input that Add and Merge cannot produce: more
// counters than capacity, duplicate items, Err > Count, Count < floor,
// Count > total or floor > total. The counters may come in any order.
func Restore(capacity int, total, floor uint64, cs []Counter) (*Summary, error) {
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
	var sumFloor, total uint64
	n := 0
	for _, p := range parts {
		if p == nil {
			continue
		}
		sumFloor += p.floor
		total += p.total
		n += p.r.len()
	}
	type acc struct {
		count, err, floors uint64 // floors: sum of floors of the parts holding the item
	}
	cs := make([]Counter, 0, n)
	accs := make([]acc, 0, n)
	index := make(map[string]int32, n)
	for _, p := range parts {
		if p == nil {
			continue
		}
		for _, nd := range p.r.nodes {
			sl := &p.r.slots[nd.id]
			j, ok := index[sl.item]
			if !ok {
				j = int32(len(cs))
				index[sl.item] = j
				cs = append(cs, Counter{Item: sl.item})
				accs = append(accs, acc{})
			}
			a := &accs[j]
			a.count += nd.count
			a.err += sl.aux
			a.floors += p.floor
		}
	}
	for j := range cs {
		a := &accs[j]
		missing := sumFloor - a.floors // floors of the parts that do not monitor the item
		cs[j].Count = a.count + missing
		cs[j].Err = a.err + missing
	}
	floor := max(sumFloor, partitionBest(cs, capacity))
	cs = cs[:min(len(cs), capacity)]
	s := NewSummary(capacity)
	s.total, s.floor = total, floor
	s.r.build(len(cs), func(i int) (string, uint64, uint64) {
		return cs[i].Item, cs[i].Count, cs[i].Err
	})
	return s
}
