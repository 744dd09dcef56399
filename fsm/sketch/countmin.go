package sketch

import (
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// MaxDepth caps the rows of a Count-Min sketch so that Loc is a fixed-size
// value. Depth 16 gives a failure probability of e^-16 ≈ 1.1e-7; smaller
// deltas are clamped to it.
const MaxDepth = 16

// MaxWidth caps the columns so that a Loc offset fits in a uint32
// (MaxDepth*MaxWidth = 2^32 cells, far beyond any sensible memory budget).
const MaxWidth = 1 << 28

// CountMinSize returns the shape for an error of at most epsilon*N with
// probability at least 1-delta: width = ceil(e/epsilon), depth =
// ceil(ln(1/delta)). Both are clamped to [1, MaxWidth] and [1, MaxDepth];
// an epsilon or delta outside (0, 1) is treated as the nearest bound.
func CountMinSize(epsilon, delta float64) (width, depth int) {
	w := math.MaxFloat64
	if epsilon > 0 {
		w = math.Ceil(math.E / epsilon)
	}
	d := float64(MaxDepth)
	if delta >= 1 {
		d = 1
	} else if delta > 0 {
		d = math.Ceil(math.Log(1 / delta))
	}
	return int(min(max(w, 1), MaxWidth)), int(min(max(d, 1), MaxDepth))
}

// CountMin is a linear Count-Min sketch (Cormode and Muthukrishnan 2005):
// depth rows of width counters in one slice. No conservative update, so
// sketches add and subtract cell-wise (bucket merge and window expiry).
type CountMin struct {
	width int
	depth int
	seed  uint64
	salts [MaxDepth]uint64 // per row, derived from the seed
	total uint64
	cells []uint64 // row-major: row i is cells[i*width : (i+1)*width]
}

// Loc is the cell offsets of one item in every row of sketches with one
// (width, depth, seed). Using a Loc with a sketch of another shape or seed
// is a caller bug: it counts into the wrong cells or panics.
type Loc struct {
	off [MaxDepth]uint32
	h   uint64 // the item's xxhash, so CMSTopK.AddAt need not hash it again
}

// NewCountMin returns an empty sketch. Width and depth are clamped to
// [1, MaxWidth] and [1, MaxDepth]; use CountMinSize to derive them.
func NewCountMin(width, depth int, seed uint64) *CountMin {
	width = min(max(width, 1), MaxWidth)
	depth = min(max(depth, 1), MaxDepth)
	c := &CountMin{
		width: width,
		depth: depth,
		seed:  seed,
		cells: make([]uint64, width*depth),
	}
	// Successive splitmix64 outputs from the seed: distinct, well-mixed salts.
	x := seed
	for i := range c.salts {
		x += 0x9e3779b97f4a7c15
		c.salts[i] = mix64(x)
	}
	return c
}

func (c *CountMin) Width() int   { return c.width }
func (c *CountMin) Depth() int   { return c.depth }
func (c *CountMin) Seed() uint64 { return c.seed }

// Total is the sum of all weights added (minus those subtracted).
func (c *CountMin) Total() uint64 { return c.total }

// mix64 is the splitmix64 finalizer: a bijection with full avalanche, so
// one 64-bit string hash yields independent-looking values per row salt.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Locate hashes item once with xxhash and derives each row's column from
// its own seeded splitmix64 mix of that 64-bit hash, reduced to the width
// by multiply-shift. Double hashing (h1 + i*h2 mod width) would be cheaper
// still, but two items with equal (h1, h2) mod width collide in every row:
// a 1/width^2 floor under the failure probability that broke the delta
// guarantee in tests (see DESIGN.md).
func (c *CountMin) Locate(item string) Loc {
	return c.locateHash(xxhash.Sum64String(item))
}

// locateHash is Locate from the item's xxhash (CMSTopK's index keeps it).
func (c *CountMin) locateHash(h uint64) Loc {
	w := uint64(c.width)
	l := Loc{h: h}
	base := uint64(0)
	for i := range c.depth {
		col, _ := bits.Mul64(mix64(h^c.salts[i]), w)
		l.off[i] = uint32(base + col)
		base += w
	}
	return l
}

// AddAt adds w to the item's cell in every row.
func (c *CountMin) AddAt(l Loc, w uint64) {
	c.total += w
	for _, o := range l.off[:c.depth] {
		c.cells[o] += w
	}
}

// SubAt is the exact inverse of AddAt(l, w), for expiring a bucket's
// events; subtracting what was never added corrupts the sketch.
func (c *CountMin) SubAt(l Loc, w uint64) {
	c.total -= w
	for _, o := range l.off[:c.depth] {
		c.cells[o] -= w
	}
}

// EstimateAt is the minimum over rows: never below the true count.
func (c *CountMin) EstimateAt(l Loc) uint64 {
	est := uint64(math.MaxUint64)
	for _, o := range l.off[:c.depth] {
		est = min(est, c.cells[o])
	}
	return est
}

// Add adds w occurrences of item and returns its new estimate.
func (c *CountMin) Add(item string, w uint64) uint64 {
	return c.addLoc(c.Locate(item), w)
}

// addLoc is AddAt returning the new estimate.
func (c *CountMin) addLoc(l Loc, w uint64) uint64 {
	c.total += w
	est := uint64(math.MaxUint64)
	for _, o := range l.off[:c.depth] {
		v := c.cells[o] + w
		c.cells[o] = v
		est = min(est, v)
	}
	return est
}

// Estimate is an upper bound on item's true count, within epsilon*N with
// probability at least 1-delta over the seed.
func (c *CountMin) Estimate(item string) uint64 {
	return c.EstimateAt(c.Locate(item))
}

func (c *CountMin) sameShape(o *CountMin) error {
	if o == nil {
		return fmt.Errorf("nil sketch: %w", ErrMismatch)
	}
	if c.width != o.width || c.depth != o.depth || c.seed != o.seed {
		return fmt.Errorf("shape %dx%d seed %d vs %dx%d seed %d: %w",
			c.depth, c.width, c.seed, o.depth, o.width, o.seed, ErrMismatch)
	}
	return nil
}

// Merge adds o cell-wise: the sketch of the union of both streams.
func (c *CountMin) Merge(o *CountMin) error {
	if err := c.sameShape(o); err != nil {
		return fmt.Errorf("merge count-min: %w", err)
	}
	c.total += o.total
	for i, v := range o.cells {
		c.cells[i] += v
	}
	return nil
}

// Subtract removes o cell-wise (o's stream must be part of c's). It checks
// every cell first and changes nothing on error.
func (c *CountMin) Subtract(o *CountMin) error {
	if err := c.sameShape(o); err != nil {
		return fmt.Errorf("subtract count-min: %w", err)
	}
	if o.total > c.total {
		return fmt.Errorf("subtract count-min: total %d > %d: %w", o.total, c.total, ErrMismatch)
	}
	for i, v := range o.cells {
		if v > c.cells[i] {
			return fmt.Errorf("subtract count-min: cell %d: %d > %d: %w", i, v, c.cells[i], ErrMismatch)
		}
	}
	c.total -= o.total
	for i, v := range o.cells {
		c.cells[i] -= v
	}
	return nil
}

// Cells is the backing slice, row-major, for snapshots. Do not modify it.
func (c *CountMin) Cells() []uint64 { return c.cells }

// Clone returns an independent copy.
func (c *CountMin) Clone() *CountMin {
	n := *c
	n.cells = append([]uint64(nil), c.cells...)
	return &n
}

// Reset zeroes the sketch, keeping its shape and seed.
func (c *CountMin) Reset() {
	clear(c.cells)
	c.total = 0
}

// Bytes estimates the heap bytes held.
func (c *CountMin) Bytes() int {
	return int(unsafe.Sizeof(*c)) + cap(c.cells)*8
}

// RestoreCountMin rebuilds a sketch from a copy of its cells. Every Add
// puts its weight once in every row, so each row must sum to total (mod
// 2^64); anything else is a corrupt snapshot.
func RestoreCountMin(width, depth int, seed, total uint64, cells []uint64) (*CountMin, error) {
	if width < 1 || width > MaxWidth {
		return nil, fmt.Errorf("restore count-min: width %d outside [1, %d]: %w", width, MaxWidth, ErrInvalid)
	}
	if depth < 1 || depth > MaxDepth {
		return nil, fmt.Errorf("restore count-min: depth %d outside [1, %d]: %w", depth, MaxDepth, ErrInvalid)
	}
	if len(cells) != width*depth {
		return nil, fmt.Errorf("restore count-min: %d cells for %dx%d: %w", len(cells), depth, width, ErrInvalid)
	}
	for i := range depth {
		var sum uint64
		for _, v := range cells[i*width : (i+1)*width] {
			sum += v
		}
		if sum != total {
			return nil, fmt.Errorf("restore count-min: row %d sums to %d, total %d: %w", i, sum, total, ErrInvalid)
		}
	}
	c := NewCountMin(width, depth, seed)
	c.total = total
	copy(c.cells, cells)
	return c, nil
}
