package fsm

import (
	"time"
	"unsafe"
)

// Stats describe the FSM for status pages and metrics.
type Stats struct {
	AppliedIndex    uint64
	LogTimeMs       int64
	Leaderboards    []LeaderboardStats
	Producers       int
	Duplicates      uint64
	TooOld          uint64
	StaleEpoch      uint64
	RejectedStale   uint64
	IgnoredCommands uint64
	ConfigRejected  uint64
	Bytes           int64 // estimate of the counting state's memory
}

// LeaderboardStats describe one leaderboard on this partition.
type LeaderboardStats struct {
	Name             string
	Incarnation      uint64
	DistinctItems    int // live item ids
	Accepted         uint64
	RejectedMaxItems uint64
	RejectedNegative uint64 // approximate modes refuse negative deltas
	RejectedOverflow uint64 // counts that would leave the kept range
	Approximate      bool
	WindowEndMs      int64
	Windows          []WindowStats // "all" first
	Bytes            int64
}

// WindowStats describe one window.
type WindowStats struct {
	Window        time.Duration // 0: all
	Bucket        time.Duration
	PositiveItems int
	Buckets       int
	BucketEntries int
	LateDropped   uint64
}

// Stats returns a consistent view of the counters.
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	s := Stats{AppliedIndex: st.appliedIndex, LogTimeMs: st.logMs, Producers: len(st.dedupe.producers),
		Duplicates: st.counters.Duplicates, TooOld: st.counters.TooOld, StaleEpoch: st.counters.StaleEpoch,
		RejectedStale: st.counters.RejectedStale, IgnoredCommands: st.counters.IgnoredCommands,
		ConfigRejected: st.counters.ConfigRejected}
	s.Bytes += int64(len(st.dedupe.producers)) * int64(unsafe.Sizeof(producer{}))
	for _, name := range st.sortedBoards() {
		lb := st.boards[name]
		ls := LeaderboardStats{Name: name, Incarnation: lb.cfg.Incarnation, DistinctItems: lb.live,
			Accepted: lb.accepted, RejectedMaxItems: lb.rejectedMI, RejectedOverflow: lb.rejectedOF, Bytes: lb.bytes()}
		_, ls.WindowEndMs = lb.bounds(-1)
		if lb.ap != nil {
			ls.Approximate, ls.RejectedNegative = true, lb.ap.rejectedNeg
			ls.DistinctItems = lb.ap.all.monitored()
			ls.Windows = append(ls.Windows, WindowStats{PositiveItems: ls.DistinctItems})
			for i, w := range lb.wins {
				ls.Windows = append(ls.Windows, WindowStats{Window: time.Duration(w.durMs) * time.Millisecond,
					Bucket: time.Duration(w.bucketMs) * time.Millisecond, PositiveItems: lb.ap.wins[i].monitored(), LateDropped: lb.late[i]})
			}
			s.Bytes += ls.Bytes
			s.Leaderboards = append(s.Leaderboards, ls)
			continue
		}
		ls.Windows = append(ls.Windows, WindowStats{PositiveItems: lb.all.positive})
		for i, w := range lb.wins {
			ws := WindowStats{Window: time.Duration(w.durMs) * time.Millisecond, Bucket: time.Duration(w.bucketMs) * time.Millisecond,
				PositiveItems: w.positive, Buckets: len(w.buckets), LateDropped: lb.late[i]}
			for _, b := range w.buckets {
				ws.BucketEntries += b.ids.len()
			}
			ls.Windows = append(ls.Windows, ws)
		}
		s.Bytes += ls.Bytes
		s.Leaderboards = append(s.Leaderboards, ls)
	}
	return s
}

// bytes estimates a leaderboard's memory: item strings and table, per-window
// arrays, heaps and class lists, the item index, and bucket entries with their index maps.
func (lb *leaderboard) bytes() int64 {
	if lb.ap != nil {
		return lb.ap.bytes()
	}
	const (
		bucketEntry  = 4 + 8 // id and delta; a slot map only where a late event needed one
		slotMapEntry = 20
	)
	var n int64
	slots := int64(lb.items.capacity())
	n += slots*16 + lb.index.bytes() + int64(cap(lb.scratchHash))*8 + int64(cap(lb.scratchIDs))*4 + lb.recs.bytes() + int64(lb.allCounts.capacity())*8 + lb.allLog.bytes() + int64(cap(lb.free))*4
	n += lb.itemBytes // kept current: Stats runs on every metrics scrape, never walk the items
	for _, w := range append([]*window{lb.all}, lb.wins...) {
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
