package sketch

import (
	"math"
	"slices"
)

// cellArray holds a filter's cells: 32-bit until a cell would pass
// 2^32-1, then 64-bit for good. Halving the cell doubles the cells a
// memory budget buys, and 16 cells per counter bound the tail far better
// than 8 (DESIGN.md, "Filtered Space-Saving"). The width is a function of
// the values, never an output, so replicas in either width agree.
type cellArray struct {
	narrow []uint32
	wide   []uint64 // non-nil once a cell outgrew 32 bits; narrow is then nil
}

func (a *cellArray) allocated() bool { return a.narrow != nil || a.wide != nil }

// get is cell c (0 before allocation).
func (a *cellArray) get(c int) uint64 {
	if a.narrow != nil {
		return uint64(a.narrow[c])
	}
	if a.wide != nil {
		return a.wide[c]
	}
	return 0
}

// set writes cell c, allocating n narrow cells on first use.
func (a *cellArray) set(n, c int, v uint64) {
	if a.wide != nil {
		a.wide[c] = v
		return
	}
	if a.narrow == nil {
		a.narrow = make([]uint32, n)
	}
	if v > math.MaxUint32 {
		a.widen()
		a.wide[c] = v
		return
	}
	a.narrow[c] = uint32(v)
}

func (a *cellArray) widen() {
	a.wide = make([]uint64, len(a.narrow))
	for i, v := range a.narrow {
		a.wide[i] = uint64(v)
	}
	a.narrow = nil
}

// values returns a copy of the cells, nil before allocation.
func (a *cellArray) values() []uint64 {
	if a.wide != nil {
		return slices.Clone(a.wide)
	}
	if a.narrow == nil {
		return nil
	}
	out := make([]uint64, len(a.narrow))
	for i, v := range a.narrow {
		out[i] = uint64(v)
	}
	return out
}

// load replaces the cells with vs (nil: unallocated), narrow when every
// value fits.
func (a *cellArray) load(vs []uint64) {
	*a = cellArray{}
	if vs == nil {
		return
	}
	for _, v := range vs {
		if v > math.MaxUint32 {
			a.wide = slices.Clone(vs)
			return
		}
	}
	a.narrow = make([]uint32, len(vs))
	for i, v := range vs {
		a.narrow[i] = uint32(v)
	}
}

// clone copies the cells; slices.Clone keeps nil as nil (unallocated).
func (a *cellArray) clone() cellArray {
	return cellArray{narrow: slices.Clone(a.narrow), wide: slices.Clone(a.wide)}
}

// reset zeroes the cells and returns them to 32 bits, keeping them
// allocated (snapshots store allocated zeros, not nothing): the width
// stays a function of the values.
func (a *cellArray) reset() {
	if a.wide != nil {
		a.narrow, a.wide = make([]uint32, len(a.wide)), nil
	}
	clear(a.narrow)
}

func (a *cellArray) bytes() int { return 4*cap(a.narrow) + 8*cap(a.wide) }
