package fsm

import (
	"runtime"
	"testing"
)

// TestRecStoreSlabs fills records past the first (heap) chunk, so later
// chunks come from huge-page slabs where the platform has them, checks every
// word reads back, and that dropping the store unmaps its slabs.
func TestRecStoreSlabs(t *testing.T) {
	before := settledOffHeap()
	func() {
		s := newRecStore(2)
		n := 3*recChunk + 5
		for range n {
			s.grow()
		}
		for id := range uint32(n) {
			for off := range s.stride {
				*s.word(id, off) = uint64(id)<<8 | uint64(off)
			}
		}
		for id := range uint32(n) {
			for off := range s.stride {
				if got := *s.word(id, off); got != uint64(id)<<8|uint64(off) {
					t.Fatalf("record %d word %d = %#x", id, off, got)
				}
			}
		}
		*s.half(7, 1, 1) = 9
		if s.refs(7) != 9 || s.addRefs(7, -2) != 7 || *s.word(7, 1)&(1<<32-1) != uint64(7)<<8|1 {
			t.Fatalf("halves of word 1: %#x", *s.word(7, 1))
		}
		if runtime.GOOS == "linux" {
			if got := offHeapInUse() - before; got < int64(3*recChunk*s.stride*8) {
				t.Fatalf("off-heap bytes grew by %d for three slab chunks", got)
			}
		}
		runtime.KeepAlive(s)
	}()
	waitOffHeap(t, before)
}

func TestRecWords(t *testing.T) {
	for sliding, want := range []int{2, 5, 8, 11, 16, 17, 20, 24} {
		if got := recWords(sliding); got != want {
			t.Errorf("recWords(%d) = %d, want %d", sliding, got, want)
		}
	}
}
