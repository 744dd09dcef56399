package fsm

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
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
			if tc.tags != 0 {
				seed := maphash.MakeSeed()
				x.hashFn = func(s string) uint64 {
					h := uint32(maphash.String(seed, s) >> 32)
					// Keep the directory bits varied but the line bits
					// from a few values; the low half all zero, so long
					// items' keys collide too.
					return uint64(h&0xFFF80000|uint32(int(h>>1)%tc.tags)<<1|1) << 32
				}
			}
			model := map[string]uint32{}
			var free []uint32
			check := func(s string) {
				id, ok := x.get(s)
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
					x.put(s, id)
					model[s] = id
				case 2: // delete
					id, ok := model[s]
					if got := x.del(s); got != ok {
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
					id1, k0, k1 := tb.slotAt(j)
					if id1 == 0 {
						continue
					}
					s := items.get(int(id1 - 1))
					h := x.hash(s)
					if x.table(h) != tb {
						t.Fatalf("id %d in the wrong table", id1-1)
					}
					if w0, w1, _ := packKey(s, h); k0 != w0 || k1 != w1 {
						t.Fatalf("id %d: key %x %x, want %x %x", id1-1, k0, k1, w0, w1)
					}
					if kh := x.keyHash(k0, k1); kh != h {
						t.Fatalf("id %d: hash from key %x, want %x", id1-1, kh, h)
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

// Deep directory: all hashes share their top 18 bits, so splits must go to
// depth 19 and separate by bit 13, above the line bits (1..11).
func TestItemIndexDeepDirectory(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	r := rand.New(rand.NewPCG(1, 2))
	tags := map[string]uint32{}
	for i := range 5000 {
		tags[fmt.Sprintf("d%d", i)] = uint32(0xABCDC000) | uint32(r.IntN(2))<<13 | uint32(r.Uint32()&0x1FFE) | 1
	}
	x.hashFn = func(s string) uint64 { return uint64(tags[s]) << 32 }
	for i := range 5000 {
		s := fmt.Sprintf("d%d", i)
		x.put(s, uint32(items.append(s)))
	}
	if x.depth != 19 {
		t.Fatalf("depth %d", x.depth)
	}
	for s := range tags {
		if id, ok := x.get(s); !ok || items.get(int(id)) != s {
			t.Fatalf("lost %q", s)
		}
	}
	for i := range 5000 {
		if i%2 == 0 {
			s := fmt.Sprintf("d%d", i)
			if !x.del(s) {
				t.Fatalf("del %q", s)
			}
			delete(tags, s)
		}
	}
	for s := range tags {
		if _, ok := x.get(s); !ok {
			t.Fatalf("lost %q after deletes", s)
		}
	}
	t.Logf("depth %d slots %d bytes %d", x.depth, x.slots, x.bytes())
}

// Wraparound: homes at the last lines of an 8-line table, so probe runs
// and backward shifts wrap to line 0; short and long items mixed.
func TestItemIndexDeleteWraps(t *testing.T) {
	for trial := range 2000 {
		r := rand.New(rand.NewPCG(uint64(trial), 9))
		var items cowArray[string]
		x := newItemIndex(&items, 0)
		tags := map[string]uint32{}
		var names []string
		for i := range 16 {
			s := fmt.Sprintf("w%d", i)
			if i%3 == 0 {
				s += "-too-long-for-a-key"
			}
			home := uint32(5 + r.IntN(3)) // lines 5..7
			tags[s] = uint32(r.IntN(3))<<20 | home<<1 | 1
			names = append(names, s)
		}
		x.hashFn = func(s string) uint64 { return uint64(tags[s]) << 32 }
		for _, s := range names {
			x.put(s, uint32(items.append(s)))
		}
		if x.dir[0].lines() != ixMinLines {
			t.Fatal("grew")
		}
		live := map[string]bool{}
		for _, s := range names {
			live[s] = true
		}
		for _, i := range r.Perm(len(names)) {
			s := names[i]
			if !x.del(s) {
				t.Fatalf("trial %d: del %q failed", trial, s)
			}
			delete(live, s)
			for s2 := range live {
				if id, ok := x.get(s2); !ok || items.get(int(id)) != s2 {
					t.Fatalf("trial %d: lost %q", trial, s2)
				}
			}
		}
	}
}

// Every item with the same 64-bit hash, short and long: lookupBatch, get
// and del still tell them apart by key and, for long items, by string.
func TestItemIndexHashCollision(t *testing.T) {
	var items cowArray[string]
	x := newItemIndex(&items, 0)
	x.hashFn = func(string) uint64 { return 0x9E3779B97F4A7C15 }
	names := []string{"a", "b", "a-long-item-name-one", "a-long-item-name-two", "c", "a-long-item-name-three"}
	for _, s := range names {
		x.put(s, uint32(items.append(s)))
	}
	q := append(slices.Clone(names), "zz", "a-long-item-name-four")
	_, ids := x.lookupBatch(q, nil, nil)
	for i, s := range q {
		want := uint32(i)
		if i >= len(names) {
			want = noID
		}
		if ids[i] != want {
			t.Fatalf("lookupBatch(%q) = %d, want %d", s, ids[i], want)
		}
	}
	for _, i := range []int{2, 0, 5} {
		if !x.del(names[i]) {
			t.Fatalf("del %q", names[i])
		}
		items.set(i, "")
	}
	for i, s := range names {
		id, ok := x.get(s)
		if gone := i == 2 || i == 0 || i == 5; ok == gone || (ok && id != uint32(i)) {
			t.Fatalf("get(%q) = %d, %v after deletes", s, id, ok)
		}
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
