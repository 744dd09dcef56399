package fsm

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"

	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// The approximate modes are checked against an exact leaderboard fed the
// same deltas in the same entries: the exact board (itself checked against
// the brute-force model in model_test.go) is the truth for every window,
// including late events and expiry. Every answer's bounds must hold it.

type apPair struct {
	t     *rapid.T
	f     *FSM
	index uint64
	cfg   *pb.LeaderboardConfig
	alpha []string
}

func (p *apPair) apply(cmds ...[]byte) {
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		p.index++
		logs[i] = &raft.Log{Index: p.index, Term: 1, Type: raft.LogCommand, Data: c}
	}
	for i, r := range p.f.ApplyBatch(logs) {
		if err, ok := r.(error); ok {
			p.t.Fatalf("command %d: %v", i, err)
		}
	}
}

func apWindows(cfg *pb.LeaderboardConfig) []int64 {
	ws := []int64{0}
	for _, w := range cfg.Windows {
		ws = append(ws, w.DurationMs)
	}
	return ws
}

// check compares every window's approximate answers with the exact board.
func (p *apPair) check() {
	for _, wms := range apWindows(p.cfg) {
		win := msDuration(wms)
		truth := map[string]int64{}
		for _, it := range p.alpha {
			c, err := p.f.Count("ex", it, win)
			if err != nil {
				p.t.Fatal(err)
			}
			if c.Count > 0 {
				truth[it] = c.Count
			}
			a, err := p.f.Count("ap", it, win)
			if err != nil {
				p.t.Fatal(err)
			}
			if !a.Approximate || a.Lower > c.Count || c.Count > a.Upper || a.Count != a.Upper {
				p.t.Fatalf("window %v item %q: true %d outside count bounds [%d, %d] (estimate %d)", win, it, c.Count, a.Lower, a.Upper, a.Count)
			}
		}
		for _, k := range []int{1, min(3, int(p.cfg.KMax)), int(p.cfg.KMax)} {
			r, err := p.f.TopK("ap", win, k)
			if err != nil {
				p.t.Fatal(err)
			}
			if !r.Approximate || len(r.Items) > k {
				p.t.Fatalf("window %v k=%d: approximate=%v, %d items", win, k, r.Approximate, len(r.Items))
			}
			listed := map[string]bool{}
			res := sketch.Result{Rest: uint64(r.Rest)}
			for i, it := range r.Items {
				tc := truth[it.Item]
				if it.Lower > tc || tc > it.Upper || it.Count != it.Upper {
					p.t.Fatalf("window %v k=%d: %q true %d outside [%d, %d]", win, k, it.Item, tc, it.Lower, it.Upper)
				}
				if i > 0 && rankAboveEst(uint64(it.Count), it.Item, uint64(r.Items[i-1].Count), r.Items[i-1].Item) {
					p.t.Fatalf("window %v k=%d: items out of order: %+v", win, k, r.Items)
				}
				listed[it.Item] = true
				res.Items = append(res.Items, sketch.Counter{Item: it.Item, Count: uint64(it.Upper), Err: uint64(it.Upper - it.Lower)})
			}
			minListed := int64(-1)
			for _, it := range r.Items {
				if minListed < 0 || truth[it.Item] < minListed {
					minListed = truth[it.Item]
				}
			}
			for it, tc := range truth {
				if listed[it] {
					continue
				}
				if tc > r.Rest {
					p.t.Fatalf("window %v k=%d: unlisted %q counts %d > rest %d", win, k, it, tc, r.Rest)
				}
				if res.Guaranteed(k) && tc > minListed {
					p.t.Fatalf("window %v k=%d: guaranteed, but unlisted %q (%d) beats a listed item (%d)", win, k, it, tc, minListed)
				}
			}
		}
	}
}

func testApproxMode(t *rapid.T, mode pb.Mode) {
	clock := pb.Clock_CLOCK_WALL
	if rapid.Bool().Draw(t, "eventClock") {
		clock = pb.Clock_CLOCK_EVENT
	}
	windows := []*pb.WindowSpec{{DurationMs: 10_000, BucketMs: 1000}, {DurationMs: 60_000, BucketMs: 10_000}}
	kmax := uint32(rapid.IntRange(1, 6).Draw(t, "kmax"))
	ap := &pb.LeaderboardConfig{Name: "ap", Incarnation: 1, Version: 1, Mode: mode, Clock: clock, KMax: kmax, Windows: windows,
		AllowedLatenessMs: int64(rapid.IntRange(0, 3).Draw(t, "lateness")) * 1000}
	switch mode {
	case pb.Mode_MODE_SPACESAVING:
		ap.Capacity = uint64(kmax) + uint64(rapid.IntRange(0, 6).Draw(t, "extra"))
		ap.FilterCells = rapid.SampledFrom([]uint32{0, 1, 3, 16}).Draw(t, "filterCells")
	case pb.Mode_MODE_CMS:
		// Tiny sketches so collisions happen.
		ap.Epsilon = rapid.SampledFrom([]float64{0.9, 0.5, 0.2, 0.05}).Draw(t, "epsilon")
		ap.Delta = rapid.SampledFrom([]float64{0.5, 0.1, 0.01}).Draw(t, "delta")
	}
	exact := &pb.LeaderboardConfig{Name: "ex", Incarnation: 1, Version: 1, Clock: clock, KMax: 100, Windows: slices.Clone(windows),
		AllowedLatenessMs: ap.AllowedLatenessMs}
	nItems := rapid.IntRange(2, 20).Draw(t, "items")
	p := &apPair{t: t, f: New(Options{}), cfg: ap}
	for i := range nItems {
		p.alpha = append(p.alpha, fmt.Sprintf("i%02d", i))
	}
	p.apply(mustEncode(EncodeConfig(exact)), mustEncode(EncodeConfig(ap)))
	p.cfg = p.f.Leaderboards()[0] // normalized "ap"
	if mode == pb.Mode_MODE_SPACESAVING {
		s := p.f.st.boards["ap"].counts.(*approxBoard).all.(*ssAll).s
		if want := int(p.cfg.Capacity) * int(p.cfg.FilterCells); s.Cells() != want || p.cfg.FilterCells == 0 {
			t.Fatalf("summary has %d filter cells, config says %d x %d", s.Cells(), p.cfg.Capacity, p.cfg.FilterCells)
		}
	}
	now := int64(1_700_000_000_000)
	var shadow *FSM // a replica restored from a snapshot, fed the same log from then on
	var shadowLogs []*raft.Log
	steps := rapid.IntRange(1, 40).Draw(t, "steps")
	for s := range steps {
		var cmds [][]byte
		for range rapid.IntRange(1, 3).Draw(t, "entries") {
			now += int64(rapid.IntRange(0, 8000).Draw(t, "advance"))
			if rapid.IntRange(0, 9).Draw(t, "kind") == 0 {
				cmds = append(cmds, mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: now})))
				continue
			}
			var evs []ev
			for range rapid.IntRange(1, 12).Draw(t, "deltas") {
				it := p.alpha[rapid.IntRange(0, nItems-1).Draw(t, "item")]
				// Skewed weights make real heavy hitters.
				d := int64(rapid.IntRange(0, 4).Draw(t, "w"))
				if it < p.alpha[min(2, nItems-1)] {
					d += int64(rapid.IntRange(0, 9).Draw(t, "heavy"))
				}
				if rapid.IntRange(0, 29).Draw(t, "huge") == 0 {
					// Past 2^32: filter cells widen to 64 bits.
					d += 1<<31 + int64(rapid.IntRange(0, 1<<20).Draw(t, "hugeW"))
				}
				var ts int64
				if rapid.Bool().Draw(t, "timed") {
					ts = now/1000 - int64(rapid.IntRange(-2, 70).Draw(t, "age"))
				}
				evs = append(evs, ev{it, d, ts})
			}
			cmds = append(cmds, mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: now, Parts: []*pb.ProducerPart{
				part("", 0, 0, deltas("ex", 1, evs...), deltas("ap", 1, evs...)),
			}})))
		}
		first := p.index + 1
		p.apply(cmds...)
		if shadow != nil {
			for i, c := range cmds {
				shadowLogs = append(shadowLogs, &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: c})
			}
			shadow.ApplyBatch(shadowLogs)
			shadowLogs = shadowLogs[:0]
		}
		p.check()
		if shadow == nil && rapid.IntRange(0, 5).Draw(t, "snap") == 0 {
			shadow = New(Options{})
			if err := shadow.Restore(io.NopCloser(bytes.NewReader(apSnapshot(t, p.f)))); err != nil {
				t.Fatalf("step %d: restore: %v", s, err)
			}
		}
	}
	if shadow != nil {
		got, want := apSnapshot(t, shadow), apSnapshot(t, p.f)
		if !bytes.Equal(got, want) {
			t.Fatalf("a replica restored mid-stream diverged: snapshots of %d and %d bytes differ", len(got), len(want))
		}
	}
}

func TestApproxSpaceSavingBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { testApproxMode(t, pb.Mode_MODE_SPACESAVING) })
}

func TestApproxCMSBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { testApproxMode(t, pb.Mode_MODE_CMS) })
}

func TestApproxNegativeRejected(t *testing.T) {
	for _, mode := range []pb.Mode{pb.Mode_MODE_CMS, pb.Mode_MODE_SPACESAVING} {
		t.Run(mode.String(), func(t *testing.T) {
			lf := newFeeder(t)
			if err := lf.config(&pb.LeaderboardConfig{Name: "ap", Incarnation: 1, Version: 1, Mode: mode}); err != nil {
				t.Fatal(err)
			}
			res := lf.ingest(&pb.IngestEntry{LeaderTimeMs: 1_700_000_000_000, Parts: []*pb.ProducerPart{
				part("", 0, 0, deltas("ap", 1, ev{"a", 5, 0}, ev{"a", -2, 0}, ev{"b", 1, 0})),
			}})
			if o := res.Outcomes[0]; o.Accepted != 2 || o.Rejected != 1 {
				t.Fatalf("outcome %+v, want 2 accepted, 1 rejected", o)
			}
			c, err := lf.f.Count("ap", "a", 0)
			if err != nil {
				t.Fatal(err)
			}
			if c.Lower != 5 || c.Upper != 5 {
				t.Fatalf("count of a [%d, %d], want exactly 5", c.Lower, c.Upper)
			}
			if s := lf.f.Stats().Leaderboards[0]; s.RejectedNegative != 1 || !s.Approximate {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestApproxConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		cfg  *pb.LeaderboardConfig
		want string
	}{
		{"capacity on cms", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, Capacity: 10}, "capacity applies to mode spacesaving"},
		{"epsilon on spacesaving", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_SPACESAVING, Epsilon: 0.01}, "epsilon and delta apply to mode cms"},
		{"epsilon on exact", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_EXACT, Epsilon: 0.01}, "not exact"},
		{"filter_cells on cms", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, FilterCells: 8}, "capacity applies to mode spacesaving"},
		{"filter_cells on exact", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_EXACT, FilterCells: 8}, "not exact"},
		{"filter_cells too many", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_SPACESAVING, FilterCells: 33}, "filter_cells 33 exceeds 32"},
		{"capacity below k_max", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_SPACESAVING, KMax: 100, Capacity: 50}, "capacity 50 must be in [k_max=100"},
		{"epsilon too small", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, Epsilon: 1e-9}, "epsilon"},
		{"delta too large", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, Delta: 1.5}, "delta"},
		{"max_items on cms", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, MaxItems: 10}, "max_items applies to mode exact"},
		{"sketches too large", &pb.LeaderboardConfig{Mode: pb.Mode_MODE_CMS, Epsilon: 1e-5,
			Windows: []*pb.WindowSpec{{DurationMs: 3_600_000, BucketMs: 1000}}}, "raise epsilon"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name, tc.cfg.Incarnation = "x", 1
			err := NormalizeConfig(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c := &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_SPACESAVING}
	if err := NormalizeConfig(c); err != nil || c.Capacity != 2*DefaultKMax || c.FilterCells != LegacyFilterCells {
		t.Fatalf("defaults of a config from the log: err %v, capacity %d, filter_cells %d", err, c.Capacity, c.FilterCells)
	}
	c = &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_SPACESAVING}
	FillNewDefaults(c)
	if err := NormalizeConfig(c); err != nil || c.FilterCells != sketch.FilterCellsPerCounter {
		t.Fatalf("defaults of a new leaderboard: err %v, filter_cells %d", err, c.FilterCells)
	}
	// The default windows and capacity pass the creation limit; the largest
	// capacity and filter over a window of 3,600 buckets do not.
	def := &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_SPACESAVING}
	for _, d := range DefaultWindows {
		def.Windows = append(def.Windows, &pb.WindowSpec{DurationMs: d.Milliseconds()})
	}
	FillNewDefaults(def)
	if err := NormalizeConfig(def); err != nil || CheckNewConfig(def) != nil {
		t.Fatalf("default spacesaving board refused: %v, %v", err, CheckNewConfig(def))
	}
	big := &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_SPACESAVING, Capacity: MaxCapacity, FilterCells: MaxFilterCells,
		Windows: []*pb.WindowSpec{{DurationMs: 3_600_000, BucketMs: 1000}}}
	if err := NormalizeConfig(big); err != nil {
		t.Fatal(err)
	}
	if err := CheckNewConfig(big); err == nil || !strings.Contains(err.Error(), "lower capacity") {
		t.Fatalf("a board of 7,201 summaries of 100,000 counters: %v, want refused", err)
	}
	c = &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_CMS}
	FillNewDefaults(c)
	if c.FilterCells != 0 {
		t.Fatalf("FillNewDefaults gave cms filter_cells %d", c.FilterCells)
	}
	c = &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Mode: pb.Mode_MODE_CMS}
	if err := NormalizeConfig(c); err != nil || c.Epsilon != DefaultEpsilon || c.Delta != DefaultDelta {
		t.Fatalf("defaults: err %v, epsilon %g delta %g", err, c.Epsilon, c.Delta)
	}
}

func apSnapshot(t *rapid.T, f *FSM) []byte {
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestApproxRace reads approximate boards (TopK, Count, Stats, Snapshot)
// while batches apply; run under -race by make test.
func TestApproxRace(t *testing.T) {
	f := New(Options{})
	var idx uint64
	apply := func(cmds ...[]byte) {
		logs := make([]*raft.Log, len(cmds))
		for i, c := range cmds {
			idx++
			logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: c}
		}
		f.ApplyBatch(logs)
	}
	ws := []*pb.WindowSpec{{DurationMs: 10_000, BucketMs: 1000}}
	apply(mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "ss", Incarnation: 1, Version: 1, Mode: pb.Mode_MODE_SPACESAVING, KMax: 5, Capacity: 8, Windows: ws})),
		mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "cms", Incarnation: 1, Version: 1, Mode: pb.Mode_MODE_CMS, KMax: 5, Epsilon: 0.1, Windows: ws})))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, name := range []string{"ss", "cms"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				for _, w := range []time.Duration{0, 10 * time.Second} {
					if _, err := f.TopK(name, w, 5); err != nil {
						t.Error(err)
						return
					}
					if _, err := f.Count(name, "i3", w); err != nil {
						t.Error(err)
						return
					}
				}
				f.Stats()
			}
		}()
	}
	now := int64(1_700_000_000_000)
	for i := range 300 {
		now += 700
		var evs []ev
		for j := range 20 {
			evs = append(evs, ev{fmt.Sprintf("i%d", (i*7+j*j)%40), int64(1 + j%3), 0})
		}
		apply(mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: now, Parts: []*pb.ProducerPart{
			part("", 0, 0, deltas("ss", 1, evs...), deltas("cms", 1, evs...))}})))
		if i%50 == 0 {
			snapshotBytes(t, f)
		}
	}
	close(done)
	wg.Wait()
}

func TestCheckUpdate(t *testing.T) {
	base := func(mode pb.Mode) *pb.LeaderboardConfig {
		c := &pb.LeaderboardConfig{Name: "x", Incarnation: 1, Version: 1, Mode: mode,
			Windows: []*pb.WindowSpec{{DurationMs: 3_600_000}}}
		if err := NormalizeConfig(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name   string
		mode   pb.Mode
		change func(c *pb.LeaderboardConfig)
		ok     bool
	}{
		{"exact k_max", pb.Mode_MODE_EXACT, func(c *pb.LeaderboardConfig) { c.KMax = 10 }, true},
		{"exact max_items", pb.Mode_MODE_EXACT, func(c *pb.LeaderboardConfig) { c.MaxItems = 10 }, true},
		{"exact to cms", pb.Mode_MODE_EXACT, func(c *pb.LeaderboardConfig) { c.Mode = pb.Mode_MODE_CMS }, false},
		{"window", pb.Mode_MODE_EXACT, func(c *pb.LeaderboardConfig) { c.Windows[0].BucketMs = 1000 }, false},
		{"spacesaving capacity", pb.Mode_MODE_SPACESAVING, func(c *pb.LeaderboardConfig) { c.Capacity++ }, false},
		{"spacesaving filter_cells", pb.Mode_MODE_SPACESAVING, func(c *pb.LeaderboardConfig) { c.FilterCells++ }, false},
		{"spacesaving k_max", pb.Mode_MODE_SPACESAVING, func(c *pb.LeaderboardConfig) { c.KMax = 10 }, false},
		{"cms epsilon", pb.Mode_MODE_CMS, func(c *pb.LeaderboardConfig) { c.Epsilon = 0.01 }, false},
		{"cms lateness", pb.Mode_MODE_CMS, func(c *pb.LeaderboardConfig) { c.AllowedLatenessMs = 1000 }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, c := base(tc.mode), base(tc.mode)
			tc.change(c)
			if err := CheckUpdate(old, c); (err == nil) != tc.ok {
				t.Fatalf("CheckUpdate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
