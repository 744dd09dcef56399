package fsm

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"unsafe"
)

// itemIndex maps an item to its id: extendible hashing over tables of
// 32-byte slots (a 32-bit hash tag, the id and the item's inline key),
// verified against that key or, for items longer than 15 bytes, the item
// table. It replaces a map[string]uint32 for three reasons:
//
//   - batch lookups: lookupBatch hashes every item of an entry and prefetches
//     their slots in one tight loop, then probes and verifies in a second,
//     so the cache misses of different items overlap instead of forming
//     one dependent chain per item inside the apply loop;
//   - one line per lookup: the key sits in the slot, so verifying a short
//     item reads the line the probe already loaded (the key used to be in
//     an array by id, a second line per lookup; DESIGN.md);
//   - no pointers for the GC to scan.
//
// Growth never rehashes a string: a table doubles, or splits in two by the
// next bit of its tags, moving only slots. The seed is per process; it
// cannot reach replicated state, because ids are assigned in log order and
// the index is never iterated.
type itemIndex struct {
	items *cowArray[string]
	seed  maphash.Seed
	dir   []*ixTable // 2^depth entries; a table of local depth d fills 2^(depth-d) of them
	depth uint8
	n     int
	slots int // over all tables
}

// A slot is ixSlotWords words: tag<<32 | id (0 is empty: tags are odd),
// then the inline key (packKey), then a spare word that keeps two slots to
// a cache line.
const ixSlotWords = 4

type ixTable struct {
	slots []uint64  // ixSlotWords words per slot
	blk   *offBlock // owns slots when they are off the heap (offheap.go)
	used  int
	depth uint8
}

func newIxTable(slots int, depth uint8) *ixTable {
	t := &ixTable{depth: depth}
	t.slots, t.blk = makeFlat[uint64](slots*ixSlotWords, slots*ixSlotWords)
	return t
}

// size is the table's number of slots.
func (t *ixTable) size() int { return len(t.slots) / ixSlotWords }

func (t *ixTable) slot(i int) *[ixSlotWords]uint64 {
	return (*[ixSlotWords]uint64)(t.slots[i*ixSlotWords:])
}

const (
	ixMinSlots = 16
	ixMaxSlots = 4096
	// A table splits or doubles above 3/4 full: linear probes stay short.
	ixLoadNum, ixLoadDen = 3, 4
	// maxIxDepth keeps directory bits (the top ones of a tag) clear of the
	// slot bits (bits 1..12): 2^19 tables of 4096 slots, far beyond memory.
	maxIxDepth = 19
)

func newItemIndex(items *cowArray[string], sizeHint int) *itemIndex {
	x := &itemIndex{items: items, seed: maphash.MakeSeed()}
	slots := ixMinSlots
	for slots < ixMaxSlots && slots*ixLoadNum/ixLoadDen < sizeHint {
		slots *= 2
	}
	// A large hint (a restore) starts with as many full tables as it needs
	// at about 60% load, so building the index splits no table.
	var depth uint8
	for depth < maxIxDepth && (1<<depth)*ixMaxSlots*3/5 < sizeHint {
		depth++
	}
	x.depth = depth
	x.dir = make([]*ixTable, 1<<depth)
	for i := range x.dir {
		x.dir[i] = newIxTable(slots, depth)
	}
	x.slots = slots << depth
	return x
}

// tagOf is the high half of the hash with its low bit set, so no slot is 0.
func (x *itemIndex) tagOf(s string) uint32 {
	return uint32(maphash.String(x.seed, s)>>32) | 1
}

func (x *itemIndex) table(tag uint32) *ixTable {
	return x.dir[uint64(tag)>>(32-x.depth)]
}

func (t *ixTable) start(tag uint32) int { return int(tag>>1) & (t.size() - 1) }

func (x *itemIndex) len() int { return x.n }

// get returns item s's id.
func (x *itemIndex) get(s string) (uint32, bool) {
	return x.probe(s, x.tagOf(s))
}

func (x *itemIndex) probe(s string, tag uint32) (uint32, bool) {
	t, i := x.find(s, tag)
	if i < 0 {
		return 0, false
	}
	return uint32(t.slot(i)[0]), true
}

// find returns s's table and slot, or slot -1 when s is absent.
func (x *itemIndex) find(s string, tag uint32) (*ixTable, int) {
	t := x.table(tag)
	mask := t.size() - 1
	k0, k1, short := packKey(s)
	for i := t.start(tag); ; i = (i + 1) & mask {
		e := t.slot(i)
		if e[0] == 0 {
			return t, -1
		}
		if uint32(e[0]>>32) == tag && e[1] == k0 && e[2] == k1 && (short || x.items.get(int(uint32(e[0]))) == s) {
			return t, i
		}
	}
}

// longKey marks the key of an item longer than 15 bytes: its length
// byte, 255, is no short item's.
const longKey = 0xFF << 56

// packKey is s's inline key: its bytes, zero padding, then its length, when
// s has at most 15 bytes; otherwise (0, longKey), and s compares as a string.
func packKey(s string) (k0, k1 uint64, short bool) {
	if len(s) > 15 {
		return 0, longKey, false
	}
	var b [16]byte
	copy(b[:], s)
	b[15] = byte(len(s))
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:]), true
}

// put adds s -> id; s must be absent.
func (x *itemIndex) put(s string, id uint32) { x.putTag(s, id, x.tagOf(s)) }

func (x *itemIndex) putTag(s string, id uint32, tag uint32) {
	t := x.table(tag)
	for (t.used+1)*ixLoadDen > t.size()*ixLoadNum {
		x.grow(t)
		t = x.table(tag)
	}
	k0, k1, _ := packKey(s)
	t.insert(&[ixSlotWords]uint64{uint64(tag)<<32 | uint64(id), k0, k1})
	x.n++
}

func (t *ixTable) insert(e *[ixSlotWords]uint64) {
	mask := t.size() - 1
	i := t.start(uint32(e[0] >> 32))
	for t.slot(i)[0] != 0 {
		i = (i + 1) & mask
	}
	*t.slot(i) = *e
	t.used++
}

// del removes s, shifting later slots of its probe run back (no tombstones).
func (x *itemIndex) del(s string) bool { return x.delTag(s, x.tagOf(s)) }

func (x *itemIndex) delTag(s string, tag uint32) bool {
	t, i := x.find(s, tag)
	if i < 0 {
		return false
	}
	mask := t.size() - 1
	// Backward-shift deletion: move each later slot of the run into the
	// hole unless its home lies cyclically in (hole, slot].
	hole := i
	for j := (i + 1) & mask; t.slot(j)[0] != 0; j = (j + 1) & mask {
		home := t.start(uint32(t.slot(j)[0] >> 32))
		if (j-home)&mask >= (j-hole)&mask {
			*t.slot(hole) = *t.slot(j)
			hole = j
		}
	}
	*t.slot(hole) = [ixSlotWords]uint64{}
	t.used--
	x.n--
	return true
}

// grow makes room in t: doubles it up to ixMaxSlots, then splits it.
func (x *itemIndex) grow(t *ixTable) {
	if n := t.size(); n < ixMaxSlots {
		old := *t
		t.slots, t.blk = makeFlat[uint64](2*n*ixSlotWords, 2*n*ixSlotWords)
		x.slots += n
		t.used = 0
		for i := range n {
			if e := old.slot(i); e[0] != 0 {
				t.insert(e)
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
// t.depth+1, told apart by the next tag bit.
func (x *itemIndex) split(t *ixTable) {
	d := t.depth + 1
	n := t.size()
	lo := newIxTable(n, d)
	hi := newIxTable(n, d)
	bit := uint64(1) << (32 - d) << 32
	var any uint64
	for i := range n {
		e := t.slot(i)
		switch {
		case e[0] == 0:
			continue
		case e[0]&bit != 0:
			hi.insert(e)
		default:
			lo.insert(e)
		}
		any = e[0]
	}
	// t fills a run of 2^(depth-t.depth) directory entries; the lower half goes to lo.
	span := 1 << (x.depth - t.depth)
	first := int(any>>32>>(32-x.depth)) &^ (span - 1)
	for i := range span {
		if i < span/2 {
			x.dir[first+i] = lo
		} else {
			x.dir[first+i] = hi
		}
	}
	x.slots += n
}

// lookupBatch resolves the ids of items into ids (noID when absent) in
// stages whose loads are independent across items, so their cache misses
// overlap: hash each item and prefetch its start slot; for items longer
// than an inline key, find the first tag match and prefetch its string
// header, then the string's bytes; then probe and verify with everything
// cached.
func (x *itemIndex) lookupBatch(items []string, tags []uint32, ids []uint32) ([]uint32, []uint32) {
	tags, ids = tags[:0], ids[:0]
	long := false
	for _, s := range items {
		tag := x.tagOf(s)
		tags = append(tags, tag)
		x.prefetchRun(tag)
		long = long || len(s) > 15
	}
	if long {
		for i, tag := range tags {
			if len(items[i]) > 15 {
				if id := x.candidate(tag); id != noID {
					x.items.prefetch(int(id))
				}
			}
		}
		for i, tag := range tags {
			if len(items[i]) > 15 {
				if id := x.candidate(tag); id != noID {
					if c := x.items.get(int(id)); len(c) > 0 {
						prefetch(unsafe.Pointer(unsafe.StringData(c)))
					}
				}
			}
		}
	}
	for i, s := range items {
		id, ok := x.probe(s, tags[i])
		if !ok {
			id = noID
		}
		ids = append(ids, id)
	}
	return tags, ids
}

// prefetchRun hints the line of the start slot of tag and, when that slot
// is the second of its line, the next line, which a probe past it reads.
func (x *itemIndex) prefetchRun(tag uint32) {
	t := x.table(tag)
	i := t.start(tag)
	prefetch(unsafe.Pointer(&t.slots[i*ixSlotWords]))
	if i&1 == 1 && i+1 < t.size() {
		prefetch(unsafe.Pointer(&t.slots[(i+1)*ixSlotWords]))
	}
}

// prefetchSlot hints the start slot of s, for loops that put or get many
// items one after another.
func (x *itemIndex) prefetchSlot(s string) { x.prefetchRun(x.tagOf(s)) }

// candidate is the id of the first slot with this tag, without verifying it.
func (x *itemIndex) candidate(tag uint32) uint32 {
	t := x.table(tag)
	mask := t.size() - 1
	for i := t.start(tag); ; i = (i + 1) & mask {
		e := t.slot(i)[0]
		if e == 0 {
			return noID
		}
		if uint32(e>>32) == tag {
			return uint32(e)
		}
	}
}

const noID = ^uint32(0)

// bytes is the memory of the slots and the directory.
func (x *itemIndex) bytes() int64 {
	return int64(x.slots)*ixSlotWords*8 + int64(len(x.dir))*int64(unsafe.Sizeof(uintptr(0)))
}
