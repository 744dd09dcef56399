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
		ls := LeaderboardStats{Name: name, Incarnation: lb.cfg.Incarnation, Accepted: lb.accepted,
			RejectedOverflow: lb.rejectedOF, Bytes: lb.counts.bytes()}
		_, ls.WindowEndMs = lb.bounds(-1)
		lb.counts.stats(lb, &ls)
		s.Bytes += ls.Bytes
		s.Leaderboards = append(s.Leaderboards, ls)
	}
	return s
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
