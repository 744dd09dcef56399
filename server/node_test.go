package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// openTestNode opens a real single-node server in dir on a loopback Raft port.
func openTestNode(t *testing.T, dir string) *Node {
	t.Helper()
	n, err := openNodeWith(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func linearTop(t *testing.T, n *Node, lb string, w time.Duration, k int) []fsm.Item {
	t.Helper()
	a, err := n.TopK(context.Background(), TopKQuery{Leaderboard: lb, Window: w, K: k, Consistency: Linearizable})
	if err != nil {
		t.Fatal(err)
	}
	return a.Items
}

func TestNodeIngestQueryRestart(t *testing.T) {
	dir := t.TempDir()
	n := openTestNode(t, dir)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	var evs []Event
	want := map[string]int64{}
	for i := 0; i < 500; i++ {
		item := fmt.Sprintf("song-%d", i%37)
		c := int64(i%5 + 1)
		evs = append(evs, Event{Item: item, Count: c, TimeMs: now})
		want[item] += c
	}
	res, err := n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p1", Epoch: 1, Sequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 500 || res.Duplicate {
		t.Fatalf("ingest result %+v, want 500 accepted", res)
	}
	// A retry of the same sequence is not counted again and returns the original answer.
	res, err = n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p1", Epoch: 1, Sequence: 1})
	if err != nil || !res.Duplicate || res.Accepted != 500 {
		t.Fatalf("retry: %+v, %v; want duplicate with 500 accepted", res, err)
	}
	check := func(n *Node) {
		t.Helper()
		for _, w := range []time.Duration{0, time.Hour} {
			top := linearTop(t, n, "default", w, 37)
			if len(top) != 37 {
				t.Fatalf("window %v: %d items, want 37", w, len(top))
			}
			for i, it := range top {
				if it.Count != want[it.Item] {
					t.Errorf("window %v: %s = %d, want %d", w, it.Item, it.Count, want[it.Item])
				}
				if i > 0 && (top[i-1].Count < it.Count || (top[i-1].Count == it.Count && top[i-1].Item > it.Item)) {
					t.Errorf("window %v: order broken at %d: %v then %v", w, i, top[i-1], it)
				}
			}
		}
		c, err := n.Count(ctx, "default", "song-3", 0, Linearizable)
		if err != nil || c.Count != want["song-3"] {
			t.Errorf("count song-3 = %d, %v; want %d", c.Count, err, want["song-3"])
		}
	}
	check(n)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openTestNode(t, dir)
	defer n.Close()
	if err := n.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	check(n)
	// Deduplication survives the restart.
	res, err = n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p1", Epoch: 1, Sequence: 1})
	if err != nil || !res.Duplicate {
		t.Fatalf("retry after restart: %+v, %v; want duplicate", res, err)
	}
	check(n)
}

func TestNodeRejectsBadInput(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	now := time.Now().UnixMilli()
	good := Event{Item: "ok", TimeMs: now}
	tests := []struct {
		name  string
		req   IngestRequest
		want  error
		field string
	}{
		{"empty batch", IngestRequest{}, ErrInvalid, "events"},
		{"empty item", IngestRequest{Events: []Event{good, {Item: ""}}}, ErrInvalid, "events[1].item"},
		{"oversized item", IngestRequest{Events: []Event{{Item: string(make([]byte, 513))}}}, ErrInvalid, "events[0].item"},
		{"invalid utf-8", IngestRequest{Events: []Event{{Item: "a\xffb"}}}, ErrInvalid, "events[0].item"},
		{"future time", IngestRequest{Events: []Event{{Item: "x", TimeMs: now + time.Hour.Milliseconds()}}}, ErrInvalid, "events[0].time"},
		{"time before 1970", IngestRequest{Events: []Event{{Item: "x", TimeMs: -5}}}, ErrInvalid, "events[0].time"},
		{"unknown leaderboard", IngestRequest{Leaderboard: "nope", Events: []Event{good}}, fsm.ErrUnknownLeaderboard, ""},
		{"producer_id invalid utf-8", IngestRequest{Events: []Event{good}, ProducerID: "p\xff", Sequence: 1}, ErrInvalid, "producer_id"},
		{"producer_id too long", IngestRequest{Events: []Event{good}, ProducerID: string(make([]byte, MaxProducerIDBytes+1)), Sequence: 1}, ErrInvalid, "producer_id"},
		{"count beyond the limit", IngestRequest{Events: []Event{good, {Item: "big", Count: MaxEventCount + 1}}}, ErrInvalid, "events[1].count"},
		{"producer_id without sequence", IngestRequest{Events: []Event{good}, ProducerID: "p"}, ErrInvalid, "sequence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.Ingest(ctx, tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var fe *FieldError
			if tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field) {
				t.Fatalf("got %v, want a field error on %s", err, tt.field)
			}
		})
	}
	// Nothing of the refused batches was counted.
	if top := linearTop(t, n, "default", 0, 10); len(top) != 0 {
		t.Fatalf("refused batches left counts: %v", top)
	}
	for _, k := range []int{-1, 1001} { // 0 means the default, min(100, k_max)
		if _, err := n.TopK(ctx, TopKQuery{K: k}); !errors.Is(err, ErrInvalid) {
			t.Errorf("k=%d: got %v, want ErrInvalid", k, err)
		}
	}
	if _, err := n.TopK(ctx, TopKQuery{K: 1, Window: 2 * time.Hour}); !errors.Is(err, fsm.ErrUnknownWindow) {
		t.Errorf("unknown window: got %v", err)
	}
}

func TestNodeLeaderboardLifecycle(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	cfg := &pb.LeaderboardConfig{Name: "plays", KMax: 5, Clock: pb.Clock_CLOCK_EVENT,
		Windows: []*pb.WindowSpec{{DurationMs: time.Hour.Milliseconds()}}}
	created, err := n.CreateLeaderboard(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if created.Incarnation == 0 || created.KMax != 5 {
		t.Fatalf("created %+v", created)
	}
	if _, err := n.CreateLeaderboard(ctx, cfg); !errors.Is(err, ErrLeaderboardExists) {
		t.Fatalf("second create: %v", err)
	}
	base := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	res, err := n.Ingest(ctx, IngestRequest{Leaderboard: "plays", Events: []Event{
		{Item: "a", TimeMs: base}, {Item: "b", TimeMs: base + 2*time.Hour.Milliseconds()}, {Item: "a", TimeMs: base}}})
	if err != nil || res.Accepted != 3 {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	if top := linearTop(t, n, "plays", 0, 5); len(top) != 2 || top[0] != (fsm.Item{Item: "a", Count: 2, Lower: 2, Upper: 2}) {
		t.Fatalf("all: %v", top)
	}
	// The event clock is at base+2h on b's partition; a's partition catches up through ticks.
	deadline := time.Now().Add(10 * time.Second)
	for {
		top := linearTop(t, n, "plays", time.Hour, 5)
		if len(top) == 1 && top[0].Item == "b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("1h window never slid past a: %v", top)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := n.DropLeaderboard(ctx, "plays"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.TopK(ctx, TopKQuery{Leaderboard: "plays", K: 1}); !errors.Is(err, fsm.ErrUnknownLeaderboard) {
		t.Fatalf("after drop: %v", err)
	}
	if err := n.DropLeaderboard(ctx, "default"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("drop default: %v", err)
	}
	// A new spacesaving board takes the current filter ratio into its config
	// (the log), not the legacy meaning of an absent field.
	ss, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "ss", Mode: pb.Mode_MODE_SPACESAVING})
	if err != nil || ss.FilterCells != sketch.FilterCellsPerCounter {
		t.Fatalf("spacesaving create: filter_cells %d, %v", ss.GetFilterCells(), err)
	}
}

func TestNodeLimitsAnswerOverloaded(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	if _, err := n.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: "small", MaxItems: 4}); err != nil {
		t.Fatal(err)
	}
	var evs []Event
	for i := 0; i < 4; i++ {
		evs = append(evs, Event{Item: fmt.Sprintf("i%d", i)})
	}
	if res, err := n.Ingest(ctx, IngestRequest{Leaderboard: "small", Events: evs}); err != nil || res.Accepted != 4 {
		t.Fatalf("first 4 items: %+v, %v", res, err)
	}
	// Known items still count; a new one is refused before proposal, naming the limit.
	if _, err := n.Ingest(ctx, IngestRequest{Leaderboard: "small", Events: evs[:1]}); err != nil {
		t.Fatalf("known item: %v", err)
	}
	_, err := n.Ingest(ctx, IngestRequest{Leaderboard: "small", Events: []Event{{Item: "new"}}})
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "max_items") {
		t.Fatalf("new item at max_items: %v, want ErrOverloaded naming max_items", err)
	}
	if c, _ := n.Count(ctx, "small", "new", 0, Linearizable); c.Count != 0 {
		t.Fatalf("refused item counted: %d", c.Count)
	}
	// The memory high-water mark refuses everything, naming itself.
	n.mem.limit = 1
	n.mem.sample()
	_, err = n.Ingest(ctx, IngestRequest{Events: evs})
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "memory high-water mark") {
		t.Fatalf("over the memory mark: %v, want ErrOverloaded naming the memory high-water mark", err)
	}
}

func TestNodeCountRank(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	if _, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "b", Count: 5}, {Item: "a", Count: 9}, {Item: "c", Count: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		item string
		want int
	}{{"a", 1}, {"b", 2}, {"c", 3}, {"zzz", 0}} {
		// The cache is filled on first use from the leaders, after the ingest above was acknowledged.
		got, err := n.Count(ctx, "default", tt.item, 0, Linearizable)
		if err != nil || got.Rank != tt.want {
			t.Errorf("rank of %s = %d, %v; want %d", tt.item, got.Rank, err, tt.want)
		}
	}
}

// TestCombinerIsolatesUnencodablePart: a part that cannot be encoded (here
// a producer id that is not UTF-8, which validation refuses before this
// point) fails only its own caller; its neighbour in the same entry
// commits and is counted.
func TestCombinerIsolatesUnencodablePart(t *testing.T) {
	n, cfg := openDefaultBoard(t)
	defer n.Close()
	now := time.Now().UnixMilli()
	partFor := func(producer string) (int, *pb.ProducerPart) {
		parts, _, err := n.coord.split(cfg, IngestRequest{Events: []Event{{Item: "iso", TimeMs: now}}, ProducerID: "p", Sequence: 1})
		if err != nil {
			t.Fatal(err)
		}
		for p, part := range parts {
			if part != nil {
				part.ProducerId = producer
				return p, part
			}
		}
		t.Fatal("no part")
		return 0, nil
	}
	p, good := partFor("good")
	_, bad := partFor("bad\xff")
	batch := []*pendingPart{
		{part: bad, size: 1, done: make(chan partResult, 1)},
		{part: good, size: 1, done: make(chan partResult, 1)},
	}
	n.parts[p].comb.propose(batch)
	if r := <-batch[0].done; r.err == nil {
		t.Fatalf("unencodable part: got %+v, want an error", r.out)
	}
	if r := <-batch[1].done; r.err != nil || r.out.Accepted != 1 {
		t.Fatalf("good part: %+v, %v", r.out, r.err)
	}
	if top := linearTop(t, n, "default", 0, 10); len(top) != 1 || top[0].Count != 1 {
		t.Fatalf("counts: %v", top)
	}
}

// shiftClock is the wall clock plus an adjustable offset.
type shiftClock struct{ off atomic.Int64 }

func (c *shiftClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// TestCachedAnswerMaxAge: a cached answer the background refresh has not
// renewed for ten refresh intervals is not served; the read gathers anew.
func TestCachedAnswerMaxAge(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := &shiftClock{}
	ctx := context.Background()
	n, err := Open(ctx, Config{NodeID: "n1", DataDir: t.TempDir(), RaftAddr: ln.Addr().String(), RaftListener: ln,
		Partitions: 2, Raft: testPolicy(), Logger: quietLog(), Clock: clk, CacheRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ingest := func(item string) {
		if _, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: item}}}); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() []fsm.Item {
		a, err := n.TopK(ctx, TopKQuery{K: 10, Consistency: Cached})
		if err != nil {
			t.Fatal(err)
		}
		return a.Items
	}
	ingest("a")
	if got := cached(); len(got) != 1 {
		t.Fatalf("first cached read: %v", got)
	}
	ingest("b")
	if got := cached(); len(got) != 1 {
		t.Fatalf("within the refresh interval the cached answer stands: %v", got)
	}
	clk.off.Store(int64(10*time.Hour + time.Minute))
	if got := cached(); len(got) != 2 {
		t.Fatalf("after ten missed refreshes: %v, want a fresh answer with both items", got)
	}
}

// TestPendingEventsBound: with the node's in-progress events at the limit,
// a request is refused before anything is queued, naming the limit; once
// they drain it is accepted, and the count returns to zero.
func TestPendingEventsBound(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	limit := int64(n.cfg.Ingest.MaxPendingEvents)
	n.coord.pending.Store(limit - 1) // other requests in progress
	_, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "a"}, {Item: "b"}}})
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("at the limit: %v, want ErrOverloaded naming the limit", err)
	}
	if got := n.coord.pending.Load(); got != limit-1 {
		t.Fatalf("a refused request left %d pending, want %d", got, limit-1)
	}
	n.coord.pending.Store(0)
	if res, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "a"}, {Item: "b"}}}); err != nil || res.Accepted != 2 {
		t.Fatalf("after draining: %+v, %v", res, err)
	}
	if got := n.coord.pending.Load(); got != 0 {
		t.Fatalf("%d events still pending after the request returned", got)
	}
}

// TestWatermarksFollowIncarnations: an ingest racing a re-create cannot
// replace the new incarnation's watermark with the old one's, and a
// leaderboard no longer defined at its incarnation is pruned.
func TestWatermarksFollowIncarnations(t *testing.T) {
	w := newWatermarks()
	w.observe("x", 2, 100)
	w.observe("x", 1, 500) // stamped before the re-create
	w.observe("x", 2, 50)
	if l := w.list(); len(l) != 1 || l[0].Incarnation != 2 || l[0].MaxEventTimeMs != 100 {
		t.Fatalf("watermarks %v", l)
	}
	w.observe("y", 1, 7)
	w.prune(func(lb string, inc uint64) bool { return lb == "x" && inc == 2 })
	if l := w.list(); len(l) != 1 || l[0].Leaderboard != "x" {
		t.Fatalf("after pruning y: %v", l)
	}
}

// TestSplitAggregates: split sums events per (item, second) into the part
// of the item's partition, in first-seen order, whether the batch shares
// one second or not.
func TestSplitAggregates(t *testing.T) {
	n, cfg := openDefaultBoard(t)
	defer n.Close()
	now := time.Now().UnixMilli()
	r := rand.New(rand.NewPCG(3, 4))
	// 20,000 events: a table too large for the pool.
	for _, tc := range []struct {
		mixed  bool
		events int
	}{{false, 3000}, {true, 3000}, {true, 20000}} {
		mixed := tc.mixed
		var evs []Event
		for range tc.events {
			e := Event{Item: fmt.Sprintf("i%d", r.IntN(tc.events/15)), Count: int64(r.IntN(5) - 1)}
			if mixed {
				e.TimeMs = now - int64(r.IntN(3))*1000
			} else {
				e.TimeMs = now
			}
			evs = append(evs, e)
		}
		parts, _, err := n.coord.split(cfg, IngestRequest{Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		type key struct {
			item string
			sec  int64
		}
		type row struct {
			key
			delta  int64
			events uint32
		}
		want := make([][]row, len(parts))
		at := map[key]int{}
		for _, e := range evs {
			c := e.Count
			if c == 0 {
				c = 1
			}
			k := key{e.Item, e.TimeMs / 1000}
			p := PartitionOf(cfg.Name, e.Item, len(parts))
			if j, ok := at[k]; ok {
				want[p][j].delta += c
				want[p][j].events++
				continue
			}
			at[k] = len(want[p])
			want[p] = append(want[p], row{k, c, 1})
		}
		for p, part := range parts {
			var got []row
			if part != nil {
				d := part.Boards[0]
				for i := range d.Items {
					got = append(got, row{key{d.Items[i], d.EventTimesS[i]}, d.Deltas[i], d.Events[i]})
				}
			}
			if !slices.Equal(got, want[p]) {
				t.Fatalf("mixed=%v partition %d:\n got %v\nwant %v", mixed, p, got, want[p])
			}
		}
	}
}

// openDefaultBoard opens a test node and returns it with the default leaderboard's config.
func openDefaultBoard(t *testing.T) (*Node, *pb.LeaderboardConfig) {
	t.Helper()
	n := openTestNode(t, t.TempDir())
	cfg, err := n.leaderboard("default")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	return n, cfg
}

// TestAggTableRows fills small tables, where probe sequences cross, with the
// same items at different seconds and different items at the same second.
func TestAggTableRows(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		n := 1 + r.IntN(40)
		tab := getAggTable(n)
		var aggs []agg
		want := map[[2]string]int{}
		for range n {
			item, sec := fmt.Sprintf("i%d", r.IntN(4)), int64(r.IntN(4))
			k := [2]string{item, fmt.Sprint(sec)}
			j := tab.row(aggs, item, sec)
			w, seen := want[k]
			switch {
			case seen && j != w:
				t.Fatalf("(%s, %d): row %d, want %d", item, sec, j, w)
			case !seen && j != -1:
				t.Fatalf("(%s, %d) is new: row %d, want -1", item, sec, j)
			case !seen:
				want[k] = len(aggs)
				aggs = append(aggs, agg{item: item, sec: sec})
			}
		}
		putAggTable(tab, aggs)
	}
}

// Right after a start, partitions that have applied no entry yet have log
// time 0; an answer takes its window from the partitions that have seen time,
// not one ending at the epoch.
func TestFreshNodeWindowNotAtEpoch(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx := context.Background()
	if _, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "a"}}}); err != nil {
		t.Fatal(err)
	}
	a, err := n.TopK(ctx, TopKQuery{Window: time.Hour, K: 10, Consistency: Leader})
	if err != nil {
		t.Fatal(err)
	}
	if a.WindowEndMs <= 0 || a.WindowStartMs <= 0 {
		t.Fatalf("window [%d, %d], want one ending at this node's log time", a.WindowStartMs, a.WindowEndMs)
	}
}
