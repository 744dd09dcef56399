package sketch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"

	"pgregory.net/rapid"
)

// tb is what the checks need from *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

type event struct {
	item string
	w    uint64
}

// universe returns n item names; "" is one of them, and lexical order
// differs from numeric order so ties exercise the item comparison.
func universe(n int) []string {
	u := make([]string, n)
	for i := 1; i < n; i++ {
		u[i] = strconv.Itoa(i)
	}
	return u
}

// genWeight is mostly small weights, sometimes large ones.
func genWeight() *rapid.Generator[uint64] {
	return rapid.OneOf(rapid.Just(uint64(1)), rapid.Uint64Range(1, 8), rapid.Uint64Range(1, 1000))
}

// genStream draws events over a small alphabet, so small summaries evict.
// The length is drawn first: rapid's slice generator favours very short
// slices, which would rarely fill a summary.
func genStream(u []string, maxLen int) *rapid.Generator[[]event] {
	ev := rapid.Custom(func(t *rapid.T) event {
		return event{item: rapid.SampledFrom(u).Draw(t, "item"), w: genWeight().Draw(t, "w")}
	})
	return rapid.Custom(func(t *rapid.T) []event {
		n := rapid.IntRange(0, maxLen).Draw(t, "len")
		return rapid.SliceOfN(ev, n, n).Draw(t, "events")
	})
}

// model is the exact reference: true counts.
type model map[string]uint64

func (m model) add(es ...event) {
	for _, e := range es {
		m[e.item] += e.w
	}
}

func (m model) total() uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// checkSummary checks the Space-Saving bounds against the true counts of
// every item of the universe.
func checkSummary(t tb, s *Summary, truth model, u []string) {
	t.Helper()
	if got, want := s.Total(), truth.total(); got != want {
		t.Fatalf("Total() = %d, want %d", got, want)
	}
	if s.Len() > s.Capacity() {
		t.Fatalf("Len() = %d > Capacity() = %d", s.Len(), s.Capacity())
	}
	for _, x := range u {
		c, ok := s.Lookup(x)
		if !ok {
			if truth[x] > s.Floor() {
				t.Fatalf("unmonitored %q: true %d > floor %d", x, truth[x], s.Floor())
			}
			continue
		}
		if c.Item != x || c.Err > c.Count || c.Lower() > truth[x] || truth[x] > c.Count {
			t.Fatalf("monitored %q: counter %+v, true %d", x, c, truth[x])
		}
		if c.Count < s.Floor() {
			t.Fatalf("monitored %q: count %d < floor %d", x, c.Count, s.Floor())
		}
	}
}

// checkResult checks a top-k answer against the true counts: bounds of the
// listed items, Rest over the rest, and what Guaranteed promises.
func checkResult(t tb, r Result, k int, truth model, u []string) {
	t.Helper()
	if len(r.Items) > max(k, 0) {
		t.Fatalf("Result(%d) has %d items", k, len(r.Items))
	}
	listed := make(map[string]bool, len(r.Items))
	for i, c := range r.Items {
		if listed[c.Item] {
			t.Fatalf("duplicate item %q in %+v", c.Item, r.Items)
		}
		listed[c.Item] = true
		if i > 0 && cmpCounters(r.Items[i-1], c) >= 0 {
			t.Fatalf("items out of order at %d: %+v", i, r.Items)
		}
		if c.Err > c.Count || c.Lower() > truth[c.Item] || truth[c.Item] > c.Count {
			t.Fatalf("listed %+v, true %d", c, truth[c.Item])
		}
	}
	for _, x := range u {
		if !listed[x] && truth[x] > r.Rest {
			t.Fatalf("unlisted %q: true %d > rest %d (k %d, items %+v)", x, truth[x], r.Rest, k, r.Items)
		}
	}
	if !r.Guaranteed(k) {
		return
	}
	for _, c := range r.Items {
		for _, y := range u {
			if !listed[y] && truth[y] > truth[c.Item] {
				t.Fatalf("Guaranteed(%d) but listed %q (true %d) loses to %q (true %d): %+v rest %d",
					k, c.Item, truth[c.Item], y, truth[y], r.Items, r.Rest)
			}
		}
	}
}

// ssModel is a naive Space-Saving with a linear scan for the minimum: the
// reference for the exact counters a Summary must hold.
type ssModel struct {
	capacity     int
	total, floor uint64
	cs           []Counter
}

func (m *ssModel) add(item string, w uint64) {
	m.total += w
	for i := range m.cs {
		if m.cs[i].Item == item {
			m.cs[i].Count += w
			return
		}
	}
	if len(m.cs) < m.capacity {
		m.cs = append(m.cs, Counter{Item: item, Count: m.floor + w, Err: m.floor})
		return
	}
	worst := 0
	for i := range m.cs {
		if cmpCounters(m.cs[i], m.cs[worst]) > 0 {
			worst = i
		}
	}
	c := m.cs[worst].Count
	m.floor = max(m.floor, c)
	m.cs[worst] = Counter{Item: item, Count: c + w, Err: c}
}

func (m *ssModel) counters() []Counter {
	cs := slices.Clone(m.cs)
	slices.SortFunc(cs, cmpCounters)
	return cs
}

// naiveMerge is Merge as the contract states it, by sorting.
func naiveMerge(capacity int, parts ...*Summary) (floor, total uint64, cs []Counter) {
	var sumFloor uint64
	seen := map[string]bool{}
	var items []string
	for _, p := range parts {
		sumFloor += p.Floor()
		total += p.Total()
		for _, c := range p.Counters() {
			if !seen[c.Item] {
				seen[c.Item] = true
				items = append(items, c.Item)
			}
		}
	}
	for _, x := range items {
		var c Counter
		c.Item = x
		for _, p := range parts {
			if pc, ok := p.Lookup(x); ok {
				c.Count += pc.Count
				c.Err += pc.Err
			} else {
				c.Count += p.Floor()
				c.Err += p.Floor()
			}
		}
		cs = append(cs, c)
	}
	slices.SortFunc(cs, cmpCounters)
	floor = sumFloor
	if len(cs) > capacity {
		for _, c := range cs[capacity:] {
			floor = max(floor, c.Count)
		}
		cs = cs[:capacity]
	}
	return floor, total, cs
}

// zipf draws ranks 0..n-1 with P(r) proportional to 1/(r+1)^s by inverse
// CDF; math/rand's Zipf needs s > 1.
type zipf struct {
	cdf []float64
	rng *rand.Rand
}

func newZipf(n int, s float64, seed uint64) *zipf {
	cdf := make([]float64, n)
	sum := 0.0
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		cdf[i] = sum
	}
	for i := range cdf {
		cdf[i] /= sum
	}
	return &zipf{cdf: cdf, rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
}

func (z *zipf) next() int {
	r := sort.SearchFloat64s(z.cdf, z.rng.Float64())
	return min(r, len(z.cdf)-1)
}

// zipfItems returns n item names, shuffled so that rank and lexical order
// are unrelated.
func zipfItems(n int, seed uint64) []string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("item-%07d", i)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	rng.Shuffle(n, func(i, j int) { items[i], items[j] = items[j], items[i] })
	return items
}

// MergeResults merges answers over disjoint sub-streams whose item sets may
// overlap. An item absent from part p may still have up to p.Rest there, so
// it gains p.Rest in Count and Err (its upper bound grows, its lower bound
// does not). The best k by the total order are kept; Rest is the larger of
// the sum of the parts' Rest and the largest dropped Count.
func MergeResults(k int, parts ...Result) Result {
	var sumRest uint64
	for _, p := range parts {
		sumRest += p.Rest
	}
	cs, rests := gather(parts)
	for j := range cs {
		missing := sumRest - rests[j]
		cs[j].Count += missing
		cs[j].Err += missing
	}
	return keep(k, cs, sumRest)
}

// NewSpaceSaving returns an empty filtered summary of capacity counters and
// FilterCellsPerCounter cells per counter: the structure of topkd's
// spacesaving mode.
func NewSpaceSaving(capacity int) *Summary {
	return NewFilteredSummary(capacity, FilterCellsPerCounter*max(capacity, 1))
}

// Restore rebuilds a summary from its canonical parts (Total, Floor,
// Counters). It rejects input that Add and Merge cannot produce: more
// counters than capacity, duplicate items, Err > Count, Count < floor,
// Count > total or floor > total. The counters may come in any order.
func Restore(capacity int, total, floor uint64, cs []Counter) (*Summary, error) {
	return restore(capacity, total, floor, cs)
}
