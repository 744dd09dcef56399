package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestItemIndexModel runs random puts, gets and deletes against a map, with
// real tags and with tags drawn from a few values (so probe runs collide,
// wrap around tables and cross splits), growing to 200k items so tables
// double, split and the directory doubles.
func TestItemIndexModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		tags int // distinct tags; 0: the real hash
		n    int
	}{{"hash", 0, 200_000}, {"colliding", 5, 3_000}, {"few", 4096, 60_000}} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(tc.n)))
			var items cowArray[string]
			x := newItemIndex(&items, 0)
			tagOf := func(s string) uint32 {
				if tc.tags == 0 {
					return x.tagOf(s)
				}
				h := x.tagOf(s)
				// Keep the directory bits varied but the rest from a few values.
				return h&0xFFF80000 | uint32(int(h>>1)%tc.tags)<<1 | 1
			}
			model := map[string]uint32{}
			var free []uint32
			check := func(s string) {
				id, ok := x.probe(s, tagOf(s))
				want, wok := model[s]
				if ok != wok || (ok && id != want) {
					t.Fatalf("get(%q) = %d, %v; want %d, %v", s, id, ok, want, wok)
				}
			}
			for op := 0; op < 4*tc.n; op++ {
				s := fmt.Sprintf("item-%d", r.IntN(tc.n))
				switch r.IntN(4) {
				case 0, 1: // put
					if _, ok := model[s]; ok {
						check(s)
						continue
					}
					var id uint32
					if len(free) > 0 && r.IntN(2) == 0 {
						id, free = free[len(free)-1], free[:len(free)-1]
						items.set(int(id), s)
					} else {
						id = uint32(items.append(s))
					}
					x.putTag(s, id, tagOf(s))
					model[s] = id
				case 2: // delete
					id, ok := model[s]
					if got := x.delTag(s, tagOf(s)); got != ok {
						t.Fatalf("del(%q) = %v, want %v", s, got, ok)
					}
					if ok {
						delete(model, s)
						items.set(int(id), "")
						free = append(free, id)
					}
				default:
					check(s)
				}
				if x.len() != len(model) {
					t.Fatalf("len %d, want %d", x.len(), len(model))
				}
			}
			for s := range model {
				check(s)
			}
			// Every table is within its load, and the slot count adds up.
			slots := 0
			var last *ixTable
			for i, tb := range x.dir {
				if tb == last {
					continue
				}
				last = tb
				slots += len(tb.slots)
				if tb.used*ixLoadDen > len(tb.slots)*ixLoadNum {
					t.Fatalf("table at %d: %d of %d slots used", i, tb.used, len(tb.slots))
				}
				for _, e := range tb.slots {
					if e != 0 && x.table(uint32(e>>32)) != tb {
						t.Fatalf("entry %x in the wrong table", e)
					}
				}
			}
			if slots != x.slots {
				t.Fatalf("slots %d, counted %d", x.slots, slots)
			}
			t.Logf("%d items, depth %d, %d slots, %d bytes", x.len(), x.depth, x.slots, x.bytes())
		})
	}
}

func TestItemIndexBatch(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	for i := range 10_000 {
		s := fmt.Sprintf("song_%d", i)
		x.put(s, uint32(items.append(s)))
	}
	q := []string{"song_5", "nope", "song_9999", "song_5", ""}
	_, ids := x.lookupBatch(q, nil, nil)
	want := []uint32{5, noID, 9999, 5, noID}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("lookupBatch(%q) = %v, want %v", q, ids, want)
		}
	}
}
