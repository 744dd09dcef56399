package history

import (
	"fmt"
	"math/big"
	"slices"
	"sort"
	"time"
)

// Result of the exactly-once check over every item.
type Result struct {
	Items   int   // items written
	Acked   int64 // events acknowledged
	Lost    int64 // acknowledged events missing from the final counts
	Doubled int64 // events counted beyond what the acknowledged and unknown writes explain
	// Unexplained lists items whose final count no subset of their unknown
	// writes explains (Lost and Doubled say by how much where they can).
	Unexplained []string
}

// OK says whether nothing was lost, doubled or unexplained.
func (r Result) OK() bool { return r.Lost == 0 && r.Doubled == 0 && len(r.Unexplained) == 0 }

func (r Result) String() string {
	return fmt.Sprintf("%d items, %d events acknowledged: %d lost, %d doubled, %d unexplained", r.Items, r.Acked, r.Lost,
		r.Doubled, len(r.Unexplained))
}

// CheckExactlyOnce checks final counts taken after the faults healed
// (checker 1): for every item, final = acknowledged + the events of some
// subset of the unknown writes. Failed writes must not count. Items
// missing from final count 0.
func CheckExactlyOnce(writes []Write, final map[string]int64) Result {
	acked := map[string]int64{}
	unknown := map[string][]int64{}
	for _, w := range writes {
		for item, n := range w.Adds {
			switch w.Outcome {
			case OK:
				acked[item] += n
			case Failed:
				acked[item] += 0 // listed, so that a count of it is caught
			default:
				unknown[item] = append(unknown[item], n)
			}
		}
	}
	var r Result
	items := map[string]bool{}
	for item := range acked {
		items[item] = true
	}
	for item := range unknown {
		items[item] = true
	}
	for item := range final {
		items[item] = true
	}
	r.Items = len(items)
	for item := range items {
		a, got := acked[item], final[item]
		r.Acked += a
		extra := got - a
		var most int64
		for _, n := range unknown[item] {
			most += n
		}
		switch {
		case extra < 0:
			r.Lost += -extra
			r.Unexplained = append(r.Unexplained, item)
		case extra > most:
			r.Doubled += extra - most
			r.Unexplained = append(r.Unexplained, item)
		case !subsetSum(unknown[item], extra):
			r.Unexplained = append(r.Unexplained, item)
		}
	}
	sort.Strings(r.Unexplained)
	return r
}

// subsetSum says whether some subset of ns sums to target (ns positive).
func subsetSum(ns []int64, target int64) bool {
	if target == 0 {
		return true
	}
	reach := big.NewInt(1) // bit s set: sum s reachable
	var shifted big.Int
	for _, n := range ns {
		shifted.Lsh(reach, uint(n))
		reach.Or(reach, &shifted)
	}
	return reach.Bit(int(target)) == 1
}

// ReadViolation is a read outside its bounds.
type ReadViolation struct {
	Read         Read
	Lower, Upper int64
}

func (v ReadViolation) String() string {
	return fmt.Sprintf("%s read %s = %d during [%s, %s]: want %d <= count <= %d", v.Read.Consistency, v.Read.Item,
		v.Read.Value, v.Read.Start.Format("15:04:05.000"), v.Read.End.Format("15:04:05.000"), v.Lower, v.Upper)
}

// CheckReads checks every read against the counter model (checker 2). No
// read may exceed the events of the writes attempted before it returned
// (failed ones excepted). A read at a consistency in strict must also
// include every write acknowledged before it began.
func CheckReads(writes []Write, reads []Read, strict ...string) []ReadViolation {
	type point struct {
		at time.Time
		n  int64
	}
	// Per item: acknowledgements by end time and attempts by start time,
	// each with running sums, so a read's bounds are two binary searches.
	type bounds struct{ acked, tried []point }
	byItem := map[string]*bounds{}
	for _, w := range writes {
		for item, n := range w.Adds {
			b := byItem[item]
			if b == nil {
				b = &bounds{}
				byItem[item] = b
			}
			if w.Outcome == OK && !w.End.IsZero() {
				b.acked = append(b.acked, point{w.End, n})
			}
			if w.Outcome != Failed {
				b.tried = append(b.tried, point{w.Start, n})
			}
		}
	}
	cumulate := func(ps []point) {
		slices.SortFunc(ps, func(a, b point) int { return a.at.Compare(b.at) })
		for i := 1; i < len(ps); i++ {
			ps[i].n += ps[i-1].n
		}
	}
	for _, b := range byItem {
		cumulate(b.acked)
		cumulate(b.tried)
	}
	// sumBefore sums the points strictly before t.
	sumBefore := func(ps []point, t time.Time) int64 {
		i, _ := slices.BinarySearchFunc(ps, t, func(p point, t time.Time) int {
			if p.at.Before(t) {
				return -1
			}
			return 1
		})
		if i == 0 {
			return 0
		}
		return ps[i-1].n
	}
	var out []ReadViolation
	for _, r := range reads {
		var lower, upper int64
		if b := byItem[r.Item]; b != nil {
			lower, upper = sumBefore(b.acked, r.Start), sumBefore(b.tried, r.End)
		}
		if !slices.Contains(strict, r.Consistency) {
			lower = 0
		}
		if r.Value < lower || r.Value > upper {
			out = append(out, ReadViolation{Read: r, Lower: lower, Upper: upper})
		}
	}
	return out
}
