package sketch

import (
	"maps"
	"slices"
	"strings"
	"unsafe"
)

// classes holds a Summary's counters grouped by exact count, in the manner
// of Metwally et al.'s Stream-Summary: an item's increment moves it between
// two unordered classes in O(1), and a min-heap over the classes' distinct
// counts (integer keys only) finds the lowest class. Only that class is
// ever ordered by item: it is sorted once when an eviction first needs it,
// and evictions then pop its worst item (the largest string) from the end.
// New items never join it (they arrive with count min+w), so one sort
// serves all of its members. This replaces an item heap whose every
// eviction sifted a node through the many counters tied at the minimum.
type classes struct {
	idx      map[string]int32 // item -> slot id
	slots    []cslot
	cls      []class
	free     []int32          // ids of dropped classes, for reuse
	byCount  map[uint64]int32 // count -> id of the one live class with it
	heap     []int32          // live class ids, min-heap by count
	strBytes int
}

type cslot struct {
	item       string
	key        uint64 // prefixKey(item): most comparisons in a sort stop here
	count, err uint64
	cls        int32 // class id
	pos        int32 // index in the class's ids
}

type class struct {
	count  uint64
	ids    []int32 // member slot ids; -1 marks a member that left a sorted class
	live   int32   // members, not counting -1 marks
	sorted bool    // ids ascending by item, so the worst member is last
	hpos   int32   // index in heap
}

func newClasses() classes {
	return classes{idx: make(map[string]int32), byCount: make(map[uint64]int32)}
}

func (c *classes) len() int { return len(c.slots) }

// insert adds an item that is not present.
func (c *classes) insert(item string, count, err uint64) {
	id := int32(len(c.slots))
	c.slots = append(c.slots, cslot{item: item, key: prefixKey(item), count: count, err: err})
	c.idx[item] = id
	c.strBytes += len(item)
	c.join(id, count)
}

// bump adds w to slot id's count.
func (c *classes) bump(id int32, w uint64) {
	s := &c.slots[id]
	old := s.count
	s.count += w
	cl := &c.cls[s.cls]
	if cl.live == 1 {
		if _, taken := c.byCount[s.count]; !taken {
			// Alone in its class and no class to join: relabel in place.
			delete(c.byCount, old)
			c.byCount[s.count] = s.cls
			cl.count = s.count
			c.down(int(cl.hpos))
			return
		}
	}
	c.leave(id)
	c.join(id, s.count)
}

// evict replaces the worst item (lowest count, largest item) by item with
// count min+w and err min, reusing its slot, and returns min.
func (c *classes) evict(item string, w uint64) uint64 {
	cid := c.heap[0]
	cl := &c.cls[cid]
	if !cl.sorted {
		c.sortClass(cid)
	}
	ids := cl.ids
	for ids[len(ids)-1] < 0 {
		ids = ids[:len(ids)-1]
	}
	id := ids[len(ids)-1]
	cl.ids = ids[:len(ids)-1]
	cl.live--
	if cl.live == 0 {
		c.drop(cid)
	}
	s := &c.slots[id]
	m := s.count
	delete(c.idx, s.item)
	c.idx[item] = id
	c.strBytes += len(item) - len(s.item)
	s.item, s.key, s.count, s.err = item, prefixKey(item), m+w, m
	c.join(id, m+w)
	return m
}

// minCount is the lowest count; the summary must not be empty.
func (c *classes) minCount() uint64 { return c.cls[c.heap[0]].count }

func (c *classes) join(id int32, count uint64) {
	cid, ok := c.byCount[count]
	if !ok {
		cid = c.newClass(count)
	}
	cl := &c.cls[cid]
	if cl.sorted {
		c.unsort(cid) // only after a restore or merge; never in steady state
	}
	s := &c.slots[id]
	s.cls, s.pos = cid, int32(len(cl.ids))
	cl.ids = append(cl.ids, id)
	cl.live++
}

func (c *classes) leave(id int32) {
	s := &c.slots[id]
	cid := s.cls
	cl := &c.cls[cid]
	if cl.sorted {
		cl.ids[s.pos] = -1 // keep the order; evict skips the mark
	} else {
		last := cl.ids[len(cl.ids)-1]
		cl.ids[s.pos] = last
		c.slots[last].pos = s.pos
		cl.ids = cl.ids[:len(cl.ids)-1]
	}
	cl.live--
	if cl.live == 0 {
		c.drop(cid)
	}
}

func (c *classes) newClass(count uint64) int32 {
	var cid int32
	if n := len(c.free); n > 0 {
		cid = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		cid = int32(len(c.cls))
		c.cls = append(c.cls, class{})
	}
	cl := &c.cls[cid]
	cl.count, cl.ids, cl.live, cl.sorted = count, cl.ids[:0], 0, false
	c.byCount[count] = cid
	cl.hpos = int32(len(c.heap))
	c.heap = append(c.heap, cid)
	c.up(len(c.heap) - 1)
	return cid
}

// drop removes an empty class, keeping its ids buffer for reuse.
func (c *classes) drop(cid int32) {
	cl := &c.cls[cid]
	delete(c.byCount, cl.count)
	i := int(cl.hpos)
	last := len(c.heap) - 1
	if i != last {
		c.heap[i] = c.heap[last]
		c.cls[c.heap[i]].hpos = int32(i)
	}
	c.heap = c.heap[:last]
	if i != last {
		c.up(i)
		c.down(int(c.cls[c.heap[i]].hpos))
	}
	cl.ids, cl.sorted = cl.ids[:0], false
	c.free = append(c.free, cid)
}

// sortClass orders a class by item ascending, dropping -1 marks.
func (c *classes) sortClass(cid int32) {
	c.compact(cid)
	cl := &c.cls[cid]
	slices.SortFunc(cl.ids, func(a, b int32) int {
		sa, sb := &c.slots[a], &c.slots[b]
		switch {
		case sa.key < sb.key:
			return -1
		case sa.key > sb.key:
			return 1
		}
		return strings.Compare(sa.item, sb.item)
	})
	for i, id := range cl.ids {
		c.slots[id].pos = int32(i)
	}
	cl.sorted = true
}

func (c *classes) unsort(cid int32) {
	c.compact(cid)
	c.cls[cid].sorted = false
}

func (c *classes) compact(cid int32) {
	cl := &c.cls[cid]
	n := 0
	for _, id := range cl.ids {
		if id >= 0 {
			cl.ids[n] = id
			c.slots[id].pos = int32(n)
			n++
		}
	}
	cl.ids = cl.ids[:n]
}

func (c *classes) less(i, j int) bool {
	return c.cls[c.heap[i]].count < c.cls[c.heap[j]].count
}

func (c *classes) swap(i, j int) {
	c.heap[i], c.heap[j] = c.heap[j], c.heap[i]
	c.cls[c.heap[i]].hpos = int32(i)
	c.cls[c.heap[j]].hpos = int32(j)
}

func (c *classes) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !c.less(i, p) {
			return
		}
		c.swap(i, p)
		i = p
	}
}

func (c *classes) down(i int) {
	n := len(c.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && c.less(r, l) {
			m = r
		}
		if !c.less(m, i) {
			return
		}
		c.swap(i, m)
		i = m
	}
}

func (c *classes) reset() {
	clear(c.idx)
	clear(c.byCount)
	clear(c.slots) // drop string references
	c.slots = c.slots[:0]
	for i := range c.cls {
		c.cls[i].ids = c.cls[i].ids[:0]
	}
	c.cls = c.cls[:0] // the ids buffers are dropped with them
	c.free = c.free[:0]
	c.heap = c.heap[:0]
	c.strBytes = 0
}

func (c *classes) clone() classes {
	n := classes{
		idx:      maps.Clone(c.idx),
		slots:    slices.Clone(c.slots),
		cls:      slices.Clone(c.cls),
		free:     slices.Clone(c.free),
		byCount:  maps.Clone(c.byCount),
		heap:     slices.Clone(c.heap),
		strBytes: c.strBytes,
	}
	for i := range n.cls {
		n.cls[i].ids = slices.Clone(n.cls[i].ids)
	}
	return n
}

func (c *classes) bytes() int {
	b := cap(c.slots)*int(unsafe.Sizeof(cslot{})) +
		cap(c.cls)*int(unsafe.Sizeof(class{})) +
		(cap(c.free)+cap(c.heap))*4 +
		len(c.idx)*mapEntryBytes + len(c.byCount)*mapEntryBytes +
		c.strBytes
	for i := range c.cls {
		b += cap(c.cls[i].ids) * 4
	}
	return b
}
