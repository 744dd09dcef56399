package sketch

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// checkFiltered checks a filtered summary's bounds against the true counts:
// monitored items within [Lower, Count], unmonitored ones at most their
// cell, every cell at most Floor.
func checkFiltered(t tb, s *Summary, truth model, u []string) {
	t.Helper()
	if got, want := s.Total(), truth.total(); got != want {
		t.Fatalf("Total() = %d, want %d", got, want)
	}
	if s.Len() > s.Capacity() {
		t.Fatalf("Len() = %d > Capacity() = %d", s.Len(), s.Capacity())
	}
	for i, c := range s.Filter() {
		if c > s.Floor() {
			t.Fatalf("cell %d holds %d > floor %d", i, c, s.Floor())
		}
	}
	for _, x := range u {
		c, ok := s.Lookup(x)
		if !ok {
			if b := s.Unmonitored(x); truth[x] > b {
				t.Fatalf("unmonitored %q: true %d > its cell %d", x, truth[x], b)
			}
			continue
		}
		if c.Item != x || c.Err > c.Count || c.Lower() > truth[x] || truth[x] > c.Count {
			t.Fatalf("monitored %q: counter %+v, true %d", x, c, truth[x])
		}
	}
}

// TestFilteredProperties: a filtered summary keeps its bounds at every
// step of random weighted streams, answers soundly, and a restore from its
// canonical parts behaves identically afterwards.
func TestFilteredProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		capacity := rapid.IntRange(1, 8).Draw(t, "capacity")
		cells := rapid.IntRange(1, 12).Draw(t, "cells")
		u := universe(capacity + rapid.IntRange(0, 20).Draw(t, "extraItems"))
		s := NewFilteredSummary(capacity, cells)
		truth := model{}
		for _, e := range genStream(u, 300).Draw(t, "stream") {
			s.Add(e.item, e.w)
			truth.add(e)
			checkFiltered(t, s, truth, u)
		}
		for k := range capacity + 3 {
			checkResult(t, s.Result(k), k, truth, u)
		}
		cs := s.Counters()
		slices.Reverse(cs)
		r, err := RestoreFiltered(s.Capacity(), s.Cells(), s.Total(), s.Filter(), cs)
		if err != nil {
			t.Fatalf("RestoreFiltered = %v", err)
		}
		for _, e := range genStream(u, 100).Draw(t, "more") {
			s.Add(e.item, e.w)
			r.Add(e.item, e.w)
		}
		if !slices.Equal(r.Counters(), s.Counters()) || !slices.Equal(r.Filter(), s.Filter()) || r.Floor() != s.Floor() {
			t.Fatalf("restored summary diverged: %+v vs %+v", r.Counters(), s.Counters())
		}
	})
}

// TestFilteredMerge: merging filtered summaries of disjoint sub-streams
// keeps every bound, further adds to a merged summary keep them, and the
// merge does not depend on part order.
func TestFilteredMerge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		capacity := rapid.IntRange(1, 6).Draw(t, "capacity")
		cells := rapid.IntRange(1, 10).Draw(t, "cells")
		u := universe(capacity + rapid.IntRange(0, 16).Draw(t, "extraItems"))
		nparts := rapid.IntRange(1, 5).Draw(t, "parts")
		parts := make([]*Summary, nparts)
		for i := range parts {
			parts[i] = NewFilteredSummary(capacity, cells)
		}
		truth := model{}
		for _, e := range genStream(u, 300).Draw(t, "stream") {
			parts[rapid.IntRange(0, nparts-1).Draw(t, "part")].Add(e.item, e.w)
			truth.add(e)
		}
		m := Merge(rapid.IntRange(1, 8).Draw(t, "mergedCapacity"), parts...)
		checkFiltered(t, m, truth, u)
		for k := range m.Capacity() + 2 {
			checkResult(t, m.Result(k), k, truth, u)
		}
		rev := slices.Clone(parts)
		slices.Reverse(rev)
		m2 := Merge(m.Capacity(), rev...)
		if !slices.Equal(m2.Counters(), m.Counters()) || !slices.Equal(m2.Filter(), m.Filter()) || m2.Floor() != m.Floor() {
			t.Fatalf("merge depends on part order: %+v vs %+v", m.Counters(), m2.Counters())
		}
		for _, e := range genStream(u, 100).Draw(t, "more") {
			m.Add(e.item, e.w)
			truth.add(e)
			checkFiltered(t, m, truth, u)
		}
	})
}

// TestFilteredWideCells: cells start at 32 bits and widen when a weight
// would carry one past 2^32-1; bounds, merges and restores hold across the
// change, and a restored summary equals the original whatever its width.
func TestFilteredWideCells(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		capacity := rapid.IntRange(1, 6).Draw(t, "capacity")
		cells := rapid.IntRange(1, 10).Draw(t, "cells")
		u := universe(capacity + rapid.IntRange(1, 16).Draw(t, "extraItems"))
		w := rapid.OneOf(rapid.Uint64Range(1, 1000), rapid.Uint64Range(1<<31, 1<<33))
		ev := rapid.Custom(func(t *rapid.T) event {
			return event{item: rapid.SampledFrom(u).Draw(t, "item"), w: w.Draw(t, "w")}
		})
		parts := []*Summary{NewFilteredSummary(capacity, cells), NewFilteredSummary(capacity, cells)}
		truth := model{}
		for _, e := range rapid.SliceOfN(ev, 1, 200).Draw(t, "stream") {
			p := parts[rapid.IntRange(0, 1).Draw(t, "part")]
			p.Add(e.item, e.w)
			truth.add(e)
		}
		for _, p := range parts {
			r, err := RestoreFiltered(p.Capacity(), p.Cells(), p.Total(), p.Filter(), p.Counters())
			if err != nil {
				t.Fatalf("RestoreFiltered = %v", err)
			}
			if !slices.Equal(r.Filter(), p.Filter()) || r.Floor() != p.Floor() || (r.filter.wide != nil) != (p.filter.wide != nil) {
				t.Fatalf("restore changed the filter: %v vs %v", r.Filter(), p.Filter())
			}
			if p.filter.wide == nil && p.Floor() > 1<<32-1 {
				t.Fatalf("floor %d held in narrow cells", p.Floor())
			}
		}
		m := Merge(capacity, parts...)
		checkFiltered(t, m, truth, u)
		checkResult(t, m.Result(capacity), capacity, truth, u)
		for _, e := range rapid.SliceOfN(ev, 0, 50).Draw(t, "more") {
			m.Add(e.item, e.w)
			truth.add(e)
			checkFiltered(t, m, truth, u)
		}
	})
}
