package sketch

// Result is a top-k answer with deterministic bounds.
type Result struct {
	Items []Counter // ranked by the total order on Count
	Rest  uint64    // upper bound on the true count of any item NOT in Items (0 = none can exist)
}

// MergeDisjoint merges answers whose parts hold disjoint items (topkd's
// item-hash partitions): every occurrence of an item is in one part, so an
// absent item gains nothing, and an item listed nowhere is bounded by the
// largest Rest of any part. Items listed by several parts (a caller error)
// are summed, which keeps Count an upper bound only if the parts really are
// disjoint sub-streams.
func MergeDisjoint(k int, parts ...Result) Result {
	var maxRest uint64
	for _, p := range parts {
		maxRest = max(maxRest, p.Rest)
	}
	cs, _ := gather(parts)
	return keep(k, cs, maxRest)
}

// gather sums Count and Err per item over the parts that list it, and the
// Rest of those parts. Output order follows first appearance; callers
// reorder by the total order, so part order does not matter.
func gather(parts []Result) (cs []Counter, rests []uint64) {
	n := 0
	for _, p := range parts {
		n += len(p.Items)
	}
	cs = make([]Counter, 0, n)
	rests = make([]uint64, 0, n)
	index := make(map[string]int, n)
	for _, p := range parts {
		for _, c := range p.Items {
			j, ok := index[c.Item]
			if !ok {
				j = len(cs)
				index[c.Item] = j
				cs = append(cs, Counter{Item: c.Item})
				rests = append(rests, 0)
			}
			cs[j].Count += c.Count
			cs[j].Err += min(c.Err, c.Count) // keeps Err <= Count even for a malformed part
			rests[j] += p.Rest
		}
	}
	return cs, rests
}

func keep(k int, cs []Counter, rest uint64) Result {
	k = max(k, 0)
	dropped := partitionBest(cs, k)
	return Result{Items: topOf(cs[:min(k, len(cs))], k), Rest: max(rest, dropped)}
}

// Guaranteed reports whether Items provably are a top-k of the true counts
// (ties allowed): every listed item's lower bound reaches the upper bound
// of every item not listed. With fewer than k items that needs Rest == 0
// (no other item can exist). Items beyond the first k count as unlisted.
func (r Result) Guaranteed(k int) bool {
	if len(r.Items) < k {
		return r.Rest == 0
	}
	k = max(k, 0)
	rest := r.Rest
	for _, c := range r.Items[k:] {
		rest = max(rest, c.Count)
	}
	for _, c := range r.Items[:k] {
		if c.Lower() < rest {
			return false
		}
	}
	return true
}

// MaxError is the largest Err (Count - Lower) among Items.
func (r Result) MaxError() uint64 {
	var m uint64
	for _, c := range r.Items {
		m = max(m, c.Count-c.Lower())
	}
	return m
}
