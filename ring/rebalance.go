package ring

import (
	"math"
	"slices"
)

// Swap exchanges node A's role in partition PA with node B's in partition
// PB. For a leader swap, A leads PA and B leads PB, each is a replica of the
// other's partition, and leadership trades places. For a replica swap, A
// holds PA and B holds PB, neither holds the other's, and the replicas trade
// places. Either way every node keeps its count of replicas and of
// leaderships, so the result is still a fixed point of Place: placement
// does not move it back.
type Swap struct {
	A, B   string
	PA, PB int
	Leader bool // a leader swap; else a replica swap
}

// Apply returns pl with the swap made.
func (s Swap) Apply(pl Placement) Placement {
	out := Placement{Replicas: make([][]string, len(pl.Replicas))}
	for q, set := range pl.Replicas {
		out.Replicas[q] = slices.Clone(set)
	}
	if s.Leader {
		promote(out.Replicas[s.PA], s.B)
		promote(out.Replicas[s.PB], s.A)
		return out
	}
	replace(out.Replicas[s.PA], s.A, s.B)
	replace(out.Replicas[s.PB], s.B, s.A)
	return out
}

// promote moves id to the front of set, keeping the others' order; a set
// without id is left alone (Apply to a placement already swapped).
func promote(set []string, id string) {
	if i := slices.Index(set, id); i > 0 {
		copy(set[1:i+1], set[:i])
		set[0] = id
	}
}

func replace(set []string, from, to string) {
	if i := slices.Index(set, from); i >= 0 && !slices.Contains(set, to) {
		set[i] = to
	}
}

// LeaderLoad is each node's load as leader: the sum of the rates of the
// partitions it is preferred leader of.
func LeaderLoad(pl Placement, rate []float64) map[string]float64 {
	load := map[string]float64{}
	for q, set := range pl.Replicas {
		for i, id := range set {
			if i == 0 {
				load[id] += rate[q]
			} else {
				load[id] += 0 // every replica's node is in the map, leading or not
			}
		}
	}
	return load
}

// ReplicaLoad is each node's load as a replica: the sum of the rates of the
// partitions it holds (every replica applies every event).
func ReplicaLoad(pl Placement, rate []float64) map[string]float64 {
	load := map[string]float64{}
	for q, set := range pl.Replicas {
		for _, id := range set {
			load[id] += rate[q]
		}
	}
	return load
}

// PeakLoad is the largest of the loads.
func PeakLoad(load map[string]float64) float64 {
	m := 0.0
	for _, l := range load {
		m = max(m, l)
	}
	return m
}

// Rebalance plans up to max swaps that spread load (rate[q] is partition
// q's ingest rate) away from the busiest node: first leader swaps, while
// the busiest leader carries more than tolerance times the mean leader
// load, then replica swaps on the same test for replica load. Each swap is
// the one that most lowers the larger of its two nodes' loads; none is
// made unless it does. Swaps are returned in the order to make them.
func Rebalance(pl Placement, rate []float64, tolerance float64, max int) []Swap {
	var out []Swap
	cur := pl
	for _, leader := range []bool{true, false} {
		for len(out) < max {
			s, ok := bestSwap(cur, rate, tolerance, leader)
			if !ok {
				break
			}
			out = append(out, s)
			cur = s.Apply(cur)
		}
	}
	return out
}

func bestSwap(pl Placement, rate []float64, tolerance float64, leader bool) (Swap, bool) {
	load := ReplicaLoad(pl, rate)
	if leader {
		load = LeaderLoad(pl, rate)
	}
	var hot string
	var total float64
	for id, l := range load {
		total += l
		if hot == "" || l > load[hot] || (l == load[hot] && id < hot) {
			hot = id
		}
	}
	if len(load) < 2 || total == 0 || load[hot] <= tolerance*total/float64(len(load)) {
		return Swap{}, false
	}
	best, bestPeak := Swap{}, load[hot]
	for pa, sa := range pl.Replicas {
		if !slices.Contains(sa, hot) || (leader && sa[0] != hot) {
			continue
		}
		for pb, sb := range pl.Replicas {
			if pb == pa || rate[pb] >= rate[pa] {
				continue
			}
			var b string
			if leader {
				b = sb[0]
				if b == hot || !slices.Contains(sa, b) || !slices.Contains(sb, hot) {
					continue
				}
			} else {
				if slices.Contains(sb, hot) {
					continue
				}
				for _, id := range sb {
					if !slices.Contains(sa, id) && (b == "" || load[id] < load[b] || (load[id] == load[b] && id < b)) {
						b = id
					}
				}
				if b == "" || (sa[0] == hot) != (sb[0] == b) {
					continue // a replica swap leaves leaderships where they are
				}
			}
			d := rate[pa] - rate[pb]
			peak := math.Max(load[hot]-d, load[b]+d)
			if peak < bestPeak-1e-9 {
				best, bestPeak = Swap{A: hot, B: b, PA: pa, PB: pb, Leader: leader}, peak
			}
		}
	}
	return best, best.A != ""
}
