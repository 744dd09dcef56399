package fsm

import (
	"math"
	"slices"
	"strings"
	"unsafe"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// exactBoard is the counting state of an exact leaderboard: every item
// with its count in "all" and in each sliding window (window.go).
type exactBoard struct {
	items cowArray[string] // by id; "" for free ids
	index *itemIndex
	free  []uint32 // free ids, reused from the end
	// allCounts and allLog are the canonical all-time counts, by id: the
	// counts as of the last fold plus the deltas since (journal.go), both
	// captured by snapshots. The "all" window keeps the sum in the records.
	allCounts cowArray[int64]
	allLog    allJournal
	// recs hold every window's per-item state and the bucket references.
	recs *recStore
	live int
	// itemBytes sums the live items' lengths, for Stats without a walk.
	itemBytes int64

	all  *window
	wins []*window

	rejectedMI uint64 // rejected by max_items

	release func(id uint32)
	tune    *tuning // the FSM's

	frees       uint64 // ids freed so far: invalidates ids resolved before
	scratchHash []uint64
	scratchIDs  []uint32
}

func newExactBoard(cfg *pb.LeaderboardConfig, spans []span, tune *tuning) *exactBoard {
	e := &exactBoard{tune: tune}
	e.index = newItemIndex(&e.items, 0)
	k := int(cfg.KMax)
	e.recs = newRecStore(len(spans))
	e.all = newWindow(span{}, k, &e.items, e.recs, 0, tune.trackedMin)
	for i, s := range spans {
		e.wins = append(e.wins, newWindow(s, k, &e.items, e.recs, 2+3*i, tune.trackedMin))
	}
	e.release = e.releaseRef
	return e
}

func (e *exactBoard) window(i int) *window {
	if i < 0 {
		return e.all
	}
	return e.wins[i]
}

// intern returns the id of item, allocating one unless maxItems (0: no
// limit) are live.
func (e *exactBoard) intern(item string, maxItems uint64) (uint32, bool) {
	if id, ok := e.index.get(item); ok {
		return id, true
	}
	if maxItems > 0 && uint64(e.live) >= maxItems {
		return 0, false
	}
	item = strings.Clone(item) // decoded items alias the log entry
	var id uint32
	if n := len(e.free); n > 0 {
		id = e.free[n-1]
		e.free = e.free[:n-1]
		e.items.set(int(id), item)
	} else {
		id = uint32(e.items.append(item))
		e.allCounts.append(0)
		e.recs.grow()
	}
	e.index.put(item, id)
	e.live++
	e.itemBytes += int64(len(item))
	return id, true
}

// maybeFree releases an id once nothing counts or references it.
func (e *exactBoard) maybeFree(id uint32) {
	if e.recs.refs(id) != 0 || e.all.cnt(id) != 0 {
		return
	}
	item := e.items.get(int(id))
	e.index.del(item)
	e.items.set(int(id), "")
	e.free = append(e.free, id)
	e.frees++
	e.live--
	e.itemBytes -= int64(len(item))
}

// addAll adds delta to id's all-time count, in its record and canonically.
func (e *exactBoard) addAll(id uint32, delta int64) {
	e.all.add(id, delta)
	if e.tune.noJournal { // the journal was folded when apply began
		e.allCounts.set(int(id), e.allCounts.get(int(id))+delta)
		return
	}
	e.allLog.add(id, delta)
}

func (e *exactBoard) releaseRef(id uint32) {
	if e.recs.addRefs(id, -1) == 0 {
		e.maybeFree(id)
	}
}

func (e *exactBoard) apply(lb *leaderboard, d *pb.LeaderboardDeltas, entryMs int64, st []int64, lh []uint64, out *pb.Outcome) {
	// Cache the last bucket per window: consecutive deltas usually share it.
	var lastB [16]*bucket
	lastBk := zeros(lastB[:0], len(e.wins))
	var idxs [16]int64
	ix, lastT := idxs[:0], int64(math.MinInt64)
	if e.tune.noJournal {
		e.allLog.fold(&e.allCounts) // entries from before the switch
	}
	var pre []uint32
	if !e.tune.unstaged {
		pre = e.resolve(d.Items)
	}
	frees := e.frees
	for i, item := range d.Items {
		ev := eventsAt(d, i)
		t := timeAt(d, i, entryMs)
		var id uint32
		ok := true
		// A pre-resolved id is stale once this loop freed any id (a
		// later intern may have reused it); absent items intern here.
		if pre != nil && pre[i] != noID && e.frees == frees {
			id = pre[i]
		} else {
			id, ok = e.intern(item, lb.cfg.MaxItems)
		}
		if !ok {
			e.rejectedMI += ev
			out.Rejected += ev
			continue
		}
		delta := d.Deltas[i]
		// Each window's bucket index of t, for fits and the adds; deltas
		// of a part mostly share their second, so divide only on a change.
		if t != lastT {
			ix = idxs[:0]
			for _, w := range e.wins {
				ix = append(ix, floorDiv(t, w.bucketMs))
			}
			lastT = t
		}
		if !e.fits(id, delta, ix, st) {
			lb.rejectedOF += ev
			out.Rejected += ev
			e.maybeFree(id)
			continue
		}
		e.addAll(id, delta)
		for wi, w := range e.wins {
			idx := ix[wi]
			if idx < st[wi] {
				lh[wi] += ev
				continue
			}
			b := lastBk[wi]
			if b == nil || b.index != idx {
				b = w.bucketFor(idx)
				lastBk[wi] = b
			}
			if w.addToBucket(b, id, delta) {
				e.recs.addRefs(id, 1)
			}
		}
		e.maybeFree(id)
		lb.accept(ev, t, out)
	}
	if e.allLog.due(e.allCounts.len(), e.tune.foldMin) {
		e.allLog.fold(&e.allCounts)
	}
}

// resolve looks up every item of a part in one batch and prefetches the
// per-id state the apply loop will read. The loop's work per delta is a
// chain of loads and branches that depend on each other, so its cache misses
// do not overlap; here the loads of different deltas are independent and do.
// Prefetches rather than loads: a load that misses holds up retirement, so a
// few hundred of them stall the core instead of overlapping.
// Ids are noID for items not yet interned.
func (e *exactBoard) resolve(items []string) []uint32 {
	hashes, ids := e.index.lookupBatch(items, e.scratchHash, e.scratchIDs)
	if cap(ids) <= maxScratch {
		e.scratchHash, e.scratchIDs = hashes, ids
	}
	for _, id := range ids {
		if id == noID {
			continue
		}
		e.recs.prefetch(id)
		if e.tune.noJournal {
			e.allCounts.prefetch(int(id))
		}
	}
	return ids
}

// maxScratch bounds the per-leaderboard scratch kept between entries.
const maxScratch = 1 << 16

// Counts stay within ±MaxCount, and a delta within ±MaxDelta, so no sum
// of them wraps int64 (the server caps an event at 2^40 and a request at
// 100,000 events); a delta that would leave the range is refused, counted.
const (
	MaxCount = 1 << 62
	MaxDelta = 1 << 57
)

// fits reports whether delta keeps id's count within ±MaxCount in "all"
// and in every sliding window that will count it (bucket index ix[wi]).
func (e *exactBoard) fits(id uint32, delta int64, ix, starts []int64) bool {
	if delta > MaxDelta || delta < -MaxDelta {
		return false
	}
	in := func(c int64) bool { c += delta; return c <= MaxCount && c >= -MaxCount }
	if !in(e.all.cnt(id)) {
		return false
	}
	for wi, w := range e.wins {
		if ix[wi] >= starts[wi] && !in(w.cnt(id)) {
			return false
		}
	}
	return true
}

func (e *exactBoard) expire(clockMs int64) {
	for _, w := range e.wins {
		w.expire(clockMs, e.release, !e.tune.noExpiryPrefetch)
	}
}

func (e *exactBoard) settle() {
	e.all.settle()
	for _, w := range e.wins {
		w.settle()
	}
}

func (e *exactBoard) resize(kmax int) {
	e.all.resize(kmax)
	for _, w := range e.wins {
		w.resize(kmax)
	}
}

func (e *exactBoard) top(wi, k int) ([]Item, int64) {
	w := e.window(wi)
	// Heap nodes carry their count and key prefix: ranking them touches no
	// record, where ranking ids would miss the cache once per member.
	nodes := w.topNodes(k)
	slices.SortFunc(nodes, func(a, b hnode) int {
		if w.nodeAbove(a, b) {
			return -1
		}
		if w.nodeAbove(b, a) {
			return 1
		}
		return 0
	})
	items := make([]Item, len(nodes))
	for i, nd := range nodes {
		items[i] = Item{Item: e.items.get(int(nd.id)), Count: nd.count, Lower: nd.count, Upper: nd.count}
	}
	return items, 0
}

func (e *exactBoard) count(wi int, item string) Item {
	it := Item{Item: item}
	if id, ok := e.index.get(item); ok {
		it.Count = e.window(wi).cnt(id)
	}
	it.Lower, it.Upper = it.Count, it.Count
	return it
}

func (e *exactBoard) distinct() int { return e.live }

func (e *exactBoard) contains(item string) bool {
	_, ok := e.index.get(item)
	return ok
}

func (e *exactBoard) stats(lb *leaderboard, ls *LeaderboardStats) {
	ls.DistinctItems, ls.RejectedMaxItems = e.live, e.rejectedMI
	ls.Windows = append(ls.Windows, WindowStats{PositiveItems: e.all.positive})
	for i, w := range e.wins {
		ws := WindowStats{Window: msDuration(w.durMs), Bucket: msDuration(w.bucketMs),
			PositiveItems: w.positive, Buckets: len(w.buckets), LateDropped: lb.late[i]}
		for _, b := range w.buckets {
			ws.BucketEntries += b.ids.len()
		}
		ls.Windows = append(ls.Windows, ws)
	}
}

// bytes estimates the memory: item strings and table, per-window arrays,
// heaps and class lists, the item index, and bucket entries with their
// index maps.
func (e *exactBoard) bytes() int64 {
	const (
		bucketEntry  = 4 + 8 // id and delta; a slot map only where a late event needed one
		slotMapEntry = 20
	)
	var n int64
	slots := int64(e.items.capacity())
	n += slots*16 + e.index.bytes() + int64(cap(e.scratchHash))*8 + int64(cap(e.scratchIDs))*4 + e.recs.bytes() + int64(e.allCounts.capacity())*8 + e.allLog.bytes() + int64(cap(e.free))*4
	n += e.itemBytes // kept current: Stats runs on every metrics scrape, never walk the items
	for _, w := range append([]*window{e.all}, e.wins...) {
		n += int64(cap(w.heap)) * 32
		if w.classes != nil {
			n += numClasses * int64(unsafe.Sizeof(class{}))
			for i := range w.classes {
				n += int64(cap(w.classes[i].ids)) * 4
			}
		}
		for _, b := range w.buckets {
			n += int64(b.ids.len())*bucketEntry + int64(len(b.slot))*slotMapEntry
		}
	}
	return n
}
