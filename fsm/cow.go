package fsm

import "unsafe"

// cowArray is a chunked array with copy-on-write snapshots. freeze() is
// O(chunks): it hands out the current chunk pointers and bumps the
// generation, so the next write to each shared chunk copies that chunk
// (at most chunkSize elements) first. This keeps Snapshot() on the apply
// goroutine cheap at any state size.
const (
	chunkBits = 12
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1
)

type cowChunk[T any] struct {
	gen uint64
	v   []T
	blk *offBlock // owns v when it is off the heap (offheap.go)
}

type cowArray[T any] struct {
	chunks []*cowChunk[T]
	n      int
	gen    uint64
}

// frozen is an immutable view of a cowArray taken by freeze.
type frozen[T any] struct {
	chunks []*cowChunk[T]
	n      int
}

func (a *cowArray[T]) len() int { return a.n }

func (a *cowArray[T]) get(i int) T { return a.chunks[i>>chunkBits].v[i&chunkMask] }

// writable returns chunk ci, copying it first when a snapshot shares it.
func (a *cowArray[T]) writable(ci int) *cowChunk[T] {
	c := a.chunks[ci]
	if c.gen != a.gen {
		c = a.copyChunk(ci, cap(c.v))
	}
	return c
}

// copyChunk replaces chunk ci by a copy of the given capacity, off the heap
// for flat types when it is large enough (offheap.go).
func (a *cowArray[T]) copyChunk(ci, capacity int) *cowChunk[T] {
	c := a.chunks[ci]
	nc := &cowChunk[T]{gen: a.gen}
	nc.v, nc.blk = makeFlat[T](len(c.v), capacity)
	copy(nc.v, c.v)
	a.chunks[ci] = nc
	return nc
}

func (a *cowArray[T]) set(i int, x T) {
	a.writable(i >> chunkBits).v[i&chunkMask] = x
}

func (a *cowArray[T]) append(x T) int {
	i := a.n
	ci := i >> chunkBits
	if ci == len(a.chunks) {
		a.chunks = append(a.chunks, &cowChunk[T]{gen: a.gen, v: make([]T, 0, 16)})
	}
	// A full chunk grows by one copy, shared with a snapshot or not.
	var c *cowChunk[T]
	if full := a.chunks[ci]; len(full.v) == cap(full.v) {
		c = a.copyChunk(ci, min(2*cap(full.v), chunkSize))
	} else {
		c = a.writable(ci)
	}
	c.v = append(c.v, x)
	a.n++
	return i
}

func (a *cowArray[T]) freeze() frozen[T] {
	f := frozen[T]{chunks: make([]*cowChunk[T], len(a.chunks)), n: a.n}
	copy(f.chunks, a.chunks)
	a.gen++
	return f
}

func (f frozen[T]) len() int { return f.n }

func (f frozen[T]) get(i int) T { return f.chunks[i>>chunkBits].v[i&chunkMask] }

// bytes estimates the memory held by the array's chunks.
func (a *cowArray[T]) capacity() int {
	n := 0
	for _, c := range a.chunks {
		n += cap(c.v)
	}
	return n
}

// prefetch hints element i's cache line (see prefetch).
func (a *cowArray[T]) prefetch(i int) {
	prefetch(unsafe.Pointer(&a.chunks[i>>chunkBits].v[i&chunkMask]))
}
