package server

import (
	"fmt"
	rtmetrics "runtime/metrics"
	"sync/atomic"

	"github.com/topkd/topkd/fsm"
)

// memoryGuard samples the live heap (plus the FSMs' off-heap arrays) once a second and refuses ingest above
// the high-water mark, before anything is proposed.
type memoryGuard struct {
	limit uint64
	heap  atomic.Uint64
}

func newMemoryGuard(limit uint64) *memoryGuard {
	g := &memoryGuard{limit: limit}
	g.sample()
	return g
}

// sample reads the live heap plus the FSMs' memory outside it (huge-page
// slabs of item records, index tables and flat arrays).
func (g *memoryGuard) sample() {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() == rtmetrics.KindUint64 {
		g.heap.Store(s[0].Value.Uint64() + uint64(fsm.OffHeapBytes()))
	}
}

func (g *memoryGuard) check() error {
	if g.limit == 0 {
		return nil
	}
	if h := g.heap.Load(); h > g.limit {
		return fmt.Errorf("%w: node memory high-water mark reached (heap %d MiB > %d MiB)", ErrOverloaded, h>>20, g.limit>>20)
	}
	return nil
}

// HeapBytes is the last sampled live heap plus the FSMs' off-heap arrays.
func (g *memoryGuard) HeapBytes() uint64 { return g.heap.Load() }
