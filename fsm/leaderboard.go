package fsm

import (
	"fmt"
	"math"
	"strings"
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

// leaderboard is the exact counting state of one leaderboard on a partition.
type leaderboard struct {
	cfg   *pb.LeaderboardConfig
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
	ap   *approx // cms and spacesaving; then all and the windows' counts are unused

	maxEventMs int64 // highest event time seen (event clock)
	clockMs    int64 // window clock, monotonic
	late       []uint64
	accepted   uint64
	rejectedMI uint64 // rejected by max_items
	rejectedOF uint64 // rejected: a count would leave the kept range

	release func(id uint32)
	tune    *tuning // the FSM's

	frees       uint64 // ids freed so far: invalidates ids resolved before
	scratchHash []uint64
	scratchIDs  []uint32
}

func newLeaderboard(cfg *pb.LeaderboardConfig, tune *tuning) *leaderboard {
	lb := &leaderboard{cfg: cfg, maxEventMs: noTime, clockMs: noTime, tune: tune}
	lb.index = newItemIndex(&lb.items, 0)
	k := int(cfg.KMax)
	lb.recs = newRecStore(len(cfg.Windows))
	lb.all = newWindow(0, 0, k, &lb.items, lb.recs, 0, tune.trackedMin)
	for i, w := range cfg.Windows {
		lb.wins = append(lb.wins, newWindow(w.DurationMs, w.BucketMs, k, &lb.items, lb.recs, 2+3*i, tune.trackedMin))
	}
	lb.late = make([]uint64, len(lb.wins))
	lb.release = lb.releaseRef
	if cfg.Mode != pb.Mode_MODE_EXACT {
		lb.ap = newApprox(cfg)
	}
	return lb
}

// windowIndex maps a duration to -1 for "all" or the sliding window's index.
func (lb *leaderboard) windowIndex(d time.Duration) (int, bool) {
	if d == 0 {
		return -1, true
	}
	for i, w := range lb.wins {
		if w.durMs == d.Milliseconds() {
			return i, true
		}
	}
	return 0, false
}

func (lb *leaderboard) window(i int) *window {
	if i < 0 {
		return lb.all
	}
	return lb.wins[i]
}

// intern returns the id of item, allocating one unless max_items is reached.
func (lb *leaderboard) intern(item string) (uint32, bool) {
	if id, ok := lb.index.get(item); ok {
		return id, true
	}
	if lb.cfg.MaxItems > 0 && uint64(lb.live) >= lb.cfg.MaxItems {
		return 0, false
	}
	item = strings.Clone(item) // decoded items alias the log entry
	var id uint32
	if n := len(lb.free); n > 0 {
		id = lb.free[n-1]
		lb.free = lb.free[:n-1]
		lb.items.set(int(id), item)
	} else {
		id = uint32(lb.items.append(item))
		lb.allCounts.append(0)
		lb.recs.grow()
	}
	lb.index.put(item, id)
	lb.live++
	lb.itemBytes += int64(len(item))
	return id, true
}

// maybeFree releases an id once nothing counts or references it.
func (lb *leaderboard) maybeFree(id uint32) {
	if lb.recs.refs(id) != 0 || lb.all.cnt(id) != 0 {
		return
	}
	item := lb.items.get(int(id))
	lb.index.del(item)
	lb.items.set(int(id), "")
	lb.free = append(lb.free, id)
	lb.frees++
	lb.live--
	lb.itemBytes -= int64(len(item))
}

// addAll adds delta to id's all-time count, in its record and canonically.
func (lb *leaderboard) addAll(id uint32, delta int64) {
	lb.all.add(id, delta)
	lb.allLog.add(id, delta)
}

func (lb *leaderboard) releaseRef(id uint32) {
	if lb.recs.addRefs(id, -1) == 0 {
		lb.maybeFree(id)
	}
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
	for i, w := range lb.wins {
		if lb.ap != nil {
			lb.ap.wins[i].expire(w.startIndex(c))
			continue
		}
		w.expire(c, lb.release)
	}
}

// applyDeltas counts one leaderboard's deltas of a part. Late decisions use
// the clock as it stood before the entry; the caller advances it afterwards.
func (lb *leaderboard) applyDeltas(d *pb.LeaderboardDeltas, entryMs int64, out *pb.Outcome) {
	if lb.ap != nil {
		lb.applyApprox(d, entryMs, out)
		return
	}
	var starts [16]int64
	st := lb.windowStarts(starts[:0], lb.entryClock(d, entryMs))
	var lateHere [16]uint64
	lh := zeros(lateHere[:0], len(lb.wins))
	// Cache the last bucket per window: consecutive deltas usually share it.
	var lastB [16]*bucket
	lastBk := zeros(lastB[:0], len(lb.wins))
	var idxs [16]int64
	ix, lastT := idxs[:0], int64(math.MinInt64)
	var pre []uint32
	if !lb.tune.unstaged {
		pre = lb.resolve(d.Items)
	}
	frees := lb.frees
	for i, item := range d.Items {
		ev := eventsAt(d, i)
		t := timeAt(d, i, entryMs)
		var id uint32
		ok := true
		// A pre-resolved id is stale once this loop freed any id (a
		// later intern may have reused it); absent items intern here.
		if pre != nil && pre[i] != noID && lb.frees == frees {
			id = pre[i]
		} else {
			id, ok = lb.intern(item)
		}
		if !ok {
			lb.rejectedMI += ev
			out.Rejected += ev
			continue
		}
		delta := d.Deltas[i]
		// Each window's bucket index of t, for fits and the adds; deltas
		// of a part mostly share their second, so divide only on a change.
		if t != lastT {
			ix = idxs[:0]
			for _, w := range lb.wins {
				ix = append(ix, floorDiv(t, w.bucketMs))
			}
			lastT = t
		}
		if !lb.fits(id, delta, ix, st) {
			lb.rejectedOF += ev
			out.Rejected += ev
			lb.maybeFree(id)
			continue
		}
		lb.addAll(id, delta)
		for wi, w := range lb.wins {
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
				lb.recs.addRefs(id, 1)
			}
		}
		lb.maybeFree(id)
		lb.accepted += ev
		out.Accepted += ev
		if t > lb.maxEventMs {
			lb.maxEventMs = t
		}
	}
	lb.noteLate(lh, out)
	if lb.allLog.due(lb.allCounts.len(), lb.tune.foldMin) {
		lb.allLog.fold(&lb.allCounts)
	}
}

// cachedEntries is the size below which resolve does not prefetch a newest
// bucket's entries: 128 KiB of deltas stay in a core's L2, and the stage
// costs a record read per delta (1.037x and 1.022x at 10M items skipping
// it below this size, in one process).
const cachedEntries = 16384

// resolve looks up every item of a part in one batch and prefetches the
// per-id state the apply loop will read. The loop's work per delta is a
// chain of loads and branches that depend on each other, so its cache misses
// do not overlap; here the loads of different deltas are independent and do.
// Prefetches rather than loads: a load that misses holds up retirement, so a
// few hundred of them stall the core instead of overlapping.
// Ids are noID for items not yet interned.
func (lb *leaderboard) resolve(items []string) []uint32 {
	hashes, ids := lb.index.lookupBatch(items, lb.scratchHash, lb.scratchIDs)
	if cap(ids) <= maxScratch {
		lb.scratchHash, lb.scratchIDs = hashes, ids
	}
	for _, id := range ids {
		if id == noID {
			continue
		}
		lb.recs.prefetch(id)
	}
	// Stage 6: each id's entry in every window's newest bucket, found
	// through the record prefetched above, so the loop's read-modify-write
	// of that entry hits the cache. Worth it at 10M items (DESIGN.md).
	for _, w := range lb.wins {
		nb := w.newest()
		if nb == nil {
			continue
		}
		m := nb.deltas.len()
		if m < cachedEntries {
			continue // the loop finds a small bucket's entries in cache anyway
		}
		for _, id := range ids {
			if id == noID {
				continue
			}
			if g, s := w.newestSlot(id); g == nb.gen && uint(s) < uint(m) {
				nb.deltas.prefetch(s)
			}
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
func (lb *leaderboard) fits(id uint32, delta int64, ix, starts []int64) bool {
	if delta > MaxDelta || delta < -MaxDelta {
		return false
	}
	in := func(c int64) bool { c += delta; return c <= MaxCount && c >= -MaxCount }
	if !in(lb.all.cnt(id)) {
		return false
	}
	for wi, w := range lb.wins {
		if ix[wi] >= starts[wi] && !in(w.cnt(id)) {
			return false
		}
	}
	return true
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
	for _, w := range lb.wins {
		if clock == noTime {
			dst = append(dst, math.MinInt64)
		} else {
			dst = append(dst, w.startIndex(clock))
		}
	}
	return dst
}

// noteLate adds an entry's late events per window to the counters and the outcome.
func (lb *leaderboard) noteLate(lh []uint64, out *pb.Outcome) {
	for wi, n := range lh {
		if n > 0 {
			lb.late[wi] += n
			out.Late = append(out.Late, &pb.LateCount{Leaderboard: lb.cfg.Name, Window: uint32(wi), Events: n})
		}
	}
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

// settle runs once per applied batch.
func (lb *leaderboard) settle() {
	if lb.ap != nil {
		return
	}
	lb.all.settle()
	for _, w := range lb.wins {
		w.settle()
	}
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
		lb.all.resize(int(c.KMax))
		for _, w := range lb.wins {
			w.resize(int(c.KMax))
		}
	}
	return nil
}
