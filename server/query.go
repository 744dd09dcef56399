package server

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Consistency is the read level of a query.
type Consistency int

const (
	// Cached answers come from the node's result cache, refreshed in the background.
	Cached Consistency = iota + 1
	// Leader reads each partition at its leader.
	Leader
	// Linearizable reads each partition at its leader after a read-index check.
	Linearizable
)

func (c Consistency) String() string {
	switch c {
	case Cached:
		return "cached"
	case Leader:
		return "leader"
	case Linearizable:
		return "linearizable"
	}
	return "unknown"
}

// ParseConsistency maps "cached", "leader", "linearizable" ("" = def).
func ParseConsistency(s string, def Consistency) (Consistency, error) {
	switch s {
	case "":
		return def, nil
	case "cached":
		return Cached, nil
	case "leader":
		return Leader, nil
	case "linearizable":
		return Linearizable, nil
	}
	return 0, invalid("consistency", "%q is not one of cached, leader, linearizable", s)
}

// DefaultK is the k of a query that names none (capped at the leaderboard's K_max).
const DefaultK = 100

// shortDuration writes whole days as "1d", else the shortest whole unit.
func shortDuration(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return d.String()
}

// TopKQuery asks for the k most frequent items of a window (0 = all time).
type TopKQuery struct {
	Leaderboard string
	Window      time.Duration
	K           int
	Consistency Consistency
	// AllowPartial answers from the partitions that answer, naming the
	// others in TopKAnswer.Missing, instead of failing (leader and
	// linearizable reads; cached answers are always whole).
	AllowPartial bool
}

// TopKAnswer is a merged answer over all partitions.
type TopKAnswer struct {
	Leaderboard   string
	Incarnation   uint64
	Window        time.Duration
	WindowStartMs int64
	WindowEndMs   int64
	Items         []fsm.Item
	Consistency   Consistency
	AsOf          time.Time // when the partitions were read
	Applied       []uint64  // each partition's applied index as read
	// Approximate answers (modes cms and spacesaving) carry each item's
	// bounds in fsm.Item. Rest bounds the count of every item not listed;
	// Guaranteed says every listed item is provably in the top k; MaxError
	// is the widest Upper-Lower among the items. Exact answers: Guaranteed, 0, 0.
	Approximate bool
	Guaranteed  bool
	MaxError    int64
	Rest        int64
	// Missing lists the partitions left out of a partial answer
	// (TopKQuery.AllowPartial): its items come from the others only.
	Missing []int
}

// truncate keeps the best k items and recomputes what depends on k.
func (a *TopKAnswer) truncate(k int) {
	if len(a.Items) > k {
		a.Rest = max(a.Rest, a.Items[k].Upper)
		a.Items = a.Items[:k]
	}
	if !a.Approximate {
		a.Guaranteed, a.MaxError, a.Rest = true, 0, 0
		return
	}
	r := toResult(a.Items, a.Rest)
	a.Guaranteed, a.MaxError = r.Guaranteed(k), int64(r.MaxError())
}

func toResult(items []fsm.Item, rest int64) sketch.Result {
	r := sketch.Result{Rest: uint64(rest), Items: make([]sketch.Counter, len(items))}
	for i, it := range items {
		r.Items[i] = sketch.Counter{Item: it.Item, Count: uint64(it.Upper), Err: uint64(it.Upper - it.Lower)}
	}
	return r
}

func fromResult(cs []sketch.Counter) []fsm.Item {
	out := make([]fsm.Item, len(cs))
	for i, c := range cs {
		out[i] = fsm.ItemOf(c)
	}
	return out
}

// CountAnswer is one item's count.
type CountAnswer struct {
	Item          string
	Count         int64
	Lower         int64 // == Count == Upper in exact mode
	Upper         int64
	Approximate   bool
	Rank          int // 1-based rank in the cached top K_max of the window; 0 when outside it
	WindowStartMs int64
	WindowEndMs   int64
	Consistency   Consistency
}

// checkQuery validates a query; k is checked unless it is nil (Count).
func (co *coordinator) checkQuery(lb string, window time.Duration, k *int) (*pb.LeaderboardConfig, error) {
	cfg, err := co.boards(lb)
	if err != nil {
		return nil, err
	}
	if window != 0 {
		found := false
		for _, w := range cfg.Windows {
			if w.DurationMs == window.Milliseconds() {
				found = true
			}
		}
		if !found {
			names := []string{"all"}
			for _, w := range cfg.Windows {
				names = append(names, shortDuration(time.Duration(w.DurationMs)*time.Millisecond))
			}
			return nil, fmt.Errorf("%w: time_window %s is not configured for leaderboard %q (it has %s)",
				fsm.ErrUnknownWindow, shortDuration(window), lb, strings.Join(names, ", "))
		}
	}
	if k != nil && (*k <= 0 || *k > int(cfg.KMax)) {
		return nil, invalid("k", "%d is outside 1..%d (the leaderboard's k_max)", *k, cfg.KMax)
	}
	return cfg, nil
}

// TopK answers a top-k query at the requested consistency.
func (co *coordinator) TopK(ctx context.Context, q TopKQuery) (TopKAnswer, error) {
	if q.Leaderboard == "" {
		q.Leaderboard = "default"
	}
	if q.Consistency == 0 {
		q.Consistency = Cached
	}
	if q.K == 0 {
		if cfg, err := co.boards(q.Leaderboard); err == nil {
			q.K = min(DefaultK, int(cfg.KMax))
		}
	}
	cfg, err := co.checkQuery(q.Leaderboard, q.Window, &q.K)
	if err != nil {
		return TopKAnswer{}, err
	}
	start := time.Now()
	defer func() {
		co.metrics.queryLatency.WithLabelValues(q.Consistency.String()).Observe(time.Since(start).Seconds())
	}()
	if q.Consistency == Cached {
		a, err := co.cache.get(ctx, cfg, q.Window)
		if err != nil {
			return TopKAnswer{}, err
		}
		a.truncate(q.K)
		return a, nil
	}
	return co.gather(ctx, cfg, q.Window, q.K, q.Consistency, q.AllowPartial)
}

// scatter asks every partition for its top k at once and waits for all:
// the slowest replica, not the sum, bounds the read. The last partition is
// asked on this goroutine.
func (co *coordinator) scatter(ctx context.Context, lb string, window time.Duration, k int, c Consistency) ([]fsm.TopKResult, []error) {
	n := len(co.replicas)
	results, errs := make([]fsm.TopKResult, n), make([]error, n)
	var wg sync.WaitGroup
	for i, rep := range co.replicas[:n-1] {
		wg.Go(func() { results[i], errs[i] = rep.TopK(ctx, lb, window, k, c) })
	}
	results[n-1], errs[n-1] = co.replicas[n-1].TopK(ctx, lb, window, k, c)
	wg.Wait()
	return results, errs
}

// gather scatters to every partition and merges the per-partition lists.
// Partitions hold disjoint items, so the merge of their top-k lists is
// exact, and in the approximate modes each item keeps its partition's
// bounds; what is not listed is bounded by the largest partition Rest and
// the best item merged away (sketch.MergeDisjoint's rule).
func (co *coordinator) gather(ctx context.Context, cfg *pb.LeaderboardConfig, window time.Duration, k int, c Consistency, partial bool) (TopKAnswer, error) {
	if err := co.ready(ctx); err != nil {
		return TopKAnswer{}, err
	}
	lists := make([][]fsm.Item, len(co.replicas))
	parts := make([]sketch.Result, len(co.replicas))
	a := TopKAnswer{Leaderboard: cfg.Name, Incarnation: cfg.Incarnation, Window: window, Consistency: c, AsOf: co.clock.Now(),
		Approximate: cfg.Mode != pb.Mode_MODE_EXACT}
	first := true
	results, errs := co.scatter(ctx, cfg.Name, window, k, c)
	for i, r := range results {
		if errs[i] != nil {
			// Partial answers leave out unavailable partitions, never ones
			// that refuse the query itself.
			if !partial || errors.Is(errs[i], ErrInvalid) || len(a.Missing) == len(results)-1 {
				return TopKAnswer{}, fmt.Errorf("partition %d: %w", i, errs[i])
			}
			a.Missing = append(a.Missing, i)
			continue
		}
		if err := sameIncarnation(i, cfg, r.Incarnation); err != nil {
			return TopKAnswer{}, err
		}
		lists[i] = r.Items
		a.Applied = append(a.Applied, r.AppliedIndex)
		if a.Approximate {
			parts[i] = toResult(r.Items, r.Rest)
		}
		// The oldest clock states the answer's window; a partition that has
		// seen no time yet (end 0) holds nothing timed and states none.
		if first || (r.WindowEndMs > 0 && (r.WindowEndMs < a.WindowEndMs || a.WindowEndMs <= 0)) {
			a.WindowStartMs, a.WindowEndMs = r.WindowStartMs, r.WindowEndMs
			first = false
		}
	}
	if !a.Approximate {
		a.Items = mergeTop(lists, k)
		a.truncate(k)
		return a, nil
	}
	m := sketch.MergeDisjoint(k, parts...)
	a.Items, a.Rest = fromResult(m.Items), int64(min(m.Rest, math.MaxInt64))
	a.truncate(k)
	return a, nil
}

// sameIncarnation refuses a partition's answer for another incarnation
// than the definition's: a drop or re-create has not reached it yet, and
// incarnations are never mixed or cached (retryable: ErrNotReady).
func sameIncarnation(partition int, cfg *pb.LeaderboardConfig, got uint64) error {
	if got == cfg.Incarnation {
		return nil
	}
	return fmt.Errorf("partition %d: %w: leaderboard %q at incarnation %d, the definition says %d",
		partition, ErrNotReady, cfg.Name, got, cfg.Incarnation)
}

// Count answers one item's count in a window.
func (co *coordinator) Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (CountAnswer, error) {
	if lb == "" {
		lb = "default"
	}
	if c == 0 {
		c = Leader
	}
	if msg := checkItem(item, co.policy.MaxItemBytes); msg != "" {
		return CountAnswer{}, invalid("item", "%s", msg)
	}
	cfg, err := co.checkQuery(lb, window, nil)
	if err != nil {
		return CountAnswer{}, err
	}
	if err := co.ready(ctx); err != nil {
		return CountAnswer{}, err
	}
	part := PartitionOf(cfg.Name, item, len(co.replicas))
	r, err := co.replicas[part].Count(ctx, cfg.Name, item, window, c)
	if err != nil {
		return CountAnswer{}, err
	}
	if err := sameIncarnation(part, cfg, r.Incarnation); err != nil {
		return CountAnswer{}, err
	}
	a := CountAnswer{Item: item, Count: r.Count, Lower: r.Lower, Upper: r.Upper, Approximate: r.Approximate, WindowStartMs: r.WindowStartMs, WindowEndMs: r.WindowEndMs, Consistency: c}
	if top, err := co.cache.get(ctx, cfg, window); err == nil {
		for i, it := range top.Items {
			if it.Item == item {
				a.Rank = i + 1
				break
			}
		}
	}
	return a, nil
}

// mergeTop merges lists sorted by (count desc, item asc) into the top k.
func mergeTop(lists [][]fsm.Item, k int) []fsm.Item {
	h := make(mergeHeap, 0, len(lists))
	for _, l := range lists {
		if len(l) > 0 {
			h = append(h, l)
		}
	}
	heap.Init(&h)
	out := make([]fsm.Item, 0, k)
	for len(out) < k && h.Len() > 0 {
		l := h[0]
		out = append(out, l[0])
		if len(l) == 1 {
			heap.Pop(&h)
		} else {
			h[0] = l[1:]
			heap.Fix(&h, 0)
		}
	}
	return out
}

type mergeHeap [][]fsm.Item

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	a, b := h[i][0], h[j][0]
	if a.Count != b.Count {
		return a.Count > b.Count
	}
	return a.Item < b.Item
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.([]fsm.Item)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ---- result cache ----

type cacheKey struct {
	lb     string
	inc    uint64
	window time.Duration
}

type cacheEntry struct {
	ans      TopKAnswer
	lastUsed time.Time
}

// resultCache keeps the top K_max of recently asked windows, refreshed in
// the background so cached reads cost a map lookup and a slice.
type resultCache struct {
	cacheDeps
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
}

// cacheDeps are what the cache reads through.
type cacheDeps struct {
	every  time.Duration
	clock  Clock
	boards func(name string) (*pb.LeaderboardConfig, error)
	gather func(ctx context.Context, cfg *pb.LeaderboardConfig, window time.Duration, k int, c Consistency) (TopKAnswer, error)
	// refreshed is told of every answer a refresh put in the cache.
	refreshed func(a TopKAnswer)
}

func newResultCache(d cacheDeps) *resultCache {
	return &resultCache{cacheDeps: d, entries: map[cacheKey]*cacheEntry{}}
}

func (rc *resultCache) get(ctx context.Context, cfg *pb.LeaderboardConfig, window time.Duration) (TopKAnswer, error) {
	key := cacheKey{cfg.Name, cfg.Incarnation, window}
	now := rc.clock.Now()
	rc.mu.Lock()
	e := rc.entries[key]
	// An answer the refresh failed to renew for ten rounds is not served:
	// a cached read is stale by about one refresh, never unboundedly.
	if e != nil && now.Sub(e.ans.AsOf) <= 10*rc.every {
		e.lastUsed = now
		a := e.ans
		rc.mu.Unlock()
		return a, nil
	}
	rc.mu.Unlock()
	a, err := rc.gather(ctx, cfg, window, int(cfg.KMax), Leader)
	if err != nil {
		return TopKAnswer{}, err
	}
	a.Consistency = Cached
	rc.mu.Lock()
	rc.entries[key] = &cacheEntry{ans: a, lastUsed: now}
	rc.mu.Unlock()
	return a, nil
}

// age is how old the oldest cached answer is.
func (rc *resultCache) age() time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	now := rc.clock.Now()
	var oldest time.Duration
	for _, e := range rc.entries {
		oldest = max(oldest, now.Sub(e.ans.AsOf))
	}
	return oldest
}

func (rc *resultCache) refresh() {
	now := rc.clock.Now()
	rc.mu.Lock()
	keys := make([]cacheKey, 0, len(rc.entries))
	for k, e := range rc.entries {
		if now.Sub(e.lastUsed) > time.Minute {
			delete(rc.entries, k)
			continue
		}
		keys = append(keys, k)
	}
	rc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), rc.every)
	defer cancel()
	for _, k := range keys {
		cfg, err := rc.boards(k.lb)
		if err != nil || cfg.Incarnation != k.inc {
			rc.mu.Lock()
			delete(rc.entries, k)
			rc.mu.Unlock()
			continue
		}
		a, err := rc.gather(ctx, cfg, k.window, int(cfg.KMax), Leader)
		if err != nil {
			continue
		}
		a.Consistency = Cached
		rc.mu.Lock()
		e := rc.entries[k]
		if e != nil {
			e.ans = a
		}
		rc.mu.Unlock()
		if e != nil && rc.refreshed != nil {
			rc.refreshed(a)
		}
	}
}
