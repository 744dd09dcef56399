package sketch

import (
	"maps"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// ranked is an indexed min-heap of distinct items keyed by (count asc, item
// desc): the root is the worst item by the total order. Items live in
// stable slots, found through an index (index.go); the heap holds (count,
// prefix key, slot id) nodes, so a sift moves small nodes and updates slot
// positions without touching the index, and the 8-byte prefix of the item
// settles most ties without reading the strings. Summary and CMSTopK
// share it.
type ranked struct {
	tab      []ientry // open-addressing index; nil once slow is set
	mask     uint64
	used     int
	slow     map[string]int32 // the index after a too-long probe, else nil
	nodes    []hnode
	slots    []slot // slots[id].pos is the heap position of slot id
	strBytes int    // bytes of the item strings held
	limit    int    // the most entries ever held: growth stops there, no slack beyond
}

type hnode struct {
	count uint64
	key   uint64 // prefixKey of the item
	id    int32
}

type slot struct {
	item string
	hash uint64 // xxhash of item: the index's key, kept in either index mode
	aux  uint64 // Summary: Err; CMSTopK: Lower
	pos  int32
}

func newRanked(limit int) ranked {
	return ranked{tab: make([]ientry, 16), mask: 15, limit: limit}
}

// grow makes room for one more entry, doubling but never past limit, so a
// full structure holds exactly limit entries' worth of nodes and slots.
func (r *ranked) growOne() {
	if len(r.nodes) < cap(r.nodes) && len(r.slots) < cap(r.slots) {
		return
	}
	n := min(max(2*len(r.nodes), 8), max(r.limit, len(r.nodes)+1))
	// make, not slices.Grow: append's growth policy would round far past n.
	if cap(r.nodes) < n {
		nodes := make([]hnode, len(r.nodes), n)
		copy(nodes, r.nodes)
		r.nodes = nodes
	}
	if cap(r.slots) < n {
		slots := make([]slot, len(r.slots), n)
		copy(slots, r.slots)
		r.slots = slots
	}
}

func (r *ranked) len() int { return len(r.nodes) }

// worse reports whether a ranks strictly after b in the total order
// (count desc, item asc).
func (r *ranked) worse(a, b hnode) bool { return r.worseBit(a, b) == 1 }

// worseBit is worse as 0 or 1, computed without a branch when counts or
// 8-byte prefix keys differ (the common case), so that picking a child in
// a sift is not a coin-flip branch misprediction: (count, ^key) compared
// as one 128-bit number. Equal prefixes fall back to the strings.
func (r *ranked) worseBit(a, b hnode) int {
	if a.count == b.count && a.key == b.key {
		if r.slots[a.id].item > r.slots[b.id].item {
			return 1
		}
		return 0
	}
	_, borrow := bits.Sub64(b.key, a.key, 0) // low word: ^a.key - ^b.key
	_, borrow = bits.Sub64(a.count, b.count, borrow)
	return int(borrow)
}

// up moves node i toward the root while it ranks worse than its parent.
func (r *ranked) up(i int) {
	nodes := r.nodes
	x := nodes[i]
	for i > 0 {
		p := (i - 1) / 2
		pn := nodes[p]
		if !r.worse(x, pn) {
			break
		}
		nodes[i] = pn
		r.slots[pn.id].pos = int32(i)
		i = p
	}
	nodes[i] = x
	r.slots[x.id].pos = int32(i)
}

// down moves node i toward the leaves while a child ranks worse than it.
func (r *ranked) down(i int) {
	nodes := r.nodes
	n := len(nodes)
	x := nodes[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n {
			c += r.worseBit(nodes[c+1], nodes[c])
		}
		cn := nodes[c]
		if !r.worse(cn, x) {
			break
		}
		nodes[i] = cn
		r.slots[cn.id].pos = int32(i)
		i = c
	}
	nodes[i] = x
	r.slots[x.id].pos = int32(i)
}

// fix restores the heap after node i's count changed in either direction.
func (r *ranked) fix(i int) {
	if i > 0 && r.worse(r.nodes[i], r.nodes[(i-1)/2]) {
		r.up(i)
		return
	}
	r.down(i)
}

// prefixKey is the first 8 bytes of s, big-endian, zero-padded: keys
// compare like the strings whenever they differ.
func prefixKey(s string) uint64 {
	var k uint64
	for i := range min(len(s), 8) {
		k |= uint64(s[i]) << (56 - 8*i)
	}
	return k
}

// push inserts an item that is not present, with h its hash from
// findForAdd. Item strings are kept as given, not copied: strings are
// immutable, and the FSM's decoded items are allocations of their own (a
// copy would cost ~15 ns per eviction).
func (r *ranked) push(item string, h, count, aux uint64) {
	r.growOne()
	id := int32(len(r.slots))
	long := r.index(item, h, id)
	r.slots = append(r.slots, slot{item: item, hash: h, aux: aux, pos: int32(len(r.nodes))})
	r.nodes = append(r.nodes, hnode{count: count, key: prefixKey(item), id: id})
	r.strBytes += len(item)
	r.up(len(r.nodes) - 1)
	if long {
		r.toSlow()
	}
}

// replaceRoot evicts the root and reuses its slot for a new item, with h
// its hash from findForAdd.
func (r *ranked) replaceRoot(item string, h, count, aux uint64) {
	id := r.nodes[0].id
	r.unindex(id)
	s := &r.slots[id]
	r.strBytes += len(item) - len(s.item)
	s.item, s.hash, s.aux = item, h, aux
	long := r.index(item, h, id)
	r.nodes[0].count = count
	r.nodes[0].key = prefixKey(item)
	r.down(0)
	if long {
		r.toSlow()
	}
}

// build replaces the contents with distinct items (the caller checked),
// then heapifies in O(n).
func (r *ranked) build(n int, at func(i int) (item string, count, aux uint64)) {
	r.reset()
	r.slots = slices.Grow(r.slots, n)
	r.nodes = slices.Grow(r.nodes, n)
	if r.slow == nil && len(r.tab) < max(16, 2*n) {
		r.tab = make([]ientry, max(16, 1<<bits.Len(uint(2*n))))
		r.mask = uint64(len(r.tab) - 1)
	}
	long := false
	for i := range n {
		item, count, aux := at(i)
		h := xxhash.Sum64String(item)
		long = r.index(item, h, int32(i)) || long
		r.slots = append(r.slots, slot{item: item, hash: h, aux: aux, pos: int32(i)})
		r.nodes = append(r.nodes, hnode{count: count, key: prefixKey(item), id: int32(i)})
		r.strBytes += len(item)
	}
	for i := n/2 - 1; i >= 0; i-- { // none when n < 2
		r.down(i)
	}
	if long {
		r.toSlow()
	}
}

func (r *ranked) reset() {
	if r.slow != nil {
		clear(r.slow)
	} else {
		clear(r.tab)
		r.used = 0
	}
	clear(r.slots) // drop string references
	r.slots = r.slots[:0]
	r.nodes = r.nodes[:0]
	r.strBytes = 0
}

func (r *ranked) clone() ranked {
	return ranked{
		tab:      slices.Clone(r.tab),
		mask:     r.mask,
		used:     r.used,
		slow:     maps.Clone(r.slow),
		nodes:    slices.Clone(r.nodes),
		slots:    slices.Clone(r.slots),
		strBytes: r.strBytes,
		limit:    r.limit,
	}
}

// mapEntryBytes approximates a map[string]int32 entry: 24 bytes of key and
// value plus a control byte, at the map's 7/8 maximum load, with growth
// headroom averaged in.
const mapEntryBytes = 40

func (r *ranked) bytes() int {
	return cap(r.nodes)*int(unsafe.Sizeof(hnode{})) +
		cap(r.slots)*int(unsafe.Sizeof(slot{})) +
		cap(r.tab)*int(unsafe.Sizeof(ientry{})) +
		len(r.slow)*mapEntryBytes + r.strBytes
}
