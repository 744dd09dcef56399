package fsm

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// The real flights stream (3M timestamped events) through the FSM, as the
// server would feed it, checked against a plain recomputation from the events.

const (
	fltPath        = "../../shared/data/flights-3m.csv.gz"
	fltBoard       = "flights"
	fltEntryEvents = 1000
	fltLeaderMs    = 1_800_000_000_000 // fixed wall time: only the event clock matters
)

type fltEvent struct {
	sec   int64
	route int32
}

// fltStream reads the CSV: time, origin, destination, delay_min, distance_mi.
type fltStream struct {
	sc      *bufio.Scanner
	closeFn func() error
	line    int
	lastTS  string
	lastSec int64
	routes  map[string]int32
	names   []string
}

func fltOpen(t *testing.T) *fltStream {
	t.Helper()
	file, err := os.Open(fltPath)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("real data %s is absent (it lives in the shared data folder beside the repository); skipping the flights stream test", fltPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(file)
	if err != nil {
		file.Close()
		t.Fatal(err)
	}
	s := &fltStream{sc: bufio.NewScanner(zr), routes: make(map[string]int32), closeFn: file.Close}
	t.Cleanup(func() { s.closeFn() })
	if !s.sc.Scan() || s.sc.Text() != "time,origin,destination,delay_min,distance_mi" {
		t.Fatalf("%s: unexpected header %q", fltPath, s.sc.Text())
	}
	s.line = 1
	return s
}

// next returns the next event, or ok=false at the end of the file.
func (s *fltStream) next() (ev fltEvent, ok bool, err error) {
	if !s.sc.Scan() {
		return fltEvent{}, false, s.sc.Err()
	}
	s.line++
	cols := strings.Split(s.sc.Text(), ",")
	if len(cols) != 5 {
		return fltEvent{}, false, fmt.Errorf("line %d: %d columns, want 5", s.line, len(cols))
	}
	if cols[0] != s.lastTS {
		ts, err := time.Parse(time.RFC3339, cols[0])
		if err != nil {
			return fltEvent{}, false, fmt.Errorf("line %d: %w", s.line, err)
		}
		s.lastTS, s.lastSec = cols[0], ts.Unix()
	}
	route := cols[1] + "-" + cols[2]
	id, seen := s.routes[route]
	if !seen {
		id = int32(len(s.names))
		s.routes[route] = id
		s.names = append(s.names, route)
	}
	return fltEvent{sec: s.lastSec, route: id}, true, nil
}

// fltEntry pre-aggregates raw events per (item, event second), in first-seen
// order, as the server's combiner would.
func fltEntry(seq uint64, evs []fltEvent, names []string) []byte {
	type key struct {
		route int32
		sec   int64
	}
	d := &pb.LeaderboardDeltas{Leaderboard: fltBoard, Incarnation: 1}
	slot := make(map[key]int, len(evs))
	for _, e := range evs {
		k := key{e.route, e.sec}
		i, ok := slot[k]
		if !ok {
			i = len(d.Items)
			slot[k] = i
			d.Items = append(d.Items, names[e.route])
			d.Deltas = append(d.Deltas, 0)
			d.EventTimesS = append(d.EventTimesS, e.sec)
			d.Events = append(d.Events, 0)
		}
		d.Deltas[i]++
		d.Events[i]++
	}
	return mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: fltLeaderMs,
		Parts: []*pb.ProducerPart{{ProducerId: "flights-loader", Epoch: 1, Sequence: seq, Boards: []*pb.LeaderboardDeltas{d}}}}))
}

// fltExpected ranks routes by count desc, then name asc, positive counts only.
func fltExpected(counts []int64, names []string, k int) []Item {
	var items []Item
	for id, c := range counts {
		if c > 0 {
			items = append(items, ex(names[id], c))
		}
	}
	slices.SortFunc(items, func(a, b Item) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Item, b.Item)
	})
	return items[:min(k, len(items))]
}

// fltCheck compares the FSM's answers with a recomputation from events.
func fltCheck(t *testing.T, f *FSM, cfg *pb.LeaderboardConfig, events []fltEvent, names []string) {
	t.Helper()
	maxMs := int64(0)
	for _, e := range events {
		maxMs = max(maxMs, e.sec*1000)
	}
	watermark := maxMs - cfg.AllowedLatenessMs
	type win struct {
		d           time.Duration
		startBucket int64 // first bucket index inside the window; all: none
		bucketMs    int64
	}
	wins := []win{{d: 0}}
	for _, w := range cfg.Windows {
		n := w.DurationMs / w.BucketMs
		wins = append(wins, win{time.Duration(w.DurationMs) * time.Millisecond, floorDiv(watermark, w.BucketMs) - n + 1, w.BucketMs})
	}
	for _, w := range wins {
		counts := make([]int64, len(names))
		for _, e := range events {
			if w.d == 0 || floorDiv(e.sec*1000, w.bucketMs) >= w.startBucket {
				counts[e.route]++
			}
		}
		for _, k := range []int{10, 100, 1000} {
			got, err := f.TopK(fltBoard, w.d, k)
			if err != nil {
				t.Fatalf("TopK(%v, %d): %v", w.d, k, err)
			}
			want := fltExpected(counts, names, k)
			if !slices.Equal(got.Items, want) {
				for i := range min(len(got.Items), len(want)) {
					if got.Items[i] != want[i] {
						t.Fatalf("after %d events, window %v, k=%d: rank %d is %v, want %v (%d items, want %d)",
							len(events), w.d, k, i+1, got.Items[i], want[i], len(got.Items), len(want))
					}
				}
				t.Fatalf("after %d events, window %v, k=%d: %d items, want %d", len(events), w.d, k, len(got.Items), len(want))
			}
			if got.WindowEndMs != watermark {
				t.Fatalf("window %v ends at %d, want the watermark %d", w.d, got.WindowEndMs, watermark)
			}
			if w.d != 0 && got.WindowStartMs != w.startBucket*w.bucketMs {
				t.Fatalf("window %v starts at %d, want %d", w.d, got.WindowStartMs, w.startBucket*w.bucketMs)
			}
		}
		for id := 0; id < len(names); id += 17 {
			got, err := f.Count(fltBoard, names[id], w.d)
			if err != nil {
				t.Fatal(err)
			}
			if got.Count != counts[id] {
				t.Fatalf("after %d events: Count(%s, %v) = %d, want %d", len(events), names[id], w.d, got.Count, counts[id])
			}
		}
		if got, _ := f.Count(fltBoard, "XXX-YYY", w.d); got.Count != 0 {
			t.Fatalf("Count of an unknown route = %d, want 0", got.Count)
		}
	}
	s := f.Stats()
	if got := s.Leaderboards[0].Accepted; got != uint64(len(events)) {
		t.Fatalf("Stats: %d events accepted, want %d", got, len(events))
	}
	for _, w := range s.Leaderboards[0].Windows {
		if w.LateDropped != 0 {
			t.Fatalf("window %v dropped %d late events from a sorted stream", w.Window, w.LateDropped)
		}
	}
}

// TestFlightsStream feeds the real flights stream through an exact,
// event-clock leaderboard with 1h and 1d windows, and checks top-K
// (k = 10, 100, 1000) and sampled counts at several points against a plain
// recomputation. -short reads only the first 300k events; the whole file runs
// by default: about 5 s of CPU (16 s wall on a busy 2-core machine).
func TestFlightsStream(t *testing.T) {
	limit, checkpoints := 3_000_000, []int{100_000, 1_000_000}
	if testing.Short() {
		limit, checkpoints = 300_000, []int{100_000}
	}
	s := fltOpen(t)
	f := New(Options{})
	cfg := &pb.LeaderboardConfig{Name: fltBoard, Incarnation: 1, Version: 1, Mode: pb.Mode_MODE_EXACT,
		Clock: pb.Clock_CLOCK_EVENT, AllowedLatenessMs: 0, KMax: 1000,
		Windows: []*pb.WindowSpec{{DurationMs: ms(time.Hour)}, {DurationMs: ms(24 * time.Hour)}}}
	var index uint64
	apply := func(data []byte) interface{} {
		index++
		return f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
	}
	if r := apply(mustEncode(EncodeConfig(cfg))); r != nil {
		t.Fatalf("config: %v", r)
	}
	cfg = f.Leaderboards()[0]
	if got := []int64{cfg.Windows[0].BucketMs, cfg.Windows[1].BucketMs}; got[0] != ms(time.Minute) || got[1] != ms(time.Hour) {
		t.Fatalf("default buckets %v, want 1m and 1h", got)
	}
	var events []fltEvent
	var seq uint64
	for done := false; !done && len(events) < limit; {
		first := len(events)
		for len(events)-first < fltEntryEvents && len(events) < limit {
			e, ok, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				done = true
				break
			}
			if n := len(events); n > 0 && e.sec < events[n-1].sec {
				t.Fatalf("line %d: time goes back", s.line)
			}
			events = append(events, e)
		}
		batch := events[first:]
		if len(batch) == 0 {
			break
		}
		seq++
		res, ok := apply(fltEntry(seq, batch, s.names)).(*IngestResult)
		if !ok {
			t.Fatalf("entry %d: result is not an ingest result", seq)
		}
		if o := res.Outcomes[0]; o.Status != pb.PartStatus_PART_STATUS_APPLIED || o.Accepted != uint64(len(batch)) || o.Rejected != 0 || len(o.Late) != 0 {
			t.Fatalf("entry %d: outcome %v, want %d accepted, none rejected or late", seq, o, len(batch))
		}
		if len(checkpoints) > 0 && len(events) == checkpoints[0] {
			checkpoints = checkpoints[1:]
			fltCheck(t, f, cfg, events, s.names)
		}
	}
	if !testing.Short() && len(events) != limit {
		t.Fatalf("read %d events, the file has %d", len(events), limit)
	}
	fltCheck(t, f, cfg, events, s.names)
	top, err := f.TopK(fltBoard, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i, it := range top.Items {
		b.WriteString("\n  " + strconv.Itoa(i+1) + ". " + it.Item + " " + strconv.FormatInt(it.Count, 10))
	}
	t.Logf("%d events, %d routes, watermark %s; top-5 all-time routes:%s", len(events), len(s.names),
		time.UnixMilli(top.WindowEndMs).UTC().Format(time.RFC3339), b.String())
}
