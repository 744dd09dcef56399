package ring

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func counts(pl Placement) (replicas, leads map[string]int) {
	replicas, leads = map[string]int{}, map[string]int{}
	for _, set := range pl.Replicas {
		for i, id := range set {
			replicas[id]++
			if i == 0 {
				leads[id]++
			}
		}
	}
	return replicas, leads
}

// Every swap keeps each node's replica and leader counts, lowers the peak
// load of its kind, and leaves a placement Place returns unchanged; a
// balanced load plans no swap.
func TestRebalanceProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(2, 7).Draw(rt, "nodes")
		p := rapid.IntRange(1, 32).Draw(rt, "partitions")
		r := rapid.IntRange(1, 3).Draw(rt, "replicas")
		members := nodes(n)
		pl := mustPlace(rt, members, p, r, Placement{})
		rate := rapid.SliceOfN(rapid.Float64Range(0, 1000), p, p).Draw(rt, "rates")
		swaps := Rebalance(pl, rate, 1.1, 16)
		cur := pl
		wantReplicas, wantLeads := counts(pl)
		for i, s := range swaps {
			load := ReplicaLoad
			if s.Leader {
				load = LeaderLoad
			}
			before := PeakLoad(load(cur, rate))
			next := s.Apply(cur)
			if after := PeakLoad(load(next, rate)); after > before+1e-9 {
				rt.Fatalf("swap %d %+v raised the peak load from %v to %v", i, s, before, after)
			}
			gotReplicas, gotLeads := counts(next)
			if !mapsEqual(gotReplicas, wantReplicas) || !mapsEqual(gotLeads, wantLeads) {
				rt.Fatalf("swap %d %+v changed counts: replicas %v -> %v, leads %v -> %v", i, s, wantReplicas, gotReplicas, wantLeads, gotLeads)
			}
			if err := check(members, p, r, next); err != nil {
				rt.Fatalf("swap %d %+v: %v", i, s, err)
			}
			cur = next
		}
		if again := mustPlace(rt, members, p, r, cur); !equalPlacement(again, cur) {
			rt.Fatalf("Place moved a rebalanced placement:\n%v\n->\n%v", cur.Replicas, again.Replicas)
		}
		even := make([]float64, p)
		for q := range even {
			even[q] = 5
		}
		if s := Rebalance(pl, even, 1.5, 16); len(s) != 0 && p%n == 0 {
			rt.Fatalf("even rates on a balanced placement planned %v", s)
		}
	})
}

// One hot partition led by a node that also leads a cold one: its
// leadership goes to a replica leading a colder partition.
func TestRebalanceHotLeader(t *testing.T) {
	pl := Placement{Replicas: [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "c", "b"}}}
	rate := []float64{1000, 10, 10, 900}
	swaps := Rebalance(pl, rate, 1.1, 4)
	if len(swaps) == 0 || !swaps[0].Leader || swaps[0].A != "a" {
		t.Fatalf("swaps %+v, want a leader swap away from a first", swaps)
	}
	after := pl
	for _, s := range swaps {
		after = s.Apply(after)
	}
	if before, got := PeakLoad(LeaderLoad(pl, rate)), PeakLoad(LeaderLoad(after, rate)); got >= before {
		t.Fatalf("peak leader load %v -> %v", before, got)
	}
	t.Logf("%+v: leader load %v -> %v", swaps, LeaderLoad(pl, rate), LeaderLoad(after, rate))
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func equalPlacement(a, b Placement) bool {
	return slices.EqualFunc(a.Replicas, b.Replicas, slices.Equal)
}
