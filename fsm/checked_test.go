//go:build fsmcheck && linux && (amd64 || arm64)

package fsm

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestUseAfterFreeFaults plants the bug the ownership rule forbids (a
// slice over an off-heap block used after its owner became unreachable):
// in the checked build the access must fault at once.
func TestUseAfterFreeFaults(t *testing.T) {
	v, b := offAlloc[uint64](4096 / 8)
	if b == nil {
		t.Skip("no off-heap slabs on this platform")
	}
	v[0] = 42
	before := retired.Load()
	b = nil // the owner is gone; v is now a dangling slice
	_ = b
	for deadline := time.Now().Add(10 * time.Second); retired.Load() == before; {
		runtime.GC()
		if time.Now().After(deadline) {
			t.Fatal("the block's cleanup never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	faulted := func() (ok bool) {
		defer func() { ok = recover() != nil }()
		sinkWord = v[0]
		return false
	}()
	if !faulted {
		t.Fatal("reading a freed block did not fault")
	}
}

// TestRecordSlabsRetired: the item records' slabs go the same way when
// their store is dropped.
func TestRecordSlabsRetired(t *testing.T) {
	s := newRecStore(2)
	for range 2 * recChunk {
		s.grow()
	}
	if len(s.slabs.mapped) == 0 {
		t.Skip("records stayed on the Go heap")
	}
	addr := s.slabs.mapped[0].addr
	words := wordsAt(addr, 8)
	before := retired.Load()
	s = nil
	_ = s
	for deadline := time.Now().Add(10 * time.Second); retired.Load() == before; {
		runtime.GC()
		if time.Now().After(deadline) {
			t.Fatal("the record store's cleanup never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	faulted := func() (ok bool) {
		defer func() { ok = recover() != nil }()
		sinkWord = words[0]
		return false
	}()
	if !faulted {
		t.Fatal("reading a freed record slab did not fault")
	}
}

// sinkWord keeps a read from being optimised away.
var sinkWord uint64
