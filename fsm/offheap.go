package fsm

import (
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// Off-heap blocks for the large pointer-free arrays that apply reads at
// random: the item index's tables and the chunks of the copy-on-write
// arrays (all-time counts, bucket ids and deltas). They come from 2 MiB
// huge-page slabs (huge_mmap.go) like the item records: at 10M items on a
// 4 KiB-paged Go heap nearly every one of those reads also missed the TLB.
// The runtime does not give its heap huge pages (DESIGN.md).
//
// A block belongs to an offBlock, a small Go object; a cleanup returns the
// block once its offBlock is unreachable, so blocks shared with snapshots
// (copy-on-write chunks) live exactly as long as the last view holding
// them.
//
// The ownership rule, for every off-heap array in this package (these
// blocks and the item records' slabs, recs.go): a slice over off-heap
// memory is used only while its owner (the offBlock, or the recStore for
// records) is reachable, which holds when the slice and its owner are kept
// in the same struct and read together. Nothing checks it at run time in
// production; the checked build (-tags fsmcheck, checked_on.go) makes
// freed memory fault on access and runs a GC after every batch, and the
// model, determinism and snapshot tests run under it (make test-fsmcheck).
//
// Blocks are powers of two from offMin to offMaxShared bytes, carved from
// 2 MiB slabs of one size each; larger ones get their own mapping. A slab
// whose last block is freed is kept as a spare for any size, up to half the
// bytes in use (at least offSpareMin), and unmapped beyond: the copies after
// a snapshot need as many blocks as the last snapshot's release freed, and
// memory new to a virtual machine can cost milliseconds per huge page (the
// host backs it on first touch). Freed blocks are cleared by their cleanup,
// so an allocation never clears memory. Blocks return when a GC finds their
// owners unreachable; the pacer does not see them, so that waits for the
// heap's own allocation (or the runtime's forced GC every two minutes).

// offMin is the smallest block: smaller arrays stay on the Go heap, so a
// small leaderboard maps nothing. Process-wide by nature (one allocator per
// process), unlike the per-FSM tuning: only TestMain lowers it, before any
// test runs, to run everything here.
var offMin uintptr = 4 << 10

const (
	offMaxShared = 1 << 20
	offSpareMin  = 32 << 20
)

type offBlock struct {
	addr, size uintptr
}

type offSlab struct {
	addr    uintptr
	free    []uintptr
	nblocks int
	partial int // index in its class's partial list, -1 when full
}

type offClass struct {
	partial []*offSlab // slabs with a free block
}

var off struct {
	mu      sync.Mutex
	classes [bits.UintSize]offClass
	slabs   map[uintptr]*offSlab
	spare   []uintptr // empty slabs, zeroed
	used    int64     // bytes in blocks handed out from shared slabs
	slack   int64     // free bytes in mapped shared slabs, spares included
}

// offAlloc returns a zeroed array of n elements outside the Go heap and
// the block that owns it, or nil when the array is small or the platform
// has no slabs. T must hold no pointers.
func offAlloc[T any](n int) ([]T, *offBlock) {
	var z T
	size := uintptr(n) * unsafe.Sizeof(z)
	if size < offMin {
		return nil, nil
	}
	b := offGet(size)
	if b == nil {
		return nil, nil
	}
	runtime.AddCleanup(b, offPut, *b)
	p := *(*unsafe.Pointer)(unsafe.Pointer(&b.addr)) // not Go memory: see wordsAt
	return unsafe.Slice((*T)(p), n), b
}

func offGet(size uintptr) *offBlock {
	if size > offMaxShared {
		n := (size + hugeBytes - 1) &^ (hugeBytes - 1)
		a, ok := hugeSlab(n)
		if !ok {
			return nil
		}
		return &offBlock{a, n}
	}
	shift := bits.Len(uint(size - 1))
	bsize := uintptr(1) << shift
	off.mu.Lock()
	defer off.mu.Unlock()
	cl := &off.classes[shift]
	if len(cl.partial) == 0 {
		var a uintptr
		if n := len(off.spare); n > 0 {
			a = off.spare[n-1]
			off.spare = off.spare[:n-1]
		} else {
			var ok bool
			if a, ok = hugeSlab(hugeBytes); !ok {
				return nil
			}
			off.slack += hugeBytes
		}
		s := &offSlab{addr: a, nblocks: int(hugeBytes / bsize)}
		s.free = make([]uintptr, 0, s.nblocks)
		for i := s.nblocks - 1; i >= 0; i-- {
			s.free = append(s.free, a+uintptr(i)*bsize)
		}
		if off.slabs == nil {
			off.slabs = make(map[uintptr]*offSlab)
		}
		off.slabs[a] = s
		s.partial = len(cl.partial)
		cl.partial = append(cl.partial, s)
	}
	s := cl.partial[len(cl.partial)-1]
	a := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	if len(s.free) == 0 {
		cl.unlist(s)
	}
	off.slack -= int64(bsize)
	off.used += int64(bsize)
	return &offBlock{a, bsize}
}

func (cl *offClass) unlist(s *offSlab) {
	last := cl.partial[len(cl.partial)-1]
	cl.partial[s.partial] = last
	last.partial = s.partial
	cl.partial = cl.partial[:len(cl.partial)-1]
	s.partial = -1
}

// offPut returns a block (run by the cleanup of its offBlock; cleanups may
// run in parallel).
func offPut(b offBlock) {
	if checked && retire(b.addr, b.size) {
		off.mu.Lock()
		if b.size <= offMaxShared {
			off.used -= int64(b.size)
		}
		off.mu.Unlock()
		return
	}
	if b.size > offMaxShared {
		freeSlab(b.addr, b.size)
		return
	}
	p := *(*unsafe.Pointer)(unsafe.Pointer(&b.addr))
	clear(unsafe.Slice((*byte)(p), b.size))
	shift := bits.Len(uint(b.size - 1))
	off.mu.Lock()
	defer off.mu.Unlock()
	cl := &off.classes[shift]
	s := off.slabs[b.addr&^(hugeBytes-1)]
	s.free = append(s.free, b.addr)
	off.slack += int64(b.size)
	off.used -= int64(b.size)
	if len(s.free) == s.nblocks {
		if s.partial >= 0 {
			cl.unlist(s)
		}
		delete(off.slabs, s.addr)
		off.spare = append(off.spare, s.addr)
	} else if s.partial < 0 {
		s.partial = len(cl.partial)
		cl.partial = append(cl.partial, s)
	}
	// The limit falls as blocks return: a dropped leaderboard keeps no
	// more spares than what is left in use justifies.
	for int64(len(off.spare))*hugeBytes > max(offSpareMin, off.used/2) {
		a := off.spare[len(off.spare)-1]
		off.spare = off.spare[:len(off.spare)-1]
		off.slack -= hugeBytes
		freeSlab(a, hugeBytes)
	}
}

// makeFlat returns a zeroed array of length n and capacity c, off the
// heap when it is large enough and T holds no pointers (isFlat), with the
// block to keep beside it (nil for a heap array).
func makeFlat[T any](n, c int) ([]T, *offBlock) {
	if !raceEnabled && isFlat[T]() {
		if v, b := offAlloc[T](c); b != nil {
			return v[:n], b
		}
	}
	return make([]T, n, c), nil
}

// isFlat reports whether T is one of the pointer-free element types the
// copy-on-write arrays hold.
func isFlat[T any]() bool {
	var z T
	switch any(z).(type) {
	case int64, uint64, uint32, int32:
		return true
	}
	return false
}
