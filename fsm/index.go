package fsm

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"unsafe"
)

// itemIndex maps an item to its id: extendible hashing over tables of
// 8-byte slots (a 32-bit hash tag and the id), verified against an inline
// key or the item table. It replaces a map[string]uint32 for two reasons:
//
//   - batch lookups: lookupBatch hashes every item of an entry and prefetches
//     their slots in one tight loop, then probes and verifies in a second,
//     so the cache misses of different items overlap instead of forming
//     one dependent chain per item inside the apply loop;
//   - size: about 14 bytes per item (8-byte slots at 37-75% load) against
//     the 40 of a string-keyed map slot, and no pointers for the GC to scan.
//
// Growth never rehashes a string: a table doubles, or splits in two by the
// next bit of its tags, moving only slots. The seed is per process; it
// cannot reach replicated state, because ids are assigned in log order and
// the index is never iterated.
type itemIndex struct {
	items *cowArray[string]
	// keys holds per id a 16-byte inline copy of an item of up to 15
	// bytes (its bytes, zero padding, then its length), so verifying a
	// candidate loads one line, usually from a huge page, instead of the
	// string header and then the bytes it points to (two dependent misses).
	// Longer items compare as strings. put keeps it current.
	keys  *recStore
	seed  maphash.Seed
	dir   []*ixTable // 2^depth entries; a table of local depth d fills 2^(depth-d) of them
	depth uint8
	n     int
	slots int // over all tables
}

type ixTable struct {
	slots []uint64  // tag<<32 | id; 0 is empty (tags are odd)
	blk   *offBlock // owns slots when they are off the heap (offheap.go)
	used  int
	depth uint8
}

func newIxTable(slots int, depth uint8) *ixTable {
	t := &ixTable{depth: depth}
	t.slots, t.blk = makeFlat[uint64](slots, slots)
	return t
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
	x := &itemIndex{items: items, seed: maphash.MakeSeed(), keys: newRecStore(0)}
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

func (t *ixTable) start(tag uint32) int { return int(tag>>1) & (len(t.slots) - 1) }

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
	return uint32(t.slots[i]), true
}

// find returns s's table and slot, or slot -1 when s is absent.
func (x *itemIndex) find(s string, tag uint32) (*ixTable, int) {
	t := x.table(tag)
	mask := len(t.slots) - 1
	k0, k1, short := packKey(s)
	for i := t.start(tag); ; i = (i + 1) & mask {
		e := t.slots[i]
		if e == 0 {
			return t, -1
		}
		if uint32(e>>32) == tag && x.matches(uint32(e), s, k0, k1, short) {
			return t, i
		}
	}
}

// longKey marks a key slot whose item is longer than 15 bytes: its length
// byte, 255, is no short item's.
const longKey = 0xFF << 56

// packKey is s's inline key, when s is short enough to have one.
func packKey(s string) (k0, k1 uint64, short bool) {
	if len(s) > 15 {
		return 0, longKey, false
	}
	var b [16]byte
	copy(b[:], s)
	b[15] = byte(len(s))
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:]), true
}

func (x *itemIndex) matches(id uint32, s string, k0, k1 uint64, short bool) bool {
	if short {
		return *x.keys.word(id, 0) == k0 && *x.keys.word(id, 1) == k1
	}
	return *x.keys.word(id, 1) == longKey && x.items.get(int(id)) == s
}

func (x *itemIndex) setKey(id uint32, s string) {
	for x.keys.n <= int(id) {
		x.keys.grow()
	}
	k0, k1, _ := packKey(s)
	*x.keys.word(id, 0), *x.keys.word(id, 1) = k0, k1
}

// put adds s -> id; s must be absent.
func (x *itemIndex) put(s string, id uint32) { x.putTag(s, id, x.tagOf(s)) }

func (x *itemIndex) putTag(s string, id uint32, tag uint32) {
	x.setKey(id, s)
	t := x.table(tag)
	for (t.used+1)*ixLoadDen > len(t.slots)*ixLoadNum {
		x.grow(t)
		t = x.table(tag)
	}
	t.insert(uint64(tag)<<32 | uint64(id))
	x.n++
}

func (t *ixTable) insert(e uint64) {
	mask := len(t.slots) - 1
	i := t.start(uint32(e >> 32))
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = e
	t.used++
}

// del removes s, shifting later slots of its probe run back (no tombstones).
func (x *itemIndex) del(s string) bool { return x.delTag(s, x.tagOf(s)) }

func (x *itemIndex) delTag(s string, tag uint32) bool {
	t, i := x.find(s, tag)
	if i < 0 {
		return false
	}
	mask := len(t.slots) - 1
	// Backward-shift deletion: move each later slot of the run into the
	// hole unless its home lies cyclically in (hole, slot].
	hole := i
	for j := (i + 1) & mask; t.slots[j] != 0; j = (j + 1) & mask {
		home := t.start(uint32(t.slots[j] >> 32))
		if (j-home)&mask >= (j-hole)&mask {
			t.slots[hole] = t.slots[j]
			hole = j
		}
	}
	t.slots[hole] = 0
	t.used--
	x.n--
	return true
}

// grow makes room in t: doubles it up to ixMaxSlots, then splits it.
func (x *itemIndex) grow(t *ixTable) {
	if len(t.slots) < ixMaxSlots {
		old, oldBlk := t.slots, t.blk
		t.slots, t.blk = makeFlat[uint64](2*len(old), 2*len(old))
		x.slots += len(old)
		t.used = 0
		for _, e := range old {
			if e != 0 {
				t.insert(e)
			}
		}
		runtime.KeepAlive(oldBlk)
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
	lo := newIxTable(len(t.slots), d)
	hi := newIxTable(len(t.slots), d)
	bit := uint64(1) << (32 - d) << 32
	for _, e := range t.slots {
		switch {
		case e == 0:
		case e&bit != 0:
			hi.insert(e)
		default:
			lo.insert(e)
		}
	}
	// t fills a run of 2^(depth-t.depth) directory entries; the lower half goes to lo.
	span := 1 << (x.depth - t.depth)
	var any uint64
	for _, e := range t.slots {
		if e != 0 {
			any = e
			break
		}
	}
	first := int(any>>32>>(32-x.depth)) &^ (span - 1)
	for i := range span {
		if i < span/2 {
			x.dir[first+i] = lo
		} else {
			x.dir[first+i] = hi
		}
	}
	x.slots += len(t.slots)
}

// lookupBatch resolves the ids of items into ids (noID when absent) in
// stages whose loads are independent across items, so their cache misses
// overlap: hash and load each start slot; find the first tag match and load
// its item's string header; load the string's bytes; then probe and verify
// with everything cached.
func (x *itemIndex) lookupBatch(items []string, tags []uint32, ids []uint32) ([]uint32, []uint32) {
	tags, ids = tags[:0], ids[:0]
	for _, s := range items {
		tag := x.tagOf(s)
		tags = append(tags, tag)
		t := x.table(tag)
		prefetch(unsafe.Pointer(&t.slots[t.start(tag)]))
	}
	for i, tag := range tags {
		id := x.candidate(tag)
		ids = append(ids, id)
		if id != noID {
			if len(items[i]) > 15 {
				x.items.prefetch(int(id))
			} else {
				prefetch(unsafe.Pointer(x.keys.word(id, 0)))
			}
		}
	}
	for i, id := range ids {
		if id != noID && len(items[i]) > 15 {
			if c := x.items.get(int(id)); len(c) > 0 {
				prefetch(unsafe.Pointer(unsafe.StringData(c)))
			}
		}
	}
	for i, s := range items {
		id, ok := x.probe(s, tags[i])
		if !ok {
			id = noID
		}
		ids[i] = id
	}
	return tags, ids
}

// prefetchSlot hints the start slot of s, for loops that put or get many
// items one after another.
func (x *itemIndex) prefetchSlot(s string) {
	tag := x.tagOf(s)
	t := x.table(tag)
	prefetch(unsafe.Pointer(&t.slots[t.start(tag)]))
}

// candidate is the id of the first slot with this tag, without verifying it.
func (x *itemIndex) candidate(tag uint32) uint32 {
	t := x.table(tag)
	mask := len(t.slots) - 1
	for i := t.start(tag); ; i = (i + 1) & mask {
		e := t.slots[i]
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
	return int64(x.slots)*8 + int64(len(x.dir))*int64(unsafe.Sizeof(uintptr(0))) + x.keys.bytes()
}
