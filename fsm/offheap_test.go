package fsm

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain runs the tests with every flat array of more than 64 bytes off
// the heap, so the model, determinism and snapshot tests cover the
// off-heap index tables and copy-on-write chunks at any size. Benchmarks
// keep the production threshold.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		offMin = 64
		defaultTuning.trackedMin = 2 // floors move often, so every path through them runs
		defaultTuning.foldMin = 2    // the all-time journal folds often and snapshots carry one
	}
	os.Exit(m.Run())
}

// settledOffHeap runs the GC until the cleanups of earlier tests' garbage
// have returned their blocks, and returns offHeapInUse.
func settledOffHeap() int64 {
	last, same := offHeapInUse(), 0
	for same < 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		if n := offHeapInUse(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}

// slabsHere reports whether flat arrays leave the heap in this build.
func slabsHere() bool {
	return !raceEnabled && runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64")
}

// needSlabs skips a test of the allocator itself where arrays stay on the
// heap, and lowers the threshold for it (benchmark runs keep 4 KiB).
func needSlabs(t *testing.T) {
	if !slabsHere() {
		t.Skip("no off-heap slabs on this platform or under -race")
	}
	was := offMin
	offMin = 64
	t.Cleanup(func() { offMin = was })
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
	before, mapped := settledOffHeap(), OffHeapBytes()
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

// TestOffHeapReuseIsZeroed fills a slab with written blocks, frees all but
// one (so the slab stays mapped and its blocks are reused, not unmapped),
// and requires every block handed out next to read as zeros.
func TestOffHeapReuseIsZeroed(t *testing.T) {
	needSlabs(t)
	const words, per = 2048, hugeBytes / (2048 * 4)
	before := settledOffHeap()
	var kept *offBlock
	func() {
		blks := make([]*offBlock, 0, 2*per)
		for range 2 * per {
			v, b := offAlloc[uint32](words)
			for i := range v {
				v[i] = 0xdeadbeef
			}
			blks = append(blks, b)
		}
		// The last slab cut for these blocks holds only ours.
		kept = blks[len(blks)-1]
	}()
	waitOffHeap(t, before+int64(kept.size))
	var blks []*offBlock
	for range 2 * per {
		v, b := offAlloc[uint32](words)
		for i, x := range v {
			if x != 0 {
				t.Fatalf("reused block %#x word %d = %#x", b.addr, i, x)
			}
		}
		if b.addr == kept.addr {
			t.Fatal("a live block handed out twice")
		}
		blks = append(blks, b)
	}
	runtime.KeepAlive(kept)
	runtime.KeepAlive(blks)
}

// TestCowArrayOffHeap grows a copy-on-write array past several chunks,
// freezes it and writes every element, then checks the frozen view kept
// the old values and that all chunks are freed once both are dropped.
func TestCowArrayOffHeap(t *testing.T) {
	before := settledOffHeap()
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
		if slabsHere() && offHeapInUse() == before {
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
	before, mapped := settledOffHeap(), OffHeapBytes()
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

// TestOffHeapSparesTrimmed drops 128 MiB of blocks at once and requires
// the spare slabs left mapped to fall back to the floor: the limit is half
// the bytes still in use, which falls as the blocks return.
func TestOffHeapSparesTrimmed(t *testing.T) {
	needSlabs(t)
	before, mapped := settledOffHeap(), OffHeapBytes()
	func() {
		var blks []*offBlock
		for range 128 << 20 / (64 << 10) {
			_, b := offAlloc[uint64](8 << 10)
			blks = append(blks, b)
		}
		runtime.KeepAlive(blks)
	}()
	waitOffHeap(t, before)
	if got := OffHeapBytes() - mapped; got > offSpareMin {
		t.Fatalf("%d MiB of spares still mapped, want at most %d", got>>20, offSpareMin>>20)
	}
}
