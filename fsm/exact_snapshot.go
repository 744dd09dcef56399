package fsm

import (
	"slices"
	"unsafe"

	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// exactSnap is an exact board frozen: copy-on-write arrays (cow.go), so
// capturing it is O(chunks), whatever the number of items.
type exactSnap struct {
	items  frozen[string]
	counts frozen[int64]
	// The all-time deltas not yet folded into counts (journal.go).
	allIDs    []uint32
	allDeltas []int64
	buckets   [][]snapBucket
}

type snapBucket struct {
	index  int64
	ids    frozen[uint32]
	deltas frozen[int64]
}

func (e *exactBoard) capture(st *pb.LeaderboardState) boardSnap {
	st.IdSlots, st.FreeIds, st.RejectedMaxItems = uint64(e.items.len()), slices.Clone(e.free), e.rejectedMI
	s := &exactSnap{items: e.items.freeze(), counts: e.allCounts.freeze()}
	s.allIDs, s.allDeltas = e.allLog.seal()
	for _, w := range e.wins {
		var bs []snapBucket
		for _, bk := range w.buckets {
			bs = append(bs, snapBucket{index: bk.index, ids: bk.ids.freeze(), deltas: bk.deltas.freeze()})
		}
		s.buckets = append(s.buckets, bs)
	}
	return s
}

// write writes item chunks by id, then bucket chunks by window and index.
func (s *exactSnap) write(rw *recWriter) error {
	starts, ids, deltas := byChunk(s.allIDs, s.allDeltas, (s.items.len()+chunkMask)>>chunkBits, nil, nil, nil)
	for first := 0; first < s.items.len(); first += chunkSize {
		end := min(first+chunkSize, s.items.len())
		ic := &pb.ItemChunk{FirstId: uint32(first), Items: make([]string, 0, end-first), AllCounts: make([]int64, 0, end-first)}
		for i := first; i < end; i++ {
			ic.Items = append(ic.Items, s.items.get(i))
			ic.AllCounts = append(ic.AllCounts, s.counts.get(i))
		}
		for k := starts[first>>chunkBits]; k < starts[first>>chunkBits+1]; k++ {
			ic.AllCounts[ids[k]-uint32(first)] += deltas[k]
		}
		if err := rw.record(recItems, ic); err != nil {
			return err
		}
	}
	for wi, bs := range s.buckets {
		for _, bk := range bs {
			n := bk.ids.len()
			for first := 0; first == 0 || first < n; first += chunkSize {
				end := min(first+chunkSize, n)
				bc := &pb.BucketChunk{Window: uint32(wi), Index: bk.index, Last: end == n,
					Ids: make([]uint32, 0, end-first), Deltas: make([]int64, 0, end-first)}
				for i := first; i < end; i++ {
					bc.Ids = append(bc.Ids, bk.ids.get(i))
					bc.Deltas = append(bc.Deltas, bk.deltas.get(i))
				}
				if err := rw.record(recBucket, bc); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// exactRestore rebuilds an exact board: its item chunks, then its bucket
// chunks.
type exactRestore struct {
	e         *exactBoard
	name      string
	stage     int // recBoard, recItems or recBucket: the last record read
	items     int // item slots received
	wantIDs   int
	freeSet   map[uint32]bool
	curWin    int
	curIdx    int64
	curBk     *bucket
	inBucket  bool
	seenIn    []uint32 // per id: the last bucket (bucketSeq) it appeared in, to refuse duplicates
	bucketSeq uint32
}

func (e *exactBoard) restore(lb *leaderboard, m *pb.LeaderboardState) (boardRestore, error) {
	name := lb.cfg.Name
	if m.RejectedNegative != 0 {
		return nil, corrupt("leaderboard %q: negative rejections in an exact board", name)
	}
	e.rejectedMI = m.RejectedMaxItems
	r := &exactRestore{e: e, name: name, stage: recBoard, wantIDs: int(m.IdSlots), freeSet: make(map[uint32]bool, len(m.FreeIds))}
	for _, id := range m.FreeIds {
		if uint64(id) >= m.IdSlots || r.freeSet[id] {
			return nil, corrupt("leaderboard %q: bad free id %d", name, id)
		}
		r.freeSet[id] = true
	}
	e.free = slices.Clone(m.FreeIds)
	return r, nil
}

func (r *exactRestore) record(m proto.Message) error {
	switch m := m.(type) {
	case *pb.ItemChunk:
		if r.stage != recBoard && r.stage != recItems {
			return corrupt("leaderboard %q: item chunk out of order", r.name)
		}
		r.stage = recItems
		return r.addItems(m)
	case *pb.BucketChunk:
		if r.stage != recBucket {
			if err := r.finishItems(); err != nil {
				return err
			}
		}
		r.stage = recBucket
		return r.addBucket(m)
	}
	return corrupt("leaderboard %q: %T in an exact board", r.name, m)
}

func (r *exactRestore) addItems(m *pb.ItemChunk) error {
	e := r.e
	if int(m.FirstId) != r.items || len(m.Items) != len(m.AllCounts) || r.items+len(m.Items) > r.wantIDs {
		return corrupt("leaderboard %q: item chunk at %d (have %d of %d)", r.name, m.FirstId, r.items, r.wantIDs)
	}
	for i, s := range m.Items {
		id := uint32(r.items + i)
		c := m.AllCounts[i]
		e.items.append(s)
		e.allCounts.append(c)
		e.recs.grow()
		if r.freeSet[id] {
			if s != "" || c != 0 {
				return corrupt("leaderboard %q: free id %d holds an item", r.name, id)
			}
			continue
		}
		e.live++
		e.itemBytes += int64(len(s))
		e.all.rawAdd(id, c)
	}
	r.items += len(m.Items)
	return nil
}

// finishItems checks the item count and builds the index in one presized
// pass, now that the data backing the header's claims has been read.
func (r *exactRestore) finishItems() error {
	if r.items != r.wantIDs {
		return corrupt("leaderboard %q: %d of %d item slots", r.name, r.items, r.wantIDs)
	}
	e := r.e
	e.index = newItemIndex(&e.items, e.live)
	for id := range r.wantIDs {
		if j := id + recAhead; j < r.wantIDs {
			e.index.prefetchSlot(e.items.get(j))
		}
		if r.freeSet[uint32(id)] {
			continue
		}
		s := e.items.get(id)
		if _, dup := e.index.get(s); dup {
			return corrupt("leaderboard %q: item %q twice", r.name, s)
		}
		e.index.put(s, uint32(id))
	}
	return nil
}

func (r *exactRestore) addBucket(m *pb.BucketChunk) error {
	e := r.e
	if int(m.Window) >= len(e.wins) || len(m.Ids) != len(m.Deltas) {
		return corrupt("leaderboard %q: bucket chunk for window %d", r.name, m.Window)
	}
	wi := int(m.Window)
	w := e.wins[wi]
	if r.seenIn == nil {
		r.seenIn = make([]uint32, r.wantIDs)
	}
	if r.inBucket {
		if wi != r.curWin || m.Index != r.curIdx {
			return corrupt("leaderboard %q: bucket %d/%d interrupted", r.name, r.curWin, r.curIdx)
		}
	} else {
		if wi < r.curWin || (wi == r.curWin && len(w.buckets) > 0 && m.Index <= w.buckets[len(w.buckets)-1].index) {
			return corrupt("leaderboard %q: bucket %d/%d out of order", r.name, wi, m.Index)
		}
		r.curBk = &bucket{index: m.Index}
		r.bucketSeq++
		w.buckets = append(w.buckets, r.curBk)
	}
	r.curWin, r.curIdx = wi, m.Index
	b := r.curBk
	for i, id := range m.Ids {
		// Entries name ids at random: prefetch the record and the seen
		// mark of one a little ahead, as bucket expiry does.
		if j := i + recAhead; j < len(m.Ids) && int(m.Ids[j]) < r.wantIDs && int(m.Ids[j]) < e.recs.n {
			e.recs.prefetch(m.Ids[j])
			prefetch(unsafe.Pointer(&r.seenIn[m.Ids[j]]))
		}
		if int(id) >= r.wantIDs || r.freeSet[id] {
			return corrupt("leaderboard %q: bucket entry for id %d", r.name, id)
		}
		if r.seenIn[id] == r.bucketSeq {
			return corrupt("leaderboard %q: id %d twice in bucket %d", r.name, id, m.Index)
		}
		r.seenIn[id] = r.bucketSeq
		b.ids.append(id)
		b.deltas.append(m.Deltas[i])
		w.rawAdd(id, m.Deltas[i])
		e.recs.addRefs(id, 1)
	}
	r.inBucket = !m.Last
	return nil
}

func (r *exactRestore) finish() error {
	e := r.e
	if r.stage != recBucket {
		if err := r.finishItems(); err != nil {
			return err
		}
	}
	if r.inBucket {
		return corrupt("leaderboard %q: last bucket unfinished", r.name)
	}
	for id := 0; id < r.wantIDs; id++ {
		if !r.freeSet[uint32(id)] && e.recs.refs(uint32(id)) == 0 && e.all.cnt(uint32(id)) == 0 {
			return corrupt("leaderboard %q: id %d holds nothing but is not free", r.name, id)
		}
	}
	// Counts were written raw; build each window's classes and heap in one pass.
	e.all.rebuild()
	for _, w := range e.wins {
		w.rebuild()
		w.adoptNewest()
	}
	return nil
}
