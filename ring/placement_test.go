package ring

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// nodes returns the ids n1..nk.
func nodes(k int) []string {
	ids := make([]string, k)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i+1)
	}
	return ids
}

func without(ids []string, id string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == id })
}

// check verifies the guarantees of Place: p partitions of R = min(r, n)
// distinct members each; every node holds floor or ceil of p*R/n replicas
// and leads floor or ceil of p/n partitions.
func check(members []string, p, r int, pl Placement) error {
	if len(pl.Replicas) != p {
		return fmt.Errorf("got %d partitions, want %d", len(pl.Replicas), p)
	}
	n := len(members)
	rr := min(r, n)
	load, leads := map[string]int{}, map[string]int{}
	for q, set := range pl.Replicas {
		if len(set) != rr {
			return fmt.Errorf("partition %d: got %d replicas %v, want %d", q, len(set), set, rr)
		}
		for i, id := range set {
			if !slices.Contains(members, id) {
				return fmt.Errorf("partition %d: replica %q is not a member", q, id)
			}
			if slices.Contains(set[:i], id) {
				return fmt.Errorf("partition %d: replica %q twice in %v", q, id, set)
			}
			load[id]++
		}
		leads[set[0]]++
	}
	for _, id := range members {
		if got, lo, hi := load[id], p*rr/n, ceilDiv(p*rr, n); got < lo || got > hi {
			return fmt.Errorf("node %s: got %d replicas, want %d to %d", id, got, lo, hi)
		}
		if got, lo, hi := leads[id], p/n, ceilDiv(p, n); got < lo || got > hi {
			return fmt.Errorf("node %s: leads %d partitions, want %d to %d", id, got, lo, hi)
		}
	}
	return nil
}

// added counts the replicas to create between two placements: the data
// that a change copies.
func added(from, to Placement) int {
	k := 0
	for _, m := range Diff(from, to) {
		k += len(m.Add)
	}
	return k
}

// leaderChanges counts partitions whose preferred leader changes.
func leaderChanges(from, to Placement) int {
	k := 0
	for _, m := range Diff(from, to) {
		if m.Leader != "" {
			k++
		}
	}
	return k
}

// fataler is what mustPlace needs of *testing.T, *testing.B and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func mustPlace(t fataler, members []string, p, r int, current Placement) Placement {
	t.Helper()
	pl, err := Place(members, p, r, current)
	if err != nil {
		t.Fatalf("Place(%v, %d, %d) = %v", members, p, r, err)
	}
	return pl
}

func TestPlaceErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		members []string
		p, r    int
		current Placement
		want    string
	}{
		{"no partitions", nodes(3), 0, 3, Placement{}, "0 partitions"},
		{"negative partitions", nodes(3), -1, 3, Placement{}, "-1 partitions"},
		{"no replicas", nodes(3), 8, 0, Placement{}, "0 replicas"},
		{"no members", nil, 8, 3, Placement{}, "no members"},
		{"duplicate member", []string{"n1", "n2", "n1"}, 8, 3, Placement{}, `duplicate member "n1"`},
		{"empty member", []string{"n1", ""}, 8, 3, Placement{}, "empty member id"},
		{"current of other size", nodes(3), 8, 3, Placement{Replicas: make([][]string, 4)}, "has 4 partitions, want 8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Place(tt.members, tt.p, tt.r, tt.current)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Place() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// The placement is part of the cluster's protocol: every node must compute
// the same one, release after release. Rewrite with go test ./ring -update
// only for a deliberate, documented change.
func TestPlaceGolden(t *testing.T) {
	var got strings.Builder
	for _, tt := range []struct {
		name  string
		p, r  int
		steps [][]string // each step starts from the previous one's placement
	}{
		{"P=8 R=3", 8, 3, [][]string{nodes(3)}},
		{"P=16 R=3", 16, 3, [][]string{nodes(5)}},
		{"P=16 R=3 join n6 then leave n3", 16, 3, [][]string{nodes(5), nodes(6), without(nodes(6), "n3")}},
		{"P=4 R=3 fewer members than replicas", 4, 3, [][]string{nodes(2)}},
		{"P=12 R=1", 12, 1, [][]string{nodes(4)}},
	} {
		var pl Placement
		for _, ms := range tt.steps {
			pl = mustPlace(t, ms, tt.p, tt.r, pl)
			fmt.Fprintf(&got, "# %s: members %s\n", tt.name, strings.Join(ms, ","))
			for q, set := range pl.Replicas {
				fmt.Fprintf(&got, "%d %s\n", q, strings.Join(set, " "))
			}
		}
	}
	path := filepath.Join("testdata", "placement.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gotLines, wantLines := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gotLines), len(wantLines)) {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Fatalf("%s:%d: got %q, want %q (placement changed; see TestPlaceGolden)", path, i+1, g, w)
		}
	}
}

func TestPlaceProperties(t *testing.T) {
	pool := []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11"}
	membersGen := rapid.SliceOfNDistinct(rapid.SampledFrom(pool), 1, 9, rapid.ID[string])
	rapid.Check(t, func(rt *rapid.T) {
		ms := membersGen.Draw(rt, "members")
		p := rapid.IntRange(1, 48).Draw(rt, "p")
		r := rapid.IntRange(1, 5).Draw(rt, "r")
		var cur Placement
		switch rapid.IntRange(0, 2).Draw(rt, "current kind") {
		case 1: // a placement computed for other members, possibly another r
			for range rapid.IntRange(1, 3).Draw(rt, "history") {
				other := membersGen.Draw(rt, "other members")
				var err error
				if cur, err = Place(other, p, rapid.IntRange(1, 5).Draw(rt, "other r"), cur); err != nil {
					rt.Fatal(err)
				}
			}
		case 2: // anything: non-members, duplicates, empty ids, short and long sets
			ids := rapid.SliceOfN(rapid.SampledFrom(append(pool, "", "gone")), 0, 7)
			cur.Replicas = rapid.SliceOfN(ids, p, p).Draw(rt, "garbage")
		}
		before := clonePlacement(cur)

		got, err := Place(ms, p, r, cur)
		if err != nil {
			rt.Fatalf("Place() = %v", err)
		}
		if err := check(ms, p, r, got); err != nil {
			rt.Fatal(err)
		}
		if !reflect.DeepEqual(cur, before) {
			rt.Fatalf("Place modified current: got %v, want %v", cur, before)
		}
		shuffled := rapid.Permutation(ms).Draw(rt, "shuffled members")
		if again, _ := Place(shuffled, p, r, cur); !reflect.DeepEqual(again, got) {
			rt.Fatalf("members %v: got %v, members %v: got %v, want equal", ms, got, shuffled, again)
		}
		if fixed, _ := Place(ms, p, r, got); !reflect.DeepEqual(fixed, got) {
			rt.Fatalf("Place of its own result: got %v, want %v", fixed, got)
		}
	})
}

func clonePlacement(pl Placement) Placement {
	if pl.Replicas == nil {
		return pl
	}
	out := Placement{Replicas: make([][]string, len(pl.Replicas))}
	for q, set := range pl.Replicas {
		out.Replicas[q] = slices.Clone(set)
	}
	return out
}

func TestDiff(t *testing.T) {
	pl := func(sets ...[]string) Placement { return Placement{Replicas: sets} }
	for _, tt := range []struct {
		name     string
		from, to Placement
		want     []Move
	}{
		{"same", pl([]string{"a", "b"}), pl([]string{"a", "b"}), nil},
		{"order of followers ignored", pl([]string{"a", "b", "c"}), pl([]string{"a", "c", "b"}), nil},
		{"bootstrap", Placement{}, pl([]string{"a", "b"}, []string{"b", "c"}), []Move{
			{Partition: 0, Add: []string{"a", "b"}, Leader: "a"},
			{Partition: 1, Add: []string{"b", "c"}, Leader: "b"},
		}},
		{"teardown", pl([]string{"a", "b"}), Placement{}, []Move{{Partition: 0, Remove: []string{"a", "b"}}}},
		{"replace follower", pl([]string{"a", "b", "c"}, []string{"b", "c", "d"}), pl([]string{"a", "b", "d"}, []string{"b", "c", "d"}), []Move{
			{Partition: 0, Add: []string{"d"}, Remove: []string{"c"}},
		}},
		{"leader only", pl([]string{"a", "b"}), pl([]string{"b", "a"}), []Move{{Partition: 0, Leader: "b"}}},
		{"replace leader", pl([]string{}, []string{"a", "b", "c"}), pl([]string{}, []string{"d", "b", "c"}), []Move{
			{Partition: 1, Add: []string{"d"}, Remove: []string{"a"}, Leader: "d"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diff(tt.from, tt.to); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Diff() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Applying Diff's moves to a placement gives the other one's replica sets
// and leaders.
func TestDiffApplies(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		p := rapid.IntRange(1, 32).Draw(rt, "p")
		from := mustPlace(rt, nodes(rapid.IntRange(1, 8).Draw(rt, "from members")), p, 3, Placement{})
		to := mustPlace(rt, nodes(rapid.IntRange(1, 8).Draw(rt, "to members")), p, 3, from)
		sets := clonePlacement(from).Replicas
		for _, m := range Diff(from, to) {
			s := slices.DeleteFunc(sets[m.Partition], func(id string) bool { return slices.Contains(m.Remove, id) })
			s = append(s, m.Add...)
			if m.Leader != "" {
				s = append([]string{m.Leader}, without(s, m.Leader)...)
			}
			sets[m.Partition] = s
		}
		for q := range sets {
			g, w := sets[q], to.Replicas[q]
			if g[0] != w[0] || !reflect.DeepEqual(slices.Sorted(slices.Values(g)), slices.Sorted(slices.Values(w))) {
				rt.Fatalf("partition %d: got %v after the moves, want %v", q, g, w)
			}
		}
	})
}

// joinBound is the most replicas a join to n nodes copies: the joiner's
// share ceil(p*r/(n+1)), or one per partition while n < r.
func joinBound(n, p, r int) int {
	if n < r {
		return p
	}
	return ceilDiv(p*r, n+1)
}

// leaveBound is the most replicas a leave of a node holding lost replicas
// copies: lost, plus one when exact balance leaves the last of them no free
// slot (DESIGN.md); none when the n-1 others already hold every partition.
func leaveBound(n, r, lost int) int {
	if n-1 < r {
		return 0
	}
	return lost + 1
}

// holds counts the partitions id holds.
func holds(pl Placement, id string) int {
	k := 0
	for _, set := range pl.Replicas {
		if slices.Contains(set, id) {
			k++
		}
	}
	return k
}

// TestPlaceMovement checks every join (n -> n+1) and leave (n -> n-1) from a
// fresh placement over a small grid against joinBound and leaveBound.
func TestPlaceMovement(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for p := 1; p <= 48; p++ {
			for r := 1; r <= 4; r++ {
				from := mustPlace(t, nodes(n), p, r, Placement{})
				to := mustPlace(t, nodes(n+1), p, r, from)
				if got, want := added(from, to), joinBound(n, p, r); got > want {
					t.Errorf("P=%d R=%d: join to %d nodes copies %d replicas, want at most %d", p, r, n, got, want)
				}
				if n == 1 {
					continue
				}
				for _, gone := range nodes(n) {
					to := mustPlace(t, without(nodes(n), gone), p, r, from)
					lost := holds(from, gone)
					if got, want := added(from, to), leaveBound(n, r, lost); got > want {
						t.Errorf("P=%d R=%d: %s leaving %d nodes copies %d replicas, want at most %d", p, r, gone, n, got, want)
					}
				}
			}
		}
	}
}

// TestPlaceMovementTable measures the fraction of replicas copied by a join
// and a leave (averaged over every leaving node) for R=3, against the
// ideal: the joiner's share 1/(n+1), the leaver's 1/n. Run with -v to print
// the table kept in DESIGN.md. It also checks that the bounds would catch a
// placement recomputed from scratch (column "scratch").
func TestPlaceMovementTable(t *testing.T) {
	const r = 3
	var table strings.Builder
	fmt.Fprintf(&table, "| P | N | change | ideal | moved | leaders moved | scratch |\n|---|---|---|---|---|---|---|\n")
	cases, caught := 0, 0
	row := func(p, n int, change string, ideal, moved, leaders, scratch float64) {
		fmt.Fprintf(&table, "| %d | %d | %s | %.3f | %.3f | %.1f of %d | %.3f |\n", p, n, change, ideal, moved, leaders, p, scratch)
	}
	for _, p := range []int{8, 16, 64} {
		for n := 3; n <= 8; n++ {
			total := float64(p * r)
			from := mustPlace(t, nodes(n), p, r, Placement{})
			to := mustPlace(t, nodes(n+1), p, r, from)
			if got, want := added(from, to), joinBound(n, p, r); got > want {
				t.Errorf("P=%d: join to %d nodes copies %d replicas, want at most %d", p, n, got, want)
			}
			scratch := added(from, mustPlace(t, nodes(n+1), p, r, Placement{}))
			cases++
			if scratch > joinBound(n, p, r) {
				caught++
			}
			row(p, n, "join", 1/float64(n+1), float64(added(from, to))/total, float64(leaderChanges(from, to)), float64(scratch)/total)

			var moved, leaders, scratchSum int
			for _, gone := range nodes(n) {
				ms := without(nodes(n), gone)
				to := mustPlace(t, ms, p, r, from)
				lost := holds(from, gone)
				if got, want := added(from, to), leaveBound(n, r, lost); got > want {
					t.Errorf("P=%d: %s leaving %d nodes copies %d replicas, want at most %d", p, gone, n, got, want)
				}
				scratch := added(from, mustPlace(t, ms, p, r, Placement{}))
				cases++
				if scratch > leaveBound(n, r, lost) {
					caught++
				}
				moved += added(from, to)
				leaders += leaderChanges(from, to)
				scratchSum += scratch
			}
			ideal, all := 1/float64(n), float64(n)*float64(p*min(r, n-1))
			if n-1 < r {
				ideal = 0
			}
			row(p, n, "leave", ideal, float64(moved)/all, float64(leaders)/float64(n), float64(scratchSum)/all)
		}
	}
	t.Logf("replicas copied per membership change, R=%d, as fractions of all replicas:\n%s", r, table.String())
	if caught < cases/2 {
		t.Errorf("a placement from scratch breaks the movement bounds in %d of %d changes, want at least half: bounds too loose", caught, cases)
	}
}

func BenchmarkPlace(b *testing.B) {
	for _, p := range []int{64, 1024} {
		b.Run(fmt.Sprintf("P=%d/N=8/join", p), func(b *testing.B) {
			from := mustPlace(b, nodes(8), p, 3, Placement{})
			for b.Loop() {
				mustPlace(b, nodes(9), p, 3, from)
			}
		})
	}
}
