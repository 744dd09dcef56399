package sketch

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// cmsModel is a naive CMSTopK with a linear scan for the minimum, sharing
// the real sketch's cells through its own CountMin: the reference for the
// exact candidates and bound.
type cmsModel struct {
	k     int
	sk    *CountMin
	bound uint64
	cs    []Candidate
}

func (m *cmsModel) add(item string, w uint64) {
	est := m.sk.Add(item, w)
	for i := range m.cs {
		if m.cs[i].Item == item {
			m.cs[i].Est = est
			m.cs[i].Lower += w
			return
		}
	}
	if len(m.cs) < m.k {
		m.cs = append(m.cs, Candidate{Item: item, Est: est, Lower: w})
		return
	}
	worst := 0
	for i, c := range m.cs {
		if better(m.cs[worst].Est, m.cs[worst].Item, c.Est, c.Item) {
			worst = i
		}
	}
	if better(est, item, m.cs[worst].Est, m.cs[worst].Item) {
		m.bound = max(m.bound, m.sk.Estimate(m.cs[worst].Item))
		m.cs[worst] = Candidate{Item: item, Est: est, Lower: w}
		return
	}
	m.bound = max(m.bound, est)
}

func (m *cmsModel) candidates() []Candidate {
	cs := slices.Clone(m.cs)
	slices.SortFunc(cs, func(a, b Candidate) int { return strings.Compare(a.Item, b.Item) })
	return cs
}

// checkCMSTopK checks the deterministic bounds against the true counts.
func checkCMSTopK(t tb, c *CMSTopK, truth model, u []string) {
	t.Helper()
	for _, x := range u {
		got, ok := c.Lookup(x)
		if got.Item != x || got.Count < truth[x] || got.Lower() > truth[x] {
			t.Fatalf("Lookup(%q) = %+v, %v; true %d", x, got, ok, truth[x])
		}
		if !ok && truth[x] > c.Bound() {
			t.Fatalf("non-candidate %q: true %d > bound %d", x, truth[x], c.Bound())
		}
	}
}

func TestCMSTopKProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(1, 6).Draw(t, "k")
		u := universe(k + rapid.IntRange(0, 20).Draw(t, "extraItems"))
		// Narrow sketches, so estimates collide and exceed true counts.
		width, depth, seed := rapid.IntRange(1, 12).Draw(t, "width"), rapid.IntRange(1, 3).Draw(t, "depth"), rapid.Uint64().Draw(t, "seed")
		c := NewCMSTopK(k, width, depth, seed)
		if rapid.Bool().Draw(t, "goMapIndex") {
			c.r.toSlow()
		}
		ref := &cmsModel{k: k, sk: NewCountMin(width, depth, seed)}
		truth := model{}
		for _, e := range genStream(u, 300).Draw(t, "stream") {
			c.Add(e.item, e.w)
			ref.add(e.item, e.w)
			truth.add(e)
			checkCMSTopK(t, c, truth, u)
			if got, want := c.Candidates(), ref.candidates(); !slices.Equal(got, want) {
				t.Fatalf("after %+v: Candidates() = %+v, want %+v", e, got, want)
			}
			if c.Bound() != ref.bound {
				t.Fatalf("Bound() = %d, want %d", c.Bound(), ref.bound)
			}
		}
		for q := range k + 3 {
			r := c.Result(q)
			checkResult(t, r, q, truth, u)
			if got := c.Top(q); !slices.Equal(got, r.Items) {
				t.Fatalf("Top(%d) = %+v, Result(%d).Items = %+v", q, got, q, r.Items)
			}
		}

		// Snapshot round trip, then identical behaviour.
		sk, err := RestoreCountMin(c.Sketch().Width(), c.Sketch().Depth(), c.Sketch().Seed(), c.Sketch().Total(), c.Sketch().Cells())
		if err != nil {
			t.Fatalf("RestoreCountMin = %v", err)
		}
		cands := c.Candidates()
		slices.Reverse(cands) // order must not matter
		r, err := RestoreCMSTopK(k, sk, c.Bound(), cands)
		if err != nil {
			t.Fatalf("RestoreCMSTopK = %v", err)
		}
		for _, e := range genStream(u, 100).Draw(t, "more") {
			c.Add(e.item, e.w)
			r.Add(e.item, e.w)
			truth.add(e)
		}
		if !slices.Equal(r.Candidates(), c.Candidates()) || r.Bound() != c.Bound() ||
			!slices.Equal(r.Sketch().Cells(), c.Sketch().Cells()) || !slices.Equal(r.Top(k), c.Top(k)) {
			t.Fatalf("restored CMSTopK diverged: %+v vs %+v", r.Candidates(), c.Candidates())
		}
		checkCMSTopK(t, c, truth, u)
	})
}

func TestCMSTopKClone(t *testing.T) {
	c := NewCMSTopK(2, 8, 2, 5)
	for _, x := range []string{"a", "b", "a", "c", "d"} {
		c.Add(x, 1)
	}
	d := c.Clone()
	want := c.Candidates()
	c.Add("e", 10)
	if got := d.Candidates(); !slices.Equal(got, want) {
		t.Fatalf("clone changed with the original: %+v, want %+v", got, want)
	}
	if slices.Equal(d.Sketch().Cells(), c.Sketch().Cells()) {
		t.Fatalf("clone shares the sketch")
	}
	if c.Bytes() <= c.Sketch().Bytes() {
		t.Fatalf("Bytes() = %d, not above the sketch's %d", c.Bytes(), c.Sketch().Bytes())
	}
}

func TestRestoreCMSTopKRejects(t *testing.T) {
	sk := NewCountMin(8, 2, 1)
	tests := []struct {
		name string
		k    int
		sk   *CountMin
		cs   []Candidate
	}{
		{"zero k", 0, sk, nil},
		{"nil sketch", 2, nil, nil},
		{"too many", 1, sk, []Candidate{{Item: "a", Est: 2, Lower: 1}, {Item: "b", Est: 2, Lower: 1}}},
		{"duplicate", 3, sk, []Candidate{{Item: "a", Est: 2, Lower: 1}, {Item: "a", Est: 3, Lower: 1}}},
		{"lower over est", 3, sk, []Candidate{{Item: "a", Est: 2, Lower: 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := RestoreCMSTopK(tt.k, tt.sk, 0, tt.cs); !errors.Is(err, ErrInvalid) {
				t.Fatalf("RestoreCMSTopK = %v, want ErrInvalid", err)
			}
		})
	}
}
