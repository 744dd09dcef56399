package fsm

import (
	"fmt"
	"math"
	"time"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

const (
	// DefaultKMax is the largest k a leaderboard answers unless configured.
	DefaultKMax = 1000
	// MaxKMax bounds K_max so heaps stay small enough to scan per batch.
	MaxKMax = 100_000
	// baseResolutionMs is the event-time resolution carried by deltas.
	baseResolutionMs = 1000
	// noTime stands for "no event seen yet" on the event clock.
	noTime = math.MinInt64 / 4
)

// DefaultWindows are the sliding windows of a leaderboard created without any.
var DefaultWindows = []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

// niceBuckets are the bucket widths DefaultBucket picks from.
var niceBuckets = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// DefaultBucket picks the widest "nice" bucket that divides d into at least
// 24 buckets: 1m -> 1s, 1h -> 1m, 1d -> 1h, 7d -> 6h. Windows are answered at
// bucket granularity, so this is the precision/memory trade-off.
func DefaultBucket(d time.Duration) time.Duration {
	best := time.Second
	for _, b := range niceBuckets {
		if d%b == 0 && d/b >= 24 {
			best = b
		}
	}
	return best
}

// DefaultLeaderboard is the config of the leaderboard that always exists.
func DefaultLeaderboard(incarnation uint64) *pb.LeaderboardConfig {
	c := &pb.LeaderboardConfig{
		Name: "default", Incarnation: incarnation, Version: 1,
		Mode: pb.Mode_MODE_EXACT, Clock: pb.Clock_CLOCK_WALL, KMax: DefaultKMax,
	}
	for _, d := range DefaultWindows {
		c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: d.Milliseconds()})
	}
	return c
}

// NormalizeConfig fills defaults and validates a config. The FSM applies it
// to every config command, so what it accepts is deterministic.
func NormalizeConfig(c *pb.LeaderboardConfig) error {
	if c.Name == "" {
		return fmt.Errorf("leaderboard name is empty")
	}
	if c.Incarnation == 0 {
		return fmt.Errorf("leaderboard %q: incarnation must be positive", c.Name)
	}
	switch c.Mode {
	case pb.Mode_MODE_UNSPECIFIED:
		c.Mode = pb.Mode_MODE_EXACT
	case pb.Mode_MODE_EXACT, pb.Mode_MODE_CMS, pb.Mode_MODE_SPACESAVING:
	default:
		return fmt.Errorf("leaderboard %q: unknown mode %v", c.Name, c.Mode)
	}
	switch c.Clock {
	case pb.Clock_CLOCK_UNSPECIFIED:
		c.Clock = pb.Clock_CLOCK_WALL
	case pb.Clock_CLOCK_WALL, pb.Clock_CLOCK_EVENT:
	default:
		return fmt.Errorf("leaderboard %q: unknown clock %v", c.Name, c.Clock)
	}
	if c.KMax == 0 {
		c.KMax = DefaultKMax
	}
	if c.KMax > MaxKMax {
		return fmt.Errorf("leaderboard %q: k_max %d exceeds %d", c.Name, c.KMax, MaxKMax)
	}
	if c.AllowedLatenessMs < 0 {
		return fmt.Errorf("leaderboard %q: allowed_lateness must not be negative", c.Name)
	}
	seen := map[int64]bool{}
	for _, w := range c.Windows {
		d := w.DurationMs
		if d <= 0 || d%baseResolutionMs != 0 {
			return fmt.Errorf("leaderboard %q: window %dms must be a positive whole number of seconds", c.Name, d)
		}
		if seen[d] {
			return fmt.Errorf("leaderboard %q: window %v listed twice", c.Name, time.Duration(d)*time.Millisecond)
		}
		seen[d] = true
		if w.BucketMs == 0 {
			w.BucketMs = DefaultBucket(time.Duration(d) * time.Millisecond).Milliseconds()
		}
		if w.BucketMs <= 0 || w.BucketMs%baseResolutionMs != 0 || d%w.BucketMs != 0 {
			return fmt.Errorf("leaderboard %q: bucket %dms must be whole seconds and divide window %dms", c.Name, w.BucketMs, d)
		}
		if d/w.BucketMs > 10_000 {
			return fmt.Errorf("leaderboard %q: window %dms has more than 10000 buckets", c.Name, d)
		}
	}
	return normalizeApprox(c)
}

// span is a sliding window's shape: its length and bucket width (durMs 0:
// the "all" window).
type span struct {
	durMs    int64
	bucketMs int64
	nb       int64 // buckets per window
}

func spanOf(w *pb.WindowSpec) span {
	return span{durMs: w.DurationMs, bucketMs: w.BucketMs, nb: w.DurationMs / w.BucketMs}
}

// startIndex is the first bucket index live at clockMs.
func (s span) startIndex(clockMs int64) int64 {
	return floorDiv(clockMs, s.bucketMs) - s.nb + 1
}

// board is a leaderboard's counting state in its mode: exactBoard
// (exact.go) or approxBoard (approx.go). The leaderboard keeps what the
// modes share (config, window clock, counters) and passes itself in where
// a board needs it. Window wi is -1 for "all", else a sliding window.
type board interface {
	// apply counts a part's deltas: starts holds each sliding window's
	// first live bucket index; events behind it are added to late.
	apply(lb *leaderboard, d *pb.LeaderboardDeltas, entryMs int64, starts []int64, late []uint64, out *pb.Outcome)
	// expire drops the buckets the window clock has left behind.
	expire(clockMs int64)
	// settle runs once per applied batch.
	settle()
	// resize follows a k_max change.
	resize(kmax int)
	top(wi, k int) (items []Item, rest int64)
	count(wi int, item string) Item
	distinct() int
	contains(item string) bool
	// stats fills the mode's part of ls.
	stats(lb *leaderboard, ls *LeaderboardStats)
	bytes() int64
	// capture freezes the state for a snapshot, filling its part of st.
	capture(st *pb.LeaderboardState) boardSnap
	// restore starts rebuilding this (new, empty) board from a snapshot.
	restore(lb *leaderboard, m *pb.LeaderboardState) (boardRestore, error)
	check() error
}

// leaderboard is one leaderboard on a partition.
type leaderboard struct {
	cfg    *pb.LeaderboardConfig
	spans  []span // the sliding windows
	counts board

	maxEventMs int64 // highest event time seen (event clock)
	clockMs    int64 // window clock, monotonic
	late       []uint64
	accepted   uint64
	rejectedOF uint64 // rejected: a count would leave the kept range
}

func newLeaderboard(cfg *pb.LeaderboardConfig, tune *tuning) *leaderboard {
	lb := &leaderboard{cfg: cfg, maxEventMs: noTime, clockMs: noTime, late: make([]uint64, len(cfg.Windows))}
	for _, w := range cfg.Windows {
		lb.spans = append(lb.spans, spanOf(w))
	}
	if cfg.Mode == pb.Mode_MODE_EXACT {
		lb.counts = newExactBoard(cfg, lb.spans, tune)
	} else {
		lb.counts = newApproxBoard(cfg, lb.spans)
	}
	return lb
}

func (lb *leaderboard) approximate() bool { return lb.cfg.Mode != pb.Mode_MODE_EXACT }

// windowIndex maps a duration to -1 for "all" or the sliding window's index.
func (lb *leaderboard) windowIndex(d time.Duration) (int, bool) {
	if d == 0 {
		return -1, true
	}
	for i, s := range lb.spans {
		if s.durMs == d.Milliseconds() {
			return i, true
		}
	}
	return 0, false
}

// bounds is window wi's time range at the clock, in ms.
func (lb *leaderboard) bounds(wi int) (start, end int64) {
	end = lb.clockMs
	if end == noTime {
		end = 0
	}
	if wi >= 0 && lb.clockMs != noTime {
		s := lb.spans[wi]
		start = s.startIndex(lb.clockMs) * s.bucketMs
	}
	return start, end
}

// computeClock is the window clock for log time logMs, before the monotonic clamp.
func (lb *leaderboard) computeClock(logMs int64) int64 {
	if lb.cfg.Clock == pb.Clock_CLOCK_EVENT {
		if lb.maxEventMs == noTime {
			return noTime
		}
		return lb.maxEventMs - lb.cfg.AllowedLatenessMs
	}
	return logMs
}

// advance moves the window clock forward and expires buckets.
func (lb *leaderboard) advance(logMs int64) {
	c := lb.computeClock(logMs)
	if c <= lb.clockMs {
		return
	}
	lb.clockMs = c
	lb.counts.expire(c)
}

// applyDeltas counts one leaderboard's deltas of a part. Late decisions use
// the clock of entryClock; the caller advances it afterwards.
func (lb *leaderboard) applyDeltas(d *pb.LeaderboardDeltas, entryMs int64, out *pb.Outcome) {
	var starts [16]int64
	st := lb.windowStarts(starts[:0], lb.entryClock(d, entryMs))
	var lateHere [16]uint64
	lh := zeros(lateHere[:0], len(lb.spans))
	lb.counts.apply(lb, d, entryMs, st, lh, out)
	for wi, n := range lh {
		if n > 0 {
			lb.late[wi] += n
			out.Late = append(out.Late, &pb.LateCount{Leaderboard: lb.cfg.Name, Window: uint32(wi), Events: n})
		}
	}
}

// accept counts ev events of a delta at event time t as accepted.
func (lb *leaderboard) accept(ev uint64, t int64, out *pb.Outcome) {
	lb.accepted += ev
	out.Accepted += ev
	if t > lb.maxEventMs {
		lb.maxEventMs = t
	}
}

// entryClock is the window clock a part's late events are judged against.
// A part carrying its request's latest event time is judged against the
// clock as its entry will leave it: an event is then reported late whether
// or not newer events share its request (else they would count in a bucket
// that the entry's own advance expires, unreported). Parts without it, from
// logs written before, keep the rule they were applied with: the clock as
// it stood before the entry.
func (lb *leaderboard) entryClock(d *pb.LeaderboardDeltas, entryMs int64) int64 {
	if d.MaxEventTimeMs == 0 {
		return lb.clockMs
	}
	if lb.cfg.Clock == pb.Clock_CLOCK_EVENT && d.MaxEventTimeMs > lb.maxEventMs {
		lb.maxEventMs = d.MaxEventTimeMs // as the request's watermark tick would
	}
	return max(lb.clockMs, lb.computeClock(entryMs))
}

// windowStarts appends each sliding window's first live bucket index at
// clock (every bucket is live while it reads none).
func (lb *leaderboard) windowStarts(dst []int64, clock int64) []int64 {
	for _, s := range lb.spans {
		if clock == noTime {
			dst = append(dst, math.MinInt64)
		} else {
			dst = append(dst, s.startIndex(clock))
		}
	}
	return dst
}

// resized is s with length n, reusing its array when it is large enough.
func resized[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// zeros appends n zero values (scratch per window, on the caller's stack).
func zeros[T any](dst []T, n int) []T {
	var z T
	for range n {
		dst = append(dst, z)
	}
	return dst
}

// eventsAt is the number of raw events delta i stands for (0 means 1).
func eventsAt(d *pb.LeaderboardDeltas, i int) uint64 {
	if len(d.Events) > 0 && d.Events[i] > 0 {
		return uint64(d.Events[i])
	}
	return 1
}

// timeAt is delta i's event time in ms; untimed deltas take the entry's time.
func timeAt(d *pb.LeaderboardDeltas, i int, entryMs int64) int64 {
	if s := d.EventTimesS[i]; s != 0 {
		return s * baseResolutionMs
	}
	return entryMs
}

// CheckUpdate reports whether c may replace old within one incarnation:
// only the limits may change (and in the approximate modes, not k_max or
// the structure's size either). Both must be normalized.
func CheckUpdate(old, c *pb.LeaderboardConfig) error {
	if c.Mode != old.Mode || c.Clock != old.Clock || len(c.Windows) != len(old.Windows) {
		return fmt.Errorf("leaderboard %q: mode, clock and windows cannot change without a new incarnation", c.Name)
	}
	for i, w := range c.Windows {
		if w.DurationMs != old.Windows[i].DurationMs || w.BucketMs != old.Windows[i].BucketMs {
			return fmt.Errorf("leaderboard %q: windows cannot change without a new incarnation", c.Name)
		}
	}
	if c.Mode != pb.Mode_MODE_EXACT && (c.KMax != old.KMax || c.Capacity != old.Capacity || c.FilterCells != old.FilterCells || c.Epsilon != old.Epsilon || c.Delta != old.Delta) {
		return fmt.Errorf("leaderboard %q: k_max, capacity, filter_cells, epsilon and delta of mode %s cannot change without a new incarnation", c.Name, c.Mode)
	}
	return nil
}

// update applies a same-incarnation config with a higher version.
func (lb *leaderboard) update(c *pb.LeaderboardConfig) error {
	old := lb.cfg
	if err := CheckUpdate(old, c); err != nil {
		return err
	}
	lb.cfg = c
	if c.KMax != old.KMax {
		lb.counts.resize(int(c.KMax))
	}
	return nil
}
