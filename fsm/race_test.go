package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Readers run concurrently with ApplyBatch, Snapshot+Persist and Restore.
// One goroutine plays raft's FSM goroutine (ApplyBatch, Snapshot, Restore in
// sequence), persists run on their own goroutines while applies continue, and
// readers hammer every read method. Every answer a reader gets must equal what
// a sequentially fed reference FSM answered at the same applied index: a torn
// read (half a batch, a state mid-swap) cannot match. Meant for -race.

const raceWait = 30 * time.Second // hang guard only

var raceItems = func() []string {
	var s []string
	for i := range 120 {
		s = append(s, fmt.Sprintf("i%03d", i))
	}
	return s
}()

type raceQuery struct {
	lb string
	w  time.Duration
	k  int
}

var raceQueries = []raceQuery{
	{"default", 0, 10},
	{"default", time.Minute, 10},
	{"default", time.Hour, 5},
	{"ev", 10 * time.Second, 10},
	{"ev", time.Minute, 50},
	{"ev", 0, 3},
}

type raceProbe struct {
	lb, item string
	w        time.Duration
}

var raceProbes = func() []raceProbe {
	var ps []raceProbe
	for _, lw := range []struct {
		lb string
		w  time.Duration
	}{{"default", 0}, {"default", time.Minute}, {"ev", 10 * time.Second}} {
		for _, it := range []string{"i000", "i001", "i005", "i050", "i119", "nobody"} {
			ps = append(ps, raceProbe{lw.lb, it, lw.w})
		}
	}
	return ps
}()

func raceEvConfig(inc, version uint64) *pb.LeaderboardConfig {
	return &pb.LeaderboardConfig{Name: "ev", Incarnation: inc, Version: version, Clock: pb.Clock_CLOCK_EVENT,
		KMax: 50, MaxItems: 40, AllowedLatenessMs: 2000,
		Windows: []*pb.WindowSpec{{DurationMs: 10_000, BucketMs: 1000}, {DurationMs: 60_000, BucketMs: 5000}}}
}

// raceLog builds a deterministic log of n entries: the bootstrap
// configuration at index 1, two leaderboards, then ingest (with producers,
// retries, stale epochs and incarnations, late and future events, events
// counts), ticks with watermarks, checksums, a config update, a drop and a
// re-create, and further raft configuration entries.
func raceLog(n int) []*raft.Log {
	rng := rand.New(rand.NewPCG(2024, 7))
	zipf := rand.NewZipf(rng, 1.2, 2, uint64(len(raceItems)-1))
	var logs []*raft.Log
	add := func(t raft.LogType, data []byte) {
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Term: 1, Type: t, Data: data})
	}
	conf := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "a", Address: "a:1"}}})
	add(raft.LogConfiguration, conf)
	add(raft.LogCommand, mustEncode(EncodeConfig(DefaultLeaderboard(1))))
	add(raft.LogCommand, mustEncode(EncodeConfig(raceEvConfig(1, 1))))
	evInc := uint64(1)
	logMs := int64(1_700_000_000_000)
	seqs := map[string]uint64{}
	epochs := map[string]uint64{"a": 1, "b": 1, "c": 1}
	var sent []*pb.ProducerPart
	for len(logs) < n {
		i := len(logs)
		logMs += 500
		ms := logMs
		if rng.IntN(8) == 0 {
			ms -= rng.Int64N(3000) // a leader with a slower clock: clamped
		}
		r := rng.IntN(100)
		switch {
		case i == n/3:
			c := DefaultLeaderboard(1)
			c.Version, c.KMax = 2, 500
			add(raft.LogCommand, mustEncode(EncodeConfig(c)))
		case i == n/4:
			epochs["b"] = 2
			add(raft.LogCommand, mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: ms})))
		case i == n/2:
			add(raft.LogCommand, mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: "ev", Incarnation: evInc})))
		case i == n/2+5:
			evInc++
			add(raft.LogCommand, mustEncode(EncodeConfig(raceEvConfig(evInc, 1))))
		case r < 8:
			add(raft.LogCommand, mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: ms, Watermarks: []*pb.Watermark{
				{Leaderboard: "ev", Incarnation: evInc, MaxEventTimeMs: ms - rng.Int64N(5000)}}})))
		case r < 11:
			add(raft.LogCommand, mustEncode(EncodeChecksum(&pb.Checksum{Id: uint64(i), LeaderTimeMs: ms})))
		case r < 12:
			add(raft.LogConfiguration, conf)
		default:
			e := &pb.IngestEntry{LeaderTimeMs: ms}
			for range 1 + rng.IntN(3) {
				if len(sent) > 0 && rng.IntN(10) == 0 {
					e.Parts = append(e.Parts, proto.Clone(sent[rng.IntN(len(sent))]).(*pb.ProducerPart))
					continue
				}
				producer := []string{"a", "b", "c", ""}[rng.IntN(4)]
				p := &pb.ProducerPart{ProducerId: producer}
				if producer != "" {
					seqs[producer] += 1 + uint64(rng.IntN(3)) // gaps allowed
					p.Sequence, p.Epoch = seqs[producer], epochs[producer]
					if producer == "b" && p.Epoch > 1 && rng.IntN(20) == 0 {
						p.Epoch = 1 // stale epoch
					}
				}
				d := &pb.LeaderboardDeltas{Leaderboard: "default", Incarnation: 1}
				for range 1 + rng.IntN(6) {
					d.Items = append(d.Items, raceItems[zipf.Uint64()])
					d.Deltas = append(d.Deltas, rng.Int64N(9)-2)
					var ts int64
					if rng.IntN(5) == 0 {
						ts = ms/1000 - rng.Int64N(90)
					}
					d.EventTimesS = append(d.EventTimesS, ts)
				}
				p.Boards = append(p.Boards, d)
				if rng.IntN(3) > 0 {
					inc := evInc
					if rng.IntN(10) == 0 {
						inc = evInc + 1 // not (yet) live: rejected
					}
					d := &pb.LeaderboardDeltas{Leaderboard: "ev", Incarnation: inc}
					withEvents := rng.IntN(3) == 0
					for range 1 + rng.IntN(6) {
						d.Items = append(d.Items, raceItems[zipf.Uint64()])
						d.Deltas = append(d.Deltas, 1+rng.Int64N(4))
						ts := ms/1000 - rng.Int64N(20)
						if rng.IntN(20) == 0 {
							ts += 3 + rng.Int64N(3) // ahead of the watermark
						}
						d.EventTimesS = append(d.EventTimesS, ts)
						if withEvents {
							d.Events = append(d.Events, uint32(rng.IntN(5)))
						}
					}
					p.Boards = append(p.Boards, d)
				}
				if producer != "" {
					sent = append(sent, p)
				}
				e.Parts = append(e.Parts, p)
			}
			add(raft.LogCommand, mustEncode(EncodeIngest(e)))
		}
	}
	return logs
}

// raceView is everything the readers compare, as of one applied index.
type raceView struct {
	tops   []TopKResult
	errs   []string
	counts []CountResult
	stats  Stats
}

func raceObserve(t testing.TB, f *FSM) raceView {
	t.Helper()
	var v raceView
	for _, q := range raceQueries {
		r, err := f.TopK(q.lb, q.w, q.k)
		v.tops = append(v.tops, r)
		v.errs = append(v.errs, raceErrString(err))
	}
	for _, p := range raceProbes {
		r, err := f.Count(p.lb, p.item, p.w)
		if err != nil && !errors.Is(err, ErrUnknownLeaderboard) {
			t.Fatalf("reference Count(%q, %q, %v): %v", p.lb, p.item, p.w, err)
		}
		v.counts = append(v.counts, r)
	}
	v.stats = raceStableStats(f.Stats())
	return v
}

func raceErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// raceStableStats drops the memory estimate, which depends on slice capacities
// and so on how the log was batched.
func raceStableStats(s Stats) Stats {
	s.Bytes = 0
	for i := range s.Leaderboards {
		s.Leaderboards[i].Bytes = 0
	}
	return s
}

// raceReference feeds the log one entry per batch and records the view
// after every index, and every checksum digest.
func raceReference(t testing.TB, logs []*raft.Log) ([]raceView, map[uint64]ChecksumRecord, []byte) {
	t.Helper()
	ref := New(Options{ChecksumHistory: 8})
	views := []raceView{raceObserve(t, ref)}
	digests := map[uint64]ChecksumRecord{}
	for _, l := range logs {
		out := ref.ApplyBatch([]*raft.Log{l})
		if rec, ok := out[0].(ChecksumRecord); ok {
			digests[l.Index] = rec
		}
		views = append(views, raceObserve(t, ref))
	}
	return views, digests, snapshotBytes(t, ref)
}

// raceMemSink is a raft.SnapshotSink in memory.
type raceMemSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *raceMemSink) ID() string    { return "mem" }
func (s *raceMemSink) Cancel() error { s.canceled = true; return nil }
func (s *raceMemSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*raceMemSink)(nil)

// raceSnap is one snapshot taken on the apply goroutine and persisted on
// another once the applier has moved on.
type raceSnap struct {
	index   uint64
	release chan struct{} // closed by the applier once it applied `left` more batches
	left    int
	done    chan struct{} // closed when data/err are set
	data    []byte
	err     error
}

// raceMonotonic checks that an applied index never goes back, except across a
// Restore: gen is odd while a Restore runs and bumped around it, so a
// decrease needs gen to have moved (or been odd) between the two reads.
type raceMonotonic struct {
	name  string
	g     uint64
	idx   uint64
	valid bool
}

func (m *raceMonotonic) check(g0, idx, g1 uint64) error {
	var err error
	if m.valid && idx < m.idx && m.g%2 == 0 && m.g == g1 {
		err = fmt.Errorf("%s: applied index went back from %d to %d with no Restore in between", m.name, m.idx, idx)
	}
	m.g, m.idx, m.valid = g0, idx, true
	return err
}

type raceRun struct {
	t       *testing.T
	f       *FSM
	views   []raceView
	digests map[uint64]ChecksumRecord
	n       uint64
	gen     *atomic.Uint64
	stop    chan struct{}
}

// reader runs fn until stop, reporting its first error; it returns how
// many checks passed.
func (rr *raceRun) reader(name string, fn func(rng *rand.Rand) error) func() int {
	var checks int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(uint64(len(name)), 3))
		for {
			select {
			case <-rr.stop:
				return
			default:
			}
			if err := fn(rng); err != nil {
				rr.t.Errorf("%s reader: %v", name, err)
				return
			}
			checks++
			runtime.Gosched()
		}
	}()
	return func() int { wg.Wait(); return checks }
}

func (rr *raceRun) view(idx uint64) (raceView, error) {
	if idx > rr.n {
		return raceView{}, fmt.Errorf("applied index %d beyond the log's %d entries", idx, rr.n)
	}
	return rr.views[idx], nil
}

func raceCheckTopOrder(r TopKResult, k int) error {
	if len(r.Items) > k {
		return fmt.Errorf("%d items for k=%d", len(r.Items), k)
	}
	for i, it := range r.Items {
		if it.Count <= 0 {
			return fmt.Errorf("item %d %+v has a count <= 0", i, it)
		}
		if i > 0 {
			p := r.Items[i-1]
			if p.Count < it.Count || (p.Count == it.Count && p.Item >= it.Item) {
				return fmt.Errorf("items %d %+v and %d %+v out of order", i-1, p, i, it)
			}
		}
	}
	return nil
}

func (rr *raceRun) topKReader() func(*rand.Rand) error {
	mono := make([]raceMonotonic, len(raceQueries))
	for i := range mono {
		mono[i].name = fmt.Sprintf("TopK %v", raceQueries[i])
	}
	return func(rng *rand.Rand) error {
		qi := rng.IntN(len(raceQueries))
		q := raceQueries[qi]
		g0 := rr.gen.Load()
		r, err := rr.f.TopK(q.lb, q.w, q.k)
		g1 := rr.gen.Load()
		if err != nil {
			if !errors.Is(err, ErrUnknownLeaderboard) {
				return fmt.Errorf("TopK(%v): %v", q, err)
			}
			return nil // dropped or not yet created: no index to compare at
		}
		if err := raceCheckTopOrder(r, q.k); err != nil {
			return fmt.Errorf("TopK(%v) at index %d: %v", q, r.AppliedIndex, err)
		}
		if r.Leaderboard != q.lb || r.Window != q.w {
			return fmt.Errorf("TopK(%v) answered for %q %v", q, r.Leaderboard, r.Window)
		}
		if err := mono[qi].check(g0, r.AppliedIndex, g1); err != nil {
			return err
		}
		v, err := rr.view(r.AppliedIndex)
		if err != nil {
			return err
		}
		if v.errs[qi] != "" || !reflect.DeepEqual(r, v.tops[qi]) {
			return fmt.Errorf("TopK(%v) = %+v, want %+v (err %q)", q, r, v.tops[qi], v.errs[qi])
		}
		return nil
	}
}

func (rr *raceRun) countReader() func(*rand.Rand) error {
	mono := raceMonotonic{name: "Count"}
	return func(rng *rand.Rand) error {
		pi := rng.IntN(len(raceProbes))
		p := raceProbes[pi]
		g0 := rr.gen.Load()
		r, err := rr.f.Count(p.lb, p.item, p.w)
		g1 := rr.gen.Load()
		if err != nil {
			if !errors.Is(err, ErrUnknownLeaderboard) {
				return fmt.Errorf("Count(%v): %v", p, err)
			}
			return nil
		}
		if p.w != 0 && r.WindowStartMs > r.WindowEndMs {
			return fmt.Errorf("Count(%v): window starts at %d after its end %d", p, r.WindowStartMs, r.WindowEndMs)
		}
		if err := mono.check(g0, r.AppliedIndex, g1); err != nil {
			return err
		}
		v, err := rr.view(r.AppliedIndex)
		if err != nil {
			return err
		}
		if r != v.counts[pi] {
			return fmt.Errorf("Count(%v) = %+v, want %+v", p, r, v.counts[pi])
		}
		return nil
	}
}

func (rr *raceRun) statsReader() func(*rand.Rand) error {
	mono := raceMonotonic{name: "Stats"}
	return func(*rand.Rand) error {
		g0 := rr.gen.Load()
		s := rr.f.Stats()
		g1 := rr.gen.Load()
		if err := mono.check(g0, s.AppliedIndex, g1); err != nil {
			return err
		}
		for _, ls := range s.Leaderboards {
			if ls.Name == "ev" && ls.DistinctItems > 40 {
				return fmt.Errorf("leaderboard ev: %d live items, max_items is 40", ls.DistinctItems)
			}
			for _, ws := range ls.Windows {
				if ws.PositiveItems > ls.DistinctItems {
					return fmt.Errorf("leaderboard %q window %v: %d positive items of %d live", ls.Name, ws.Window, ws.PositiveItems, ls.DistinctItems)
				}
			}
		}
		v, err := rr.view(s.AppliedIndex)
		if err != nil {
			return err
		}
		if got := raceStableStats(s); !reflect.DeepEqual(got, v.stats) {
			return fmt.Errorf("Stats at index %d = %+v, want %+v", s.AppliedIndex, got, v.stats)
		}
		// Leaderboards hands out copies: scribbling on them must not race
		// with the applier nor change the FSM.
		cfgs := rr.f.Leaderboards()
		for i, c := range cfgs {
			if i > 0 && cfgs[i-1].Name >= c.Name {
				return fmt.Errorf("Leaderboards not sorted: %q before %q", cfgs[i-1].Name, c.Name)
			}
			if c.Incarnation == 0 || c.KMax == 0 || len(c.Windows) == 0 {
				return fmt.Errorf("Leaderboards: unnormalized config %v", c)
			}
		}
		for _, c := range cfgs {
			c.KMax, c.Windows[0].DurationMs, c.Name = 1, 1, "scribbled"
		}
		if len(cfgs) > 2 {
			return fmt.Errorf("%d leaderboards, want at most 2", len(cfgs))
		}
		return nil
	}
}

func (rr *raceRun) checksumReader() func(*rand.Rand) error {
	mono := raceMonotonic{name: "AppliedIndex"}
	return func(rng *rand.Rand) error {
		g0 := rr.gen.Load()
		idx := rr.f.AppliedIndex()
		g1 := rr.gen.Load()
		if err := mono.check(g0, idx, g1); err != nil {
			return err
		}
		if idx > rr.n {
			return fmt.Errorf("AppliedIndex %d beyond the log's %d entries", idx, rr.n)
		}
		cs := rr.f.Checksums()
		if len(cs) > 8 {
			return fmt.Errorf("%d checksum records, history is 8", len(cs))
		}
		for i, c := range cs {
			if i > 0 && cs[i-1].Index >= c.Index {
				return fmt.Errorf("checksums out of order: %+v", cs)
			}
			if want, ok := rr.digests[c.Index]; !ok || c != want {
				return fmt.Errorf("checksum record %+v, reference has %+v", c, want)
			}
		}
		// WaitApplied returns once the target is applied (unless a Restore
		// moved the index back in the meantime).
		target := 1 + uint64(rng.IntN(int(rr.n)))
		ctx, cancel := context.WithTimeout(context.Background(), raceWait)
		defer cancel()
		g0 = rr.gen.Load()
		if err := rr.f.WaitApplied(ctx, target); err != nil {
			return err
		}
		idx = rr.f.AppliedIndex()
		if g1 := rr.gen.Load(); idx < target && g0%2 == 0 && g0 == g1 {
			return fmt.Errorf("WaitApplied(%d) returned at applied index %d", target, idx)
		}
		return nil
	}
}

func TestRaceReadersApplySnapshotRestore(t *testing.T) {
	n := 2500
	if testing.Short() {
		n = 800
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	logs := raceLog(n)
	views, digests, refFinal := raceReference(t, logs)
	if len(digests) == 0 {
		t.Fatal("the log has no checksum command")
	}

	var fatal atomic.Pointer[error]
	f := New(Options{ChecksumHistory: 8, OnFatal: func(err error) { fatal.CompareAndSwap(nil, &err) }})
	rr := &raceRun{t: t, f: f, views: views, digests: digests, n: uint64(n), gen: new(atomic.Uint64), stop: make(chan struct{})}
	waits := []func() int{
		rr.reader("TopK", rr.topKReader()),
		rr.reader("TopK-2", rr.topKReader()),
		rr.reader("Count", rr.countReader()),
		rr.reader("Stats", rr.statsReader()),
		rr.reader("Checksums", rr.checksumReader()),
	}

	// A cancelled WaitApplied for an index never reached ends with ctx's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WaitApplied(ctx, uint64(n)+1000); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitApplied with a cancelled context = %v, want context.Canceled", err)
	}

	// The applier: batches of random size; every snapEvery entries a
	// Snapshot, persisted on its own goroutine after two more batches; at
	// restoreAt, a Restore of an older persisted snapshot, then the log is
	// re-applied from its index on, as raft would.
	rng := rand.New(rand.NewPCG(99, 1))
	snapEvery := n / 6
	restoreAt := []int{n / 3, 2 * n / 3, n - 10}
	var snaps []*raceSnap
	var persistWG sync.WaitGroup
	pos, nextSnap, restores := 0, snapEvery, 0
	for pos < n {
		end := min(pos+1+rng.IntN(16), n)
		out := f.ApplyBatch(logs[pos:end])
		if len(out) != end-pos {
			t.Fatalf("ApplyBatch of %d logs returned %d responses", end-pos, len(out))
		}
		pos = end
		for _, s := range snaps {
			if s.left > 0 {
				if s.left--; s.left == 0 {
					close(s.release)
				}
			}
		}
		if pos >= nextSnap {
			nextSnap = pos + snapEvery
			fs, err := f.Snapshot()
			if err != nil {
				t.Fatalf("Snapshot at %d: %v", pos, err)
			}
			s := &raceSnap{index: uint64(pos), release: make(chan struct{}), left: 2, done: make(chan struct{})}
			snaps = append(snaps, s)
			persistWG.Add(1)
			go func() {
				defer persistWG.Done()
				defer close(s.done)
				defer fs.Release()
				<-s.release
				sink := &raceMemSink{}
				s.err = fs.Persist(sink)
				if s.err == nil && (!sink.closed || sink.canceled) {
					s.err = fmt.Errorf("sink closed %v, canceled %v after Persist", sink.closed, sink.canceled)
				}
				s.data = sink.Bytes()
			}()
		}
		if restores < len(restoreAt) && pos >= restoreAt[restores] {
			// The newest released snapshot older than the current index.
			var pick *raceSnap
			for _, s := range snaps {
				if s.left == 0 && s.index < uint64(pos) {
					pick = s
				}
			}
			if pick == nil {
				continue
			}
			<-pick.done
			if pick.err != nil {
				t.Fatalf("persist of the snapshot at %d: %v", pick.index, pick.err)
			}
			rr.gen.Add(1)
			err := f.Restore(io.NopCloser(bytes.NewReader(pick.data)))
			rr.gen.Add(1)
			if err != nil {
				t.Fatalf("Restore of the snapshot at %d: %v", pick.index, err)
			}
			if got := f.AppliedIndex(); got != pick.index {
				t.Fatalf("after Restore: AppliedIndex %d, want %d", got, pick.index)
			}
			t.Logf("restored the snapshot at %d while at %d", pick.index, pos)
			pos = int(pick.index)
			restores++
		}
	}
	for _, s := range snaps {
		if s.left > 0 {
			s.left = 0
			close(s.release)
		}
	}
	persistWG.Wait()
	close(rr.stop)
	for i, w := range waits {
		checks := w()
		if checks == 0 {
			t.Errorf("reader %d made no checks", i)
		}
		t.Logf("reader %d: %d checks", i, checks)
	}
	if p := fatal.Load(); p != nil {
		t.Fatalf("OnFatal: %v", *p)
	}
	if restores != len(restoreAt) {
		t.Errorf("%d restores, want %d", restores, len(restoreAt))
	}
	if got := f.AppliedIndex(); got != uint64(n) {
		t.Fatalf("final AppliedIndex %d, want %d", got, n)
	}
	if got := snapshotBytes(t, f); !bytes.Equal(got, refFinal) {
		t.Errorf("final snapshot (%d bytes) differs from the reference's (%d bytes)", len(got), len(refFinal))
	}

	// Each persisted snapshot is byte for byte the state at its index (a
	// second FSM fed the same log up to there), and restores to it.
	slices.SortFunc(snaps, func(a, b *raceSnap) int { return int(a.index) - int(b.index) })
	check := New(Options{ChecksumHistory: 8})
	fed := 0
	for _, s := range snaps {
		t.Run(fmt.Sprintf("snapshot@%d", s.index), func(t *testing.T) {
			if s.err != nil {
				t.Fatalf("persist: %v", s.err)
			}
			check.ApplyBatch(logs[fed:s.index])
			fed = int(s.index)
			if want := snapshotBytes(t, check); !bytes.Equal(s.data, want) {
				t.Fatalf("persisted %d bytes differ from the %d bytes of the state at index %d", len(s.data), len(want), s.index)
			}
			g := New(Options{})
			if err := g.Restore(io.NopCloser(bytes.NewReader(s.data))); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got := snapshotBytes(t, g); !bytes.Equal(got, s.data) {
				t.Errorf("restored state snapshots to %d bytes, want the %d persisted", len(got), len(s.data))
			}
			if got, want := raceObserve(t, g), views[s.index]; !reflect.DeepEqual(got, want) {
				t.Errorf("restored state answers\n%+v\nwant\n%+v", got, want)
			}
		})
	}
	if len(snaps) < 4 {
		t.Errorf("%d snapshots taken, want at least 4", len(snaps))
	}
	if t.Failed() {
		return
	}
	// Sanity: the log exercised what the readers were meant to see.
	final := views[n].stats
	var late uint64
	for _, ls := range final.Leaderboards {
		for _, ws := range ls.Windows {
			late += ws.LateDropped
		}
	}
	var expired bool
	for _, v := range views[1:] {
		if r := v.tops[1]; len(r.Items) > 0 && r.WindowStartMs > 1_700_000_000_000 {
			expired = true
		}
	}
	if final.Duplicates == 0 || final.RejectedStale == 0 || final.StaleEpoch == 0 || late == 0 || !expired {
		t.Errorf("log too tame: duplicates %d, rejected stale %d, stale epoch %d, late %d, 1m window slid %v",
			final.Duplicates, final.RejectedStale, final.StaleEpoch, late, expired)
	}
	if !strings.Contains(fmt.Sprint(views[n/2+1].errs), ErrUnknownLeaderboard.Error()) {
		t.Errorf("the drop at %d left %v", n/2+1, views[n/2+1].errs)
	}
}
