package fsm

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// TestMain runs the tests with every flat array of more than 64 bytes off
// the heap, so the model, determinism and snapshot tests cover the
// off-heap index tables and copy-on-write chunks at any size. Benchmarks
// keep the production threshold.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		offMin = 64
	}
	os.Exit(m.Run())
}

// settledOffHeap runs the GC until the cleanups of earlier tests' garbage
// have returned their blocks, and returns OffHeapBytes.
func settledOffHeap() int64 {
	last, same := OffHeapBytes(), 0
	for same < 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		if n := OffHeapBytes(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}

// needSlabs skips a test of the allocator itself where arrays stay on the
// heap.
func needSlabs(t *testing.T) {
	if raceEnabled || runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("no off-heap slabs on this platform or under -race")
	}
}

// offHeapInUse is OffHeapBytes less free blocks and spare slabs.
func offHeapInUse() int64 { return OffHeapBytes() - offHeapSlack() }

// gcUntil runs the GC, and so the cleanups of dropped blocks, until done
// holds; it fails the test after five seconds with what done() says.
func gcUntil(t *testing.T, done func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, what := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOffHeap runs the GC until offHeapInUse is want.
func waitOffHeap(t *testing.T, want int64) {
	t.Helper()
	gcUntil(t, func() (bool, string) {
		got := offHeapInUse()
		return got == want, fmt.Sprintf("off-heap bytes in use %d, want %d", got, want)
	})
}

// TestOffHeapBlocks allocates arrays of every block size, shared slabs
// and dedicated mappings, checks they start zeroed and do not overlap, and
// that dropping them unmaps every slab.
func TestOffHeapBlocks(t *testing.T) {
	needSlabs(t)
	settledOffHeap()
	before, mapped := offHeapInUse(), OffHeapBytes()
	func() {
		var arrs [][]uint64
		var blks []*offBlock
		for _, n := range []int{8, 9, 512, 513, 4096, 1 << 17, 1<<17 + 1, 3 << 18} {
			for range 5 {
				v, b := offAlloc[uint64](n)
				if b == nil || len(v) != n || b.size < uintptr(n)*8 {
					t.Fatalf("offAlloc(%d): len %d, block %+v", n, len(v), b)
				}
				for i, x := range v {
					if x != 0 {
						t.Fatalf("offAlloc(%d)[%d] = %d, want a zeroed array", n, i, x)
					}
				}
				for i := range v {
					v[i] = uint64(len(arrs))<<32 | uint64(i)
				}
				arrs, blks = append(arrs, v), append(blks, b)
			}
		}
		for k, v := range arrs {
			for i, x := range v {
				if x != uint64(k)<<32|uint64(i) {
					t.Fatalf("array %d word %d = %#x: blocks overlap", k, i, x)
				}
			}
		}
		if got := offHeapInUse() - before; got < int64(3<<18*8*5) {
			t.Fatalf("off-heap bytes in use grew by %d", got)
		}
		runtime.KeepAlive(blks)
	}()
	waitOffHeap(t, before)
	// Empty slabs stay mapped as spares up to offSpareMin; the dedicated
	// mappings of the largest arrays are gone.
	if got := OffHeapBytes() - mapped; got > offSpareMin {
		t.Fatalf("%d bytes still mapped after every block returned, want at most %d of spares", got, offSpareMin)
	}
}

// TestOffHeapReuseIsZeroed frees one block of a slab that stays mapped and
// requires the block handed out next, the same one, to read as zeros.
func TestOffHeapReuseIsZeroed(t *testing.T) {
	needSlabs(t)
	keep, kb := offAlloc[uint32](2048)
	addr := func() uintptr {
		v, b := offAlloc[uint32](2048)
		for i := range v {
			v[i] = 0xdeadbeef
		}
		return b.addr
	}()
	slab := addr &^ (hugeBytes - 1)
	gcUntil(t, func() (bool, string) {
		off.mu.Lock()
		defer off.mu.Unlock()
		return slices.Contains(off.slabs[slab].free, addr), "the dropped block was not returned"
	})
	v, b := offAlloc[uint32](2048)
	if b.addr != addr {
		t.Fatalf("got block %#x, want the freed %#x", b.addr, addr)
	}
	for i, x := range v {
		if x != 0 {
			t.Fatalf("reused block word %d = %#x", i, x)
		}
	}
	if uintptr(unsafe.Pointer(&keep[0])) == addr {
		t.Fatal("kept block handed out twice")
	}
	runtime.KeepAlive(kb)
	runtime.KeepAlive(b)
}

// TestCowArrayOffHeap grows a copy-on-write array past several chunks,
// freezes it and writes every element, then checks the frozen view kept
// the old values and that all chunks are freed once both are dropped.
func TestCowArrayOffHeap(t *testing.T) {
	settledOffHeap()
	before := offHeapInUse()
	func() {
		var a cowArray[int64]
		n := 3*chunkSize + 17
		for i := range n {
			a.append(int64(i))
		}
		f := a.freeze()
		for i := range n {
			a.set(i, -int64(i))
		}
		runtime.GC()
		for i := range n {
			if f.get(i) != int64(i) || a.get(i) != -int64(i) {
				t.Fatalf("element %d: frozen %d, live %d", i, f.get(i), a.get(i))
			}
		}
		if !raceEnabled && runtime.GOOS == "linux" && offHeapInUse() == before {
			t.Fatal("no chunk is off the heap")
		}
		runtime.KeepAlive(&a)
		runtime.KeepAlive(f.chunks)
	}()
	waitOffHeap(t, before)
}

// TestOffHeapSpareSlabsAreZeroed empties slabs of one block size and
// requires blocks of another size, cut from the spare slabs, to read as
// zeros.
func TestOffHeapSpareSlabsAreZeroed(t *testing.T) {
	needSlabs(t)
	settledOffHeap()
	before, mapped := offHeapInUse(), OffHeapBytes()
	func() {
		var blks []*offBlock
		for range 2 * hugeBytes / 4096 {
			v, b := offAlloc[uint64](512)
			for i := range v {
				v[i] = ^uint64(0)
			}
			blks = append(blks, b)
		}
		runtime.KeepAlive(blks)
	}()
	waitOffHeap(t, before)
	var blks []*offBlock
	for range hugeBytes / (64 << 10) {
		v, b := offAlloc[uint64](8192)
		for i, x := range v {
			if x != 0 {
				t.Fatalf("block %#x word %d = %#x", b.addr, i, x)
			}
		}
		blks = append(blks, b)
	}
	// One slab of the first size was ours alone, so the second size maps
	// nothing new.
	if got := OffHeapBytes() - mapped; got > 0 {
		t.Fatalf("mapped %d more bytes, want a spare slab reused", got)
	}
	runtime.KeepAlive(blks)
}
