package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestItemIndexModel runs random puts, gets and deletes of short and long
// items against a map, with real tags and with tags whose slot bits take a
// few values (long probe runs of equal starts), growing to 200k items so
// tables double, split and the directory doubles.
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
				if len(s)%3 == 0 { // some items too long for an inline key
					s += "-with-a-long-tail"
				}
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
				slots += tb.size()
				if tb.used*ixLoadDen > tb.size()*ixLoadNum {
					t.Fatalf("table at %d: %d of %d slots used", i, tb.used, tb.size())
				}
				for j := range tb.size() {
					e := tb.slot(j)
					if e[0] == 0 {
						continue
					}
					if x.table(uint32(e[0]>>32)) != tb {
						t.Fatalf("entry %x in the wrong table", e[0])
					}
					if k0, k1, _ := packKey(items.get(int(uint32(e[0])))); e[1] != k0 || e[2] != k1 {
						t.Fatalf("entry %x: key %x %x, want %x %x", e[0], e[1], e[2], k0, k1)
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

// Deep directory: all tags share their top 18 bits, so splits must go to
// depth 19 and separate by bit 13, right above the slot bits (1..12).
func TestItemIndexDeepDirectory(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	r := rand.New(rand.NewPCG(1, 2))
	tags := map[string]uint32{}
	for i := range 5000 {
		s := fmt.Sprintf("d%d", i)
		tag := uint32(0xABCDC000) | uint32(r.IntN(2))<<13 | uint32(r.Uint32()&0x1FFE) | 1
		tags[s] = tag
		x.putTag(s, uint32(items.append(s)), tag)
	}
	if x.depth != 19 {
		t.Fatalf("depth %d", x.depth)
	}
	for s, tag := range tags {
		if id, ok := x.probe(s, tag); !ok || items.get(int(id)) != s {
			t.Fatalf("lost %q", s)
		}
	}
	for i := range 5000 {
		if i%2 == 0 {
			s := fmt.Sprintf("d%d", i)
			if !x.delTag(s, tags[s]) {
				t.Fatalf("del %q", s)
			}
			delete(tags, s)
		}
	}
	for s, tag := range tags {
		if _, ok := x.probe(s, tag); !ok {
			t.Fatalf("lost %q after deletes", s)
		}
	}
	t.Logf("depth %d slots %d bytes %d", x.depth, x.slots, x.bytes())
}

// Wraparound: homes at the last slots of a 16-slot table.
func TestItemIndexDeleteWraps(t *testing.T) {
	for trial := range 2000 {
		r := rand.New(rand.NewPCG(uint64(trial), 9))
		var items cowArray[string]
		x := newItemIndex(&items, 0)
		m := map[string]uint32{}
		for i := range 11 {
			s := fmt.Sprintf("w%d", i)
			home := uint32(12 + r.IntN(4)) // 12..15
			tag := uint32(r.IntN(3))<<20 | home<<1 | 1
			m[s] = tag
			x.putTag(s, uint32(items.append(s)), tag)
		}
		if x.dir[0].size() != 16 {
			t.Fatal("grew")
		}
		for _, i := range r.Perm(11) {
			s := fmt.Sprintf("w%d", i)
			if !x.delTag(s, m[s]) {
				t.Fatalf("trial %d: del %q failed", trial, s)
			}
			delete(m, s)
			for s2, tag := range m {
				if _, ok := x.probe(s2, tag); !ok {
					t.Fatalf("trial %d: lost %q", trial, s2)
				}
			}
		}
	}
}

// Full 32-bit tag collision between two strings: lookupBatch and del must
// still tell them apart.
func TestItemIndexTagCollision(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	seen := map[uint32]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		s := fmt.Sprintf("c%d", i)
		tag := x.tagOf(s)
		if o, ok := seen[tag]; ok {
			a, b = o, s
		}
		seen[tag] = s
	}
	ida := uint32(items.append(a))
	x.put(a, ida)
	idb := uint32(items.append(b))
	x.put(b, idb)
	_, ids := x.lookupBatch([]string{b, a, "zz"}, nil, nil)
	if ids[0] != idb || ids[1] != ida || ids[2] != noID {
		t.Fatalf("lookupBatch %v", ids)
	}
	x.del(a)
	items.set(int(ida), "")
	if id, ok := x.get(b); !ok || id != idb {
		t.Fatal("lost b")
	}
	if _, ok := x.get(a); ok {
		t.Fatal("a still there")
	}
}

// TestItemIndexInlineKeys mixes items around the 15-byte inline limit that
// share prefixes, differ only in trailing zero bytes or length, and exceed
// the limit: each finds its own id, and absent neighbours find none.
func TestItemIndexInlineKeys(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	base := "abcdefghijklmnopqrstuvwxyz"
	var names []string
	for n := 0; n <= 20; n++ {
		names = append(names, base[:n], base[:n]+"\x00", "\x00"+base[:n])
	}
	present := map[string]uint32{}
	for i, s := range names {
		if i%2 == 0 {
			if _, dup := present[s]; dup {
				continue
			}
			id := uint32(items.append(s))
			x.put(s, id)
			present[s] = id
		}
	}
	for _, s := range names {
		id, ok := x.get(s)
		want, wok := present[s]
		if ok != wok || (ok && id != want) {
			t.Fatalf("get(%q) = %d, %v; want %d, %v", s, id, ok, want, wok)
		}
	}
	ids := make([]uint32, 0, len(names))
	_, got := x.lookupBatch(names, nil, ids)
	for i, s := range names {
		if want, ok := present[s]; (ok && got[i] != want) || (!ok && got[i] != noID) {
			t.Fatalf("lookupBatch(%q) = %d, want %d (present %v)", s, got[i], want, ok)
		}
	}
}

// TestItemIndexPresized builds an index from a large size hint, as a restore
// does: it starts deep enough that the puts split no table.
func TestItemIndexPresized(t *testing.T) {
	var items cowArray[string]
	const n = 100_000
	x := newItemIndex(&items, n)
	if x.depth == 0 {
		t.Fatalf("depth 0 for a hint of %d", n)
	}
	slots := x.slots
	for i := range n {
		s := fmt.Sprintf("presized-%d", i)
		x.prefetchSlot(s)
		x.put(s, uint32(items.append(s)))
	}
	if x.slots != slots {
		t.Fatalf("slots grew from %d to %d: a table split", slots, x.slots)
	}
	for i := range n {
		if id, ok := x.get(fmt.Sprintf("presized-%d", i)); !ok || id != uint32(i) {
			t.Fatalf("get(presized-%d) = %d, %v", i, id, ok)
		}
	}
}
