package fsm

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"unsafe"
)

// itemIndex maps an item to its id: extendible hashing over tables of
// 64-byte lines of three slots, each slot an item's 16-byte inline key and
// its id. It replaces a map[string]uint32 for three reasons:
//
//   - batch lookups: lookupBatch hashes every item of an entry and prefetches
//     their lines in one tight loop, then probes and verifies in a second,
//     so the cache misses of different items overlap instead of forming
//     one dependent chain per item inside the apply loop;
//   - one line per lookup: an item's home is a line, not a slot, and its key
//     sits in the slot, so a lookup reads the line stage one prefetched and
//     nothing else, unless the line overflowed (DESIGN.md);
//   - no pointers for the GC to scan.
//
// Growth never reads an item: a table doubles, or splits in two by the next
// bit of the hash, and a slot's hash is recomputed from its inline key (a
// long item's key is its hash). The seed is per process; it cannot reach
// replicated state, because ids are assigned in log order and the index is
// never iterated.
type itemIndex struct {
	items *cowArray[string]
	seed  maphash.Seed
	// hashFn replaces the seeded hash in tests that need collisions.
	hashFn func(string) uint64
	dir    []*ixTable // 2^depth entries; a table of local depth d fills 2^(depth-d) of them
	depth  uint8
	n      int
	slots  int // over all tables
}

// A line is 8 words: the keys of slots 0, 1, 2 (two words each), then the
// ids plus one of slots 0 and 1 (low and high half of word 6) and of slot 2
// (low half of word 7). An id of 0 marks an empty slot.
const (
	ixLineWords = 8
	ixLineSlots = 3
)

type ixTable struct {
	slots []uint64  // ixLineWords words per line
	blk   *offBlock // owns slots when they are off the heap (offheap.go)
	used  int
	depth uint8
}

func newIxTable(lines int, depth uint8) *ixTable {
	t := &ixTable{depth: depth}
	t.slots, t.blk = makeFlat[uint64](lines*ixLineWords, lines*ixLineWords)
	return t
}

func (t *ixTable) lines() int { return len(t.slots) / ixLineWords }

// size is the table's number of slots.
func (t *ixTable) size() int { return ixLineSlots * t.lines() }

func (t *ixTable) line(li int) *[ixLineWords]uint64 {
	return (*[ixLineWords]uint64)(t.slots[li*ixLineWords:])
}

// slotID is slot j's id plus one (0: empty).
func slotID(l *[ixLineWords]uint64, j int) uint32 {
	return uint32(l[6+j>>1] >> (32 * (j & 1)))
}

func setSlot(l *[ixLineWords]uint64, j int, id1 uint32, k0, k1 uint64) {
	l[2*j], l[2*j+1] = k0, k1
	w, sh := 6+j>>1, 32*(j&1)
	l[w] = l[w]&^(0xFFFFFFFF<<sh) | uint64(id1)<<sh
}

// slotAt is slot i (line i/3, slot i%3) of t: its id plus one and key.
func (t *ixTable) slotAt(i int) (id1 uint32, k0, k1 uint64) {
	l, j := t.line(i/ixLineSlots), i%ixLineSlots
	return slotID(l, j), l[2*j], l[2*j+1]
}

func (t *ixTable) setAt(i int, id1 uint32, k0, k1 uint64) {
	setSlot(t.line(i/ixLineSlots), i%ixLineSlots, id1, k0, k1)
}

const (
	ixMinLines = 8
	ixMaxLines = 2048 // 128 KiB tables
	// A table splits or doubles above 3/4 full: probes stay within a line or two.
	ixLoadNum, ixLoadDen = 3, 4
	// maxIxDepth keeps directory bits (the top ones of a tag) clear of the
	// line bits (1..11): 2^19 tables of 6,144 slots, far beyond memory.
	maxIxDepth = 19
)

func newItemIndex(items *cowArray[string], sizeHint int) *itemIndex {
	x := &itemIndex{items: items, seed: maphash.MakeSeed()}
	lines := ixMinLines
	for lines < ixMaxLines && lines*ixLineSlots*ixLoadNum/ixLoadDen < sizeHint {
		lines *= 2
	}
	// A large hint (a restore) starts with as many full tables as it needs
	// at about 60% load, so building the index splits no table.
	var depth uint8
	for depth < maxIxDepth && (1<<depth)*ixMaxLines*ixLineSlots*3/5 < sizeHint {
		depth++
	}
	x.depth = depth
	x.dir = make([]*ixTable, 1<<depth)
	for i := range x.dir {
		x.dir[i] = newIxTable(lines, depth)
	}
	x.slots = lines * ixLineSlots << depth
	return x
}

func (x *itemIndex) hash(s string) uint64 {
	if x.hashFn != nil {
		return x.hashFn(s)
	}
	return maphash.String(x.seed, s)
}

// tagOf is the high half of a hash: its top bits pick the table, bits
// 1..11 the home line.
func tagOf(h uint64) uint32 { return uint32(h >> 32) }

func (x *itemIndex) table(h uint64) *ixTable {
	return x.dir[uint64(tagOf(h))>>(32-x.depth)]
}

func (t *ixTable) start(h uint64) int { return int(tagOf(h)>>1) & (t.lines() - 1) }

// get returns item s's id.
func (x *itemIndex) get(s string) (uint32, bool) {
	return x.probe(s, x.hash(s))
}

func (x *itemIndex) probe(s string, h uint64) (uint32, bool) {
	t, i := x.find(s, h)
	if i < 0 {
		return 0, false
	}
	id1, _, _ := t.slotAt(i)
	return id1 - 1, true
}

// find returns s's table and slot, or slot -1 when s is absent.
func (x *itemIndex) find(s string, h uint64) (*ixTable, int) {
	t := x.table(h)
	mask := t.lines() - 1
	k0, k1, short := packKey(s, h)
	for li := t.start(h); ; li = (li + 1) & mask {
		l := t.line(li)
		for j := range ixLineSlots {
			id1 := slotID(l, j)
			if id1 == 0 {
				return t, -1
			}
			if l[2*j] == k0 && l[2*j+1] == k1 && (short || x.items.get(int(id1-1)) == s) {
				return t, li*ixLineSlots + j
			}
		}
	}
}

// longKey marks the key of an item longer than 15 bytes: its length
// byte, 255, is no short item's.
const longKey = 0xFF << 56

// packKey is s's inline key: its bytes, zero padding, then its length, when
// s has at most 15 bytes; otherwise its hash h and longKey, and s compares
// as a string once the hash matched.
func packKey(s string, h uint64) (k0, k1 uint64, short bool) {
	if len(s) > 15 {
		return h, longKey, false
	}
	var b [16]byte
	copy(b[:], s)
	b[15] = byte(len(s))
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:]), true
}

// keyHash is the hash of the item a slot's key stands for.
func (x *itemIndex) keyHash(k0, k1 uint64) uint64 {
	if k1 == longKey {
		return k0
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], k0)
	binary.LittleEndian.PutUint64(b[8:], k1)
	return x.hash(unsafe.String(&b[0], int(b[15])))
}

// put adds s -> id; s must be absent.
func (x *itemIndex) put(s string, id uint32) {
	h := x.hash(s)
	t := x.table(h)
	for (t.used+1)*ixLoadDen > t.size()*ixLoadNum {
		x.grow(t)
		t = x.table(h)
	}
	k0, k1, _ := packKey(s, h)
	t.insert(h, id+1, k0, k1)
	x.n++
}

// insert puts a slot in the first empty slot from its home line on.
func (t *ixTable) insert(h uint64, id1 uint32, k0, k1 uint64) {
	mask := t.lines() - 1
	for li := t.start(h); ; li = (li + 1) & mask {
		l := t.line(li)
		for j := range ixLineSlots {
			if slotID(l, j) == 0 {
				setSlot(l, j, id1, k0, k1)
				t.used++
				return
			}
		}
	}
}

// del removes s, shifting later slots of its probe run back (no tombstones).
func (x *itemIndex) del(s string) bool {
	t, i := x.find(s, x.hash(s))
	if i < 0 {
		return false
	}
	n := t.size() // not a power of two: three slots a line
	// Backward-shift deletion over slot indices: move each later slot of
	// the run into the hole unless its home (the first slot of its home
	// line) lies cyclically in (hole, slot].
	hole := i
	for j := (i + 1) % n; ; j = (j + 1) % n {
		id1, k0, k1 := t.slotAt(j)
		if id1 == 0 {
			break
		}
		home := t.start(x.keyHash(k0, k1)) * ixLineSlots
		if (j-home+n)%n >= (j-hole+n)%n {
			t.setAt(hole, id1, k0, k1)
			hole = j
		}
	}
	t.setAt(hole, 0, 0, 0)
	t.used--
	x.n--
	return true
}

// grow makes room in t: doubles it up to ixMaxLines, then splits it.
func (x *itemIndex) grow(t *ixTable) {
	if n := t.lines(); n < ixMaxLines {
		old := *t
		t.slots, t.blk = makeFlat[uint64](2*n*ixLineWords, 2*n*ixLineWords)
		x.slots += n * ixLineSlots
		t.used = 0
		for i := range old.size() {
			if id1, k0, k1 := old.slotAt(i); id1 != 0 {
				t.insert(x.keyHash(k0, k1), id1, k0, k1)
			}
		}
		runtime.KeepAlive(old.blk)
		return
	}
	if t.depth == x.depth {
		if x.depth >= maxIxDepth {
			panic("fsm: item index beyond its maximum depth")
		}
		x.doubleDir()
	}
	x.split(t)
}

func (x *itemIndex) doubleDir() {
	nd := make([]*ixTable, 2*len(x.dir))
	for i, t := range x.dir {
		nd[2*i], nd[2*i+1] = t, t
	}
	x.dir = nd
	x.depth++
}

// split replaces t (local depth < directory depth) by two tables of depth
// t.depth+1, told apart by the next hash bit.
func (x *itemIndex) split(t *ixTable) {
	d := t.depth + 1
	lo := newIxTable(t.lines(), d)
	hi := newIxTable(t.lines(), d)
	bit := uint32(1) << (32 - d)
	var any uint32
	for i := range t.size() {
		id1, k0, k1 := t.slotAt(i)
		if id1 == 0 {
			continue
		}
		h := x.keyHash(k0, k1)
		if tagOf(h)&bit != 0 {
			hi.insert(h, id1, k0, k1)
		} else {
			lo.insert(h, id1, k0, k1)
		}
		any = tagOf(h)
	}
	// t fills a run of 2^(depth-t.depth) directory entries; the lower half goes to lo.
	span := 1 << (x.depth - t.depth)
	first := int(uint64(any)>>(32-x.depth)) &^ (span - 1)
	for i := range span {
		if i < span/2 {
			x.dir[first+i] = lo
		} else {
			x.dir[first+i] = hi
		}
	}
	x.slots += t.size()
}

// lookupBatch resolves the ids of items into ids (noID when absent) in
// stages whose loads are independent across items, so their cache misses
// overlap: hash each item and prefetch its home line; for items longer
// than an inline key, find the first slot whose key holds their hash and
// prefetch its string header, then the string's bytes; then probe and
// verify with everything cached. hashes is scratch.
func (x *itemIndex) lookupBatch(items []string, hashes []uint64, ids []uint32) ([]uint64, []uint32) {
	hashes, ids = hashes[:0], ids[:0]
	long := false
	for _, s := range items {
		h := x.hash(s)
		hashes = append(hashes, h)
		t := x.table(h)
		prefetch(unsafe.Pointer(&t.slots[t.start(h)*ixLineWords]))
		long = long || len(s) > 15
	}
	// ids holds each long item's candidate until the probe below.
	ids = resized(ids, len(items))
	if long {
		for i, h := range hashes {
			ids[i] = noID
			if len(items[i]) > 15 {
				if ids[i] = x.candidate(h); ids[i] != noID {
					x.items.prefetch(int(ids[i]))
				}
			}
		}
		for _, id := range ids {
			if id != noID {
				if c := x.items.get(int(id)); len(c) > 0 {
					prefetch(unsafe.Pointer(unsafe.StringData(c)))
				}
			}
		}
	}
	for i, s := range items {
		id, ok := x.probe(s, hashes[i])
		if !ok {
			id = noID
		}
		ids[i] = id
	}
	return hashes, ids
}

// prefetchSlot hints the home line of s, for loops that put or get many
// items one after another.
func (x *itemIndex) prefetchSlot(s string) {
	h := x.hash(s)
	t := x.table(h)
	prefetch(unsafe.Pointer(&t.slots[t.start(h)*ixLineWords]))
}

// candidate is the id of the first slot holding a long item of hash h,
// without verifying it.
func (x *itemIndex) candidate(h uint64) uint32 {
	t := x.table(h)
	mask := t.lines() - 1
	for li := t.start(h); ; li = (li + 1) & mask {
		l := t.line(li)
		for j := range ixLineSlots {
			id1 := slotID(l, j)
			if id1 == 0 {
				return noID
			}
			if l[2*j] == h && l[2*j+1] == longKey {
				return id1 - 1
			}
		}
	}
}

const noID = ^uint32(0)

// bytes is the memory of the slots and the directory.
func (x *itemIndex) bytes() int64 {
	return int64(x.slots/ixLineSlots)*ixLineWords*8 + int64(len(x.dir))*int64(unsafe.Sizeof(uintptr(0)))
}
