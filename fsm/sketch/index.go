package sketch

import "github.com/cespare/xxhash/v2"

// The item index of ranked: item -> slot id. Open addressing with linear
// probing over a power-of-two table kept at most half full, keyed by the
// xxhash of the item, with the hash stored in the slot so that growth and
// deletion never rehash a string. Per event it costs one short hash and
// a probe or two, against a Go map's hash, probe and, on every Space-Saving
// eviction, a second lookup for the insertion.
//
// xxhash is unkeyed, so items crafted to collide in the low bits could
// build long probe runs. A scan on the mutating path longer than maxProbe
// therefore moves the structure to a Go map (randomly seeded by the
// runtime) for good. The index never reaches an output, so the two modes,
// and replicas in different modes, behave identically.

// maxProbe bounds a scan before the index gives up on open addressing.
// At load 1/2 linear probing's runs have a geometric tail (about e^-0.19
// per entry): 64 was reached naturally within a few million evictions of a
// Zipf stream at capacity 1,000, which moved benchmarks to the slower Go
// map. 512 is out of reach of random hashes (about e^-97) and still cheap
// to scan (tags only) before crafted collisions trigger the switch.
const maxProbe = 512

type ientry struct {
	tag uint32 // high half of the item's hash
	id  int32  // slot id + 1; 0 marks an empty entry
}

// find returns the slot id of item. It never changes the index, so
// readers may call it concurrently.
func (r *ranked) find(item string) (int32, bool) {
	return r.findHashed(item, xxhash.Sum64String(item))
}

// findHashed is find with the item's hash already known (every slot keeps
// its item's hash, valid in any structure: xxhash is unkeyed).
func (r *ranked) findHashed(item string, h uint64) (int32, bool) {
	if r.slow != nil {
		id, ok := r.slow[item]
		return id, ok
	}
	id, _, ok := r.probe(item, h)
	return id, ok
}

// findForAdd is find for the mutating path: it also returns the hash for
// a following insertion and leaves open addressing after a long scan.
func (r *ranked) findForAdd(item string) (id int32, h uint64, ok bool) {
	h = xxhash.Sum64String(item) // slots keep it even in Go map mode
	id, ok = r.findForAddHashed(item, h)
	return id, h, ok
}

// findForAddHashed is findForAdd with the item's hash already known.
func (r *ranked) findForAddHashed(item string, h uint64) (int32, bool) {
	if r.slow != nil {
		id, ok := r.slow[item]
		return id, ok
	}
	id, n, ok := r.probe(item, h)
	if n > maxProbe {
		r.toSlow()
	}
	return id, ok
}

// probe scans from item's home entry to item or the first empty entry,
// returning the number of entries scanned.
func (r *ranked) probe(item string, h uint64) (id int32, n int, ok bool) {
	tag := uint32(h >> 32)
	for i := h & r.mask; ; i = (i + 1) & r.mask {
		e := r.tab[i]
		if e.id == 0 {
			return 0, n, false
		}
		n++
		if e.tag == tag && r.slots[e.id-1].item == item {
			return e.id - 1, n, true
		}
	}
}

// index adds slot id (item, hash h), not yet present, and reports whether
// its scan was too long; the caller calls toSlow once its slot is in place.
func (r *ranked) index(item string, h uint64, id int32) (long bool) {
	if r.slow != nil {
		r.slow[item] = id
		return false
	}
	if 2*(r.used+1) > len(r.tab) {
		r.grow()
	}
	r.used++
	return r.place(h, id) > maxProbe
}

func (r *ranked) place(h uint64, id int32) int {
	n := 0
	i := h & r.mask
	for r.tab[i].id != 0 {
		i = (i + 1) & r.mask
		n++
	}
	r.tab[i] = ientry{tag: uint32(h >> 32), id: id + 1}
	return n
}

// unindex removes slot id, whose item and hash are still in its slot.
func (r *ranked) unindex(id int32) {
	s := &r.slots[id]
	if r.slow != nil {
		delete(r.slow, s.item)
		return
	}
	m := r.mask
	i := s.hash & m
	for r.tab[i].id != id+1 {
		i = (i + 1) & m
	}
	// Backward shift: pull each later entry of the run into the hole unless
	// that would put it before its home, so no tombstones are needed.
	for j := i; ; {
		j = (j + 1) & m
		e := r.tab[j]
		if e.id == 0 {
			break
		}
		home := r.slots[e.id-1].hash & m
		if (j-home)&m >= (j-i)&m {
			r.tab[i] = e
			i = j
		}
	}
	r.tab[i] = ientry{}
	r.used--
}

// grow doubles the table and re-places the slots indexed so far (all of
// r.slots: callers index a slot before appending it).
func (r *ranked) grow() {
	r.tab = make([]ientry, max(16, 2*len(r.tab)))
	r.mask = uint64(len(r.tab) - 1)
	for id := range r.slots {
		r.place(r.slots[id].hash, int32(id))
	}
}

// toSlow moves the index to a Go map for the rest of the structure's life.
func (r *ranked) toSlow() {
	r.slow = make(map[string]int32, len(r.slots))
	for id := range r.slots {
		r.slow[r.slots[id].item] = int32(id)
	}
	r.tab, r.mask, r.used = nil, 0, 0
}
