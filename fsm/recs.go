package fsm

import (
	"runtime"
	"unsafe"
)

// recStore keeps the per-item state of a leaderboard's windows in one
// record per id: each window's count, heap/class position and newest-bucket
// entry, plus the id's bucket reference count. An applied delta touches
// every window of its item; with one array per field that was a cache miss
// per field (about 11 for two sliding windows), with records it is one line
// for two sliding windows (64 bytes), two for four (128). At 1M items and
// more those misses are most of the apply cost (DESIGN.md).
//
// Records are derived state: Restore rebuilds them, snapshots never read
// them. The canonical all-time counts stay in a copy-on-write array beside.
//
// Layout in 8-byte words: word 0 the "all" count; word 1 the "all"
// position (first half) and the reference count (second half); then three
// words per sliding window: count; position and newest-bucket slot;
// newest-bucket generation. Positions are stored plus one, so a
// zeroed record means "no count, in no class, not in the heap".
type recStore struct {
	stride int        // words per record
	chunks [][]uint64 // recChunk records each (the last may hold fewer)
	n      int
	// Chunks after the first come from huge-page slabs outside the Go
	// heap (huge_mmap.go), unmapped by a cleanup once the store is
	// unreachable; the first stays on the heap so small leaderboards stay
	// small.
	slabs *slabList
}

type slabList struct {
	mapped     []slabRange
	next, left uintptr // unused part of the newest slab
}

type slabRange struct{ addr, n uintptr }

// slabMin is the smallest slab mapped: several chunks per slab, so little
// of a slab is left over when chunks do not divide it.
const slabMin = 8 << 20

// free unmaps the slabs: the cleanup of their recStore (the ownership
// rule in offheap.go).
func (l *slabList) free() {
	for _, r := range l.mapped {
		if checked && retire(r.addr, r.n) {
			continue
		}
		freeSlab(r.addr, r.n)
	}
	l.mapped = nil
}

// chunk returns a zeroed chunk of n words from the slabs, or nil.
func (l *slabList) chunk(n int) []uint64 {
	b := uintptr(n) * 8
	if l.left < b {
		size := (max(b, slabMin) + hugeBytes - 1) &^ (hugeBytes - 1)
		a, ok := hugeSlab(size)
		if !ok {
			return nil
		}
		l.mapped = append(l.mapped, slabRange{a, size})
		l.next, l.left = a, size
	}
	c := wordsAt(l.next, n)
	l.next += b
	l.left -= b
	return c[:0:n]
}

const (
	recChunkBits = 12
	recChunk     = 1 << recChunkBits
	recChunkMask = recChunk - 1
)

// recWords is the record stride for a leaderboard with this many sliding
// windows: padded to whole cache lines when that adds at most two words,
// so the common shapes (two sliding windows: one line; four: two) never
// straddle a line; otherwise unpadded, because the padding would cost more
// memory per item and window than the budget of DESIGN.md allows (one
// sliding window: 40 bytes, not 64).
func recWords(sliding int) int {
	w := 2 + 3*sliding
	if p := (w + 7) &^ 7; p-w <= 2 {
		return p
	}
	return w
}

func newRecStore(sliding int) *recStore {
	s := &recStore{stride: recWords(sliding), slabs: &slabList{}}
	runtime.AddCleanup(s, (*slabList).free, s.slabs)
	return s
}

// word is word off of id's record.
func (s *recStore) word(id uint32, off int) *uint64 {
	return &s.chunks[id>>recChunkBits][int(id&recChunkMask)*s.stride+off]
}

// grow appends a zeroed record. A chunk doubles up to its full size, so
// small leaderboards stay small; chunks start at a page or a power of two,
// so padded records stay aligned to their lines.
func (s *recStore) grow() {
	ci := s.n >> recChunkBits
	if ci == len(s.chunks) {
		var c []uint64
		if ci > 0 {
			c = s.slabs.chunk(recChunk * s.stride)
		}
		if c == nil {
			c = make([]uint64, 0, 16*s.stride)
		}
		s.chunks = append(s.chunks, c)
	}
	c := s.chunks[ci]
	if len(c)+s.stride > cap(c) {
		nc := make([]uint64, len(c), min(2*cap(c), recChunk*s.stride))
		copy(nc, c)
		c = nc
	}
	s.chunks[ci] = c[:len(c)+s.stride]
	s.n++
}

// prefetch hints every line of id's record.
func (s *recStore) prefetch(id uint32) {
	for off := 0; off < s.stride; off += 8 {
		prefetch(unsafe.Pointer(s.word(id, off)))
	}
	if s.stride%8 != 0 {
		prefetch(unsafe.Pointer(s.word(id, s.stride-1)))
	}
}

func (s *recStore) bytes() int64 {
	var n int64
	for _, c := range s.chunks {
		n += int64(cap(c)) * 8
	}
	return n
}

// half is one 32-bit half of word off of id's record. Halves are written
// as such, never by a read-modify-write of the word: a store that misses
// the cache waits in the store buffer, a load stalls the loop.
func (s *recStore) half(id uint32, off, h int) *uint32 {
	return &(*[2]uint32)(unsafe.Pointer(s.word(id, off)))[h]
}

// refs is the number of bucket entries referencing id.
func (s *recStore) refs(id uint32) uint32 { return *s.half(id, 1, 1) }

func (s *recStore) addRefs(id uint32, d int32) uint32 {
	x := s.half(id, 1, 1)
	*x = uint32(int32(*x) + d)
	return *x
}
