package fsm

import "unsafe"

// allJournal holds the all-time deltas a leaderboard applied since its last
// fold into the canonical counts (exactBoard.allCounts). The apply loop
// appends here instead of writing the count array by id: that write was a
// random line per delta, about 7% of apply at 10M items (BENCHMARKS.md,
// "All-time journal"). A fold groups the entries by chunk of the array
// (a counting sort) and adds them chunk by chunk, so each chunk's lines are
// written together. A snapshot carries the unfolded entries beside the
// frozen array and adds them as it writes, so Snapshot() stays O(chunks).
type allJournal struct {
	ids    []uint32
	deltas []int64
	// shared: a snapshot holds ids and deltas up to their length, so the
	// next fold starts new arrays instead of overwriting them.
	shared bool
	// Scratch of fold.
	starts  []int32
	sIDs    []uint32
	sDeltas []int64
}

func (j *allJournal) add(id uint32, d int64) {
	j.ids = append(j.ids, id)
	j.deltas = append(j.deltas, d)
}

// due reports whether the journal is worth a fold: at least foldMin
// entries (tuning) and an eighth of the ids.
func (j *allJournal) due(ids, foldMin int) bool { return len(j.ids) >= max(foldMin, ids/8) }

// fold adds the entries to counts and empties the journal.
func (j *allJournal) fold(counts *cowArray[int64]) {
	if len(j.ids) == 0 {
		return
	}
	nc := (counts.len() + chunkMask) >> chunkBits
	j.starts, j.sIDs, j.sDeltas = byChunk(j.ids, j.deltas, nc, j.starts, j.sIDs, j.sDeltas)
	for c := range nc {
		lo, hi := j.starts[c], j.starts[c+1]
		if lo == hi {
			continue
		}
		v := counts.writable(c).v
		ids, ds := j.sIDs[lo:hi], j.sDeltas[lo:hi]
		// Every line first, so the misses of one chunk overlap.
		for _, id := range ids {
			prefetch(unsafe.Pointer(&v[id&chunkMask]))
		}
		for k, id := range ids {
			v[id&chunkMask] += ds[k]
		}
	}
	if j.shared {
		j.ids, j.deltas, j.shared = nil, nil, false
	} else {
		j.ids, j.deltas = j.ids[:0], j.deltas[:0]
	}
}

// seal hands the entries to a snapshot: it may read them while apply goes on.
func (j *allJournal) seal() ([]uint32, []int64) {
	j.shared = true
	n := len(j.ids)
	return j.ids[:n:n], j.deltas[:n:n]
}

func (j *allJournal) bytes() int64 {
	return int64(cap(j.ids)+cap(j.sIDs))*4 + int64(cap(j.deltas)+cap(j.sDeltas))*8 + int64(cap(j.starts))*4
}

// byChunk groups entries by chunk (id >> chunkBits), keeping their order
// within a chunk: chunk c's entries are [starts[c], starts[c+1]) of the
// returned ids and deltas. The slices passed in are reused as scratch.
func byChunk(ids []uint32, deltas []int64, chunks int, starts []int32, oIDs []uint32, oDeltas []int64) ([]int32, []uint32, []int64) {
	starts = resized(starts, chunks+1)
	clear(starts)
	for _, id := range ids {
		starts[id>>chunkBits+1]++
	}
	for c := range chunks {
		starts[c+1] += starts[c]
	}
	oIDs, oDeltas = resized(oIDs, len(ids)), resized(oDeltas, len(ids))
	// starts[c] is chunk c's cursor while scattering; afterwards it has
	// reached starts[c+1], so shift the bounds back by one chunk.
	for k, id := range ids {
		c := id >> chunkBits
		p := starts[c]
		oIDs[p], oDeltas[p] = id, deltas[k]
		starts[c] = p + 1
	}
	copy(starts[1:], starts[:chunks])
	starts[0] = 0
	return starts, oIDs, oDeltas
}
