package sketch

import (
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// partResults splits a stream into parts, summarizes each part with a
// Summary or a CMSTopK, and returns each part's Result. With disjoint set,
// every item's events go to one part (item-hash partitioning); otherwise
// each event goes to a random part.
func partResults(t *rapid.T, u []string, disjoint bool) ([]Result, model) {
	nparts := rapid.IntRange(1, 4).Draw(t, "parts")
	owner := map[string]int{}
	for _, x := range u {
		owner[x] = rapid.IntRange(0, nparts-1).Draw(t, "owner")
	}
	adders := make([]interface{ Add(string, uint64) }, nparts)
	results := make([]func(k int) Result, nparts)
	for i := range adders {
		capacity := rapid.IntRange(1, 6).Draw(t, "capacity")
		if rapid.Bool().Draw(t, "cms") {
			c := NewCMSTopK(capacity, rapid.IntRange(1, 12).Draw(t, "width"), rapid.IntRange(1, 3).Draw(t, "depth"), uint64(i))
			adders[i], results[i] = c, c.Result
		} else {
			s := NewSummary(capacity)
			adders[i], results[i] = s, s.Result
		}
	}
	truth := model{}
	for _, e := range genStream(u, 300).Draw(t, "stream") {
		p := owner[e.item]
		if !disjoint {
			p = rapid.IntRange(0, nparts-1).Draw(t, "part")
		}
		adders[p].Add(e.item, e.w)
		truth.add(e)
	}
	rs := make([]Result, nparts)
	for i := range rs {
		rs[i] = results[i](rapid.IntRange(0, 7).Draw(t, "partK"))
	}
	return rs, truth
}

func TestMergeResultsProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		u := universe(rapid.IntRange(1, 24).Draw(t, "alphabet"))
		rs, truth := partResults(t, u, false)
		k := rapid.IntRange(0, 8).Draw(t, "k")
		m := MergeResults(k, rs...)
		checkResult(t, m, k, truth, u)
		perm := MergeResults(k, rapid.Permutation(rs).Draw(t, "permutation")...)
		if !slices.Equal(perm.Items, m.Items) || perm.Rest != m.Rest {
			t.Fatalf("MergeResults depends on part order: %+v vs %+v", perm, m)
		}
	})
}

func TestMergeDisjointProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		u := universe(rapid.IntRange(1, 24).Draw(t, "alphabet"))
		rs, truth := partResults(t, u, true)
		k := rapid.IntRange(0, 8).Draw(t, "k")
		m := MergeDisjoint(k, rs...)
		checkResult(t, m, k, truth, u)
		perm := MergeDisjoint(k, rapid.Permutation(rs).Draw(t, "permutation")...)
		if !slices.Equal(perm.Items, m.Items) || perm.Rest != m.Rest {
			t.Fatalf("MergeDisjoint depends on part order: %+v vs %+v", perm, m)
		}
	})
}

func TestMergeResultsExamples(t *testing.T) {
	a := Result{Items: []Counter{{Item: "x", Count: 10, Err: 2}, {Item: "y", Count: 6}}, Rest: 3}
	b := Result{Items: []Counter{{Item: "y", Count: 5, Err: 1}}, Rest: 2}
	tests := []struct {
		name string
		got  Result
		want Result
	}{
		{"overlapping", MergeResults(1, a, b), Result{Items: []Counter{{Item: "x", Count: 12, Err: 4}}, Rest: 11}},
		{"overlapping all", MergeResults(5, a, b), Result{Items: []Counter{{Item: "x", Count: 12, Err: 4}, {Item: "y", Count: 11, Err: 1}}, Rest: 5}},
		{"disjoint", MergeDisjoint(1, a, Result{Items: []Counter{{Item: "z", Count: 7}}, Rest: 4}),
			Result{Items: []Counter{{Item: "x", Count: 10, Err: 2}}, Rest: 7}},
		{"nothing", MergeResults(3), Result{Items: []Counter{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !slices.Equal(tt.got.Items, tt.want.Items) || tt.got.Rest != tt.want.Rest {
				t.Fatalf("got %+v, want %+v", tt.got, tt.want)
			}
		})
	}
}

func TestGuaranteed(t *testing.T) {
	two := []Counter{{Item: "a", Count: 10, Err: 2}, {Item: "b", Count: 7, Err: 1}} // lowers 8, 6
	tests := []struct {
		name string
		r    Result
		k    int
		want bool
	}{
		{"lowers reach rest", Result{Items: two, Rest: 6}, 2, true},
		{"rest above a lower", Result{Items: two, Rest: 7}, 2, false},
		{"fewer than k, rest zero", Result{Items: two}, 3, true},
		{"fewer than k, rest positive", Result{Items: two, Rest: 1}, 3, false},
		{"extra item counts as unlisted", Result{Items: two, Rest: 0}, 1, true},
		{"extra item above the lower", Result{Items: []Counter{{Item: "a", Count: 10, Err: 5}, {Item: "b", Count: 7}}}, 1, false},
		{"k zero", Result{Rest: 9}, 0, true},
		{"empty, rest zero", Result{}, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Guaranteed(tt.k); got != tt.want {
				t.Fatalf("Guaranteed(%d) = %v, want %v", tt.k, got, tt.want)
			}
		})
	}
	if got := (Result{Items: two}).MaxError(); got != 2 {
		t.Fatalf("MaxError() = %d, want 2", got)
	}
}

// TestGuaranteedHappens makes sure the Guaranteed branch of checkResult is
// exercised: a skewed stream through a small summary is provably exact at
// the top.
func TestGuaranteedHappens(t *testing.T) {
	s := NewSummary(4)
	for i, x := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		s.Add(x, uint64(100>>i))
	}
	for range 50 {
		s.Add("a", 1)
		s.Add("b", 1)
	}
	r := s.Result(2)
	if !r.Guaranteed(2) || r.Items[0].Item != "a" || r.Items[1].Item != "b" {
		t.Fatalf("Result(2) = %+v, Guaranteed %v; want a, b guaranteed", r, r.Guaranteed(2))
	}
}

func TestRestoreSummaryRejects(t *testing.T) {
	tests := []struct {
		name         string
		capacity     int
		total, floor uint64
		cs           []Counter
	}{
		{"zero capacity", 0, 0, 0, nil},
		{"too many counters", 1, 10, 0, []Counter{{Item: "a", Count: 1}, {Item: "b", Count: 1}}},
		{"duplicate", 3, 10, 0, []Counter{{Item: "a", Count: 1}, {Item: "a", Count: 2}}},
		{"err over count", 3, 10, 0, []Counter{{Item: "a", Count: 1, Err: 2}}},
		{"count under floor", 3, 10, 2, []Counter{{Item: "a", Count: 1}}},
		{"count over total", 3, 10, 0, []Counter{{Item: "a", Count: 11}}},
		{"floor over total", 3, 10, 11, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Restore(tt.capacity, tt.total, tt.floor, tt.cs); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Restore = %v, want ErrInvalid", err)
			}
		})
	}
	s, err := Restore(3, 10, 1, []Counter{{Item: "b", Count: 3, Err: 1}, {Item: "a", Count: 5}})
	if err != nil {
		t.Fatalf("Restore(valid) = %v", err)
	}
	if got, want := s.Counters(), []Counter{{Item: "a", Count: 5}, {Item: "b", Count: 3, Err: 1}}; !slices.Equal(got, want) {
		t.Fatalf("Counters() = %+v, want %+v", got, want)
	}
}
