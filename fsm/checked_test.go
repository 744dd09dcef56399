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
	mustFaultOnceRetired(t, before, "the block", func() uint64 { return v[0] })
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
	mustFaultOnceRetired(t, before, "the record slab", func() uint64 { return words[0] })
}

// mustFaultOnceRetired runs GCs until a cleanup retires memory (the
// retired count passes before), then requires read to fault.
func mustFaultOnceRetired(t *testing.T, before int64, what string, read func() uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); retired.Load() == before; {
		runtime.GC()
		if time.Now().After(deadline) {
			t.Fatalf("%s: its cleanup never ran", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	faulted := func() (ok bool) {
		defer func() { ok = recover() != nil }()
		sinkWord = read()
		return false
	}()
	if !faulted {
		t.Fatalf("reading %s after it was freed did not fault", what)
	}
}

// sinkWord keeps a read from being optimised away.
var sinkWord uint64
