package fsm

import (
	"bytes"
	"fmt"
	"hash/crc64"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Replicas must agree byte for byte: these tests feed the same generated log
// to several FSMs, applied in different batchings or through a snapshot and
// restore, and compare snapshots, checksum digests and answers.

// ---- log generator ----

type detBoard struct {
	cfg     *pb.LeaderboardConfig // as last sent
	dropped bool
}

type detProducer struct {
	id    string
	epoch uint64
	next  uint64
	sent  []*pb.ProducerPart // this epoch's parts, for resends
}

type detGen struct {
	r        *rand.Rand
	nowMs    int64
	boards   []*detBoard
	prods    []*detProducer
	items    []string
	unique   int
	checksum uint64
	log      []*raft.Log
}

func detInitialConfigs() []*pb.LeaderboardConfig {
	return []*pb.LeaderboardConfig{
		{Name: "wall", Incarnation: 1, Version: 1, KMax: 5,
			Windows: []*pb.WindowSpec{{DurationMs: 10_000, BucketMs: 1000}, {DurationMs: 60_000, BucketMs: 5000}}},
		{Name: "event", Incarnation: 1, Version: 1, Clock: pb.Clock_CLOCK_EVENT, AllowedLatenessMs: 3000, KMax: 8,
			Windows: []*pb.WindowSpec{{DurationMs: 20_000, BucketMs: 1000}, {DurationMs: 120_000}}},
		{Name: "capped", Incarnation: 1, Version: 1, MaxItems: 6, KMax: 4,
			Windows: []*pb.WindowSpec{{DurationMs: 30_000, BucketMs: 1000}}},
		{Name: "ev0", Incarnation: 1, Version: 1, Clock: pb.Clock_CLOCK_EVENT,
			Windows: []*pb.WindowSpec{{DurationMs: 60_000}, {DurationMs: 600_000}}},
		DefaultLeaderboard(1),
	}
}

// detGenLog generates n raft log entries (indexes 1..n) from a seed.
func detGenLog(seed uint64, n int) []*raft.Log {
	g := &detGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), nowMs: 1_700_000_000_000 + int64(seed)*7919}
	for i := range 40 {
		g.items = append(g.items, fmt.Sprintf("it%02d", i))
	}
	for _, id := range []string{"pa", "pb", "pc"} {
		g.prods = append(g.prods, &detProducer{id: id, epoch: 1, next: 1})
	}
	for _, c := range detInitialConfigs() {
		g.boards = append(g.boards, &detBoard{cfg: c})
		g.command(mustEncode(EncodeConfig(c)))
	}
	for len(g.log) < n {
		g.step()
	}
	return g.log[:n]
}

func (g *detGen) command(data []byte) {
	g.log = append(g.log, &raft.Log{Index: uint64(len(g.log) + 1), Term: 1, Type: raft.LogCommand, Data: data})
}

// leaderTime is the entry's leader clock: usually now, sometimes behind (clamped by the FSM).
func (g *detGen) leaderTime() int64 {
	if g.r.IntN(10) == 0 {
		return g.nowMs - g.r.Int64N(5000)
	}
	return g.nowMs
}

func (g *detGen) step() {
	g.nowMs += g.r.Int64N(1500)
	if g.r.IntN(40) == 0 {
		g.nowMs += 30_000 + g.r.Int64N(170_000) // let windows expire
	}
	switch x := g.r.IntN(100); {
	case x < 58:
		g.ingest()
	case x < 72:
		g.tick()
	case x < 78:
		g.checksum++
		g.command(mustEncode(EncodeChecksum(&pb.Checksum{Id: g.checksum, LeaderTimeMs: g.leaderTime()})))
	case x < 83:
		g.config()
	case x < 84:
		if b := g.pickLive(); b != nil {
			b.dropped = true
			g.command(mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: b.cfg.Name, Incarnation: b.cfg.Incarnation})))
		}
	case x < 90:
		g.command(EncodeRaw(CommandType(100+g.r.IntN(100)), true, []byte("future")))
	default:
		typ := []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration}[g.r.IntN(3)]
		g.log = append(g.log, &raft.Log{Index: uint64(len(g.log) + 1), Term: 1, Type: typ})
	}
}

func (g *detGen) pickLive() *detBoard {
	var live []*detBoard
	for _, b := range g.boards {
		if !b.dropped {
			live = append(live, b)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[g.r.IntN(len(live))]
}

func (g *detGen) item() string {
	if g.r.IntN(12) == 0 {
		g.unique++
		return fmt.Sprintf("u%04d", g.unique) // new ids that die and free their slot
	}
	// skewed: low item numbers are hot
	return g.items[min(g.r.IntN(len(g.items)), g.r.IntN(len(g.items)))]
}

func (g *detGen) boardDeltas() *pb.LeaderboardDeltas {
	b := g.boards[g.r.IntN(len(g.boards))]
	d := &pb.LeaderboardDeltas{Leaderboard: b.cfg.Name, Incarnation: b.cfg.Incarnation}
	switch g.r.IntN(20) {
	case 0:
		d.Incarnation-- // stale
	case 1:
		d.Incarnation++ // not created yet
	case 2:
		d.Leaderboard = "nosuch"
	}
	withEvents := g.r.IntN(2) == 0
	nowS := g.nowMs / 1000
	for range 1 + g.r.IntN(8) {
		d.Items = append(d.Items, g.item())
		d.Deltas = append(d.Deltas, g.r.Int64N(10)-3) // negative and zero deltas too
		ts := int64(0)
		if g.r.IntN(3) != 0 {
			ts = nowS + g.r.Int64N(146) - 130 // mostly recent, some late, some ahead
		}
		d.EventTimesS = append(d.EventTimesS, ts)
		if withEvents {
			d.Events = append(d.Events, uint32(g.r.IntN(6)))
		}
	}
	return d
}

func (g *detGen) freshPart(id string, epoch, seq uint64) *pb.ProducerPart {
	p := &pb.ProducerPart{ProducerId: id, Epoch: epoch, Sequence: seq}
	for range 1 + g.r.IntN(2) {
		p.Boards = append(p.Boards, g.boardDeltas())
	}
	return p
}

func (g *detGen) ingest() {
	e := &pb.IngestEntry{LeaderTimeMs: g.leaderTime()}
	for range 1 + g.r.IntN(3) {
		if g.r.IntN(4) == 0 {
			e.Parts = append(e.Parts, g.freshPart("", 0, 0))
			continue
		}
		p := g.prods[g.r.IntN(len(g.prods))]
		switch x := g.r.IntN(100); {
		case x < 14 && len(p.sent) > 0: // retry of an earlier part: duplicate or too old
			e.Parts = append(e.Parts, proto.Clone(p.sent[g.r.IntN(len(p.sent))]).(*pb.ProducerPart))
		case x < 19: // far below the window: jump ahead first when the sequence is young
			if p.next < 300 {
				p.next += 300
				part := g.freshPart(p.id, p.epoch, p.next)
				p.next++
				p.sent = append(p.sent, part)
				e.Parts = append(e.Parts, part)
			}
			e.Parts = append(e.Parts, g.freshPart(p.id, p.epoch, p.next-1-dedupeWindow-g.r.Uint64N(50)))
		case x < 24 && p.epoch > 1:
			e.Parts = append(e.Parts, g.freshPart(p.id, p.epoch-1, p.next))
		case x < 26:
			p.epoch++
			p.next, p.sent = 1, nil
			fallthrough
		default:
			if g.r.IntN(8) == 0 {
				p.next += 1 + g.r.Uint64N(4) // gap
			}
			part := g.freshPart(p.id, p.epoch, p.next)
			p.next++
			p.sent = append(p.sent, part)
			if len(p.sent) > 400 {
				p.sent = p.sent[1:]
			}
			e.Parts = append(e.Parts, part)
		}
	}
	g.command(mustEncode(EncodeIngest(e)))
}

func (g *detGen) tick() {
	t := &pb.Tick{LeaderTimeMs: g.leaderTime()}
	for _, b := range g.boards {
		if b.cfg.Clock == pb.Clock_CLOCK_EVENT && g.r.IntN(2) == 0 {
			w := &pb.Watermark{Leaderboard: b.cfg.Name, Incarnation: b.cfg.Incarnation, MaxEventTimeMs: g.nowMs - 20_000 + g.r.Int64N(25_000)}
			if g.r.IntN(10) == 0 {
				w.Incarnation++
			}
			t.Watermarks = append(t.Watermarks, w)
		}
	}
	g.command(mustEncode(EncodeTick(t)))
}

func (g *detGen) config() {
	b := g.boards[g.r.IntN(len(g.boards))]
	c := proto.Clone(b.cfg).(*pb.LeaderboardConfig)
	switch x := g.r.IntN(100); {
	case b.dropped && x < 60: // re-create after a drop
		c.Incarnation++
		c.Version = 1
		b.cfg, b.dropped = c, false
	case b.dropped: // the dropped incarnation itself: rejected
	case x < 45: // limits update
		c.Version++
		c.KMax = uint32(1 + g.r.IntN(12))
		if g.r.IntN(2) == 0 {
			c.MaxItems = uint64(g.r.IntN(10))
		}
		if c.Clock == pb.Clock_CLOCK_EVENT {
			c.AllowedLatenessMs = g.r.Int64N(5000)
		}
		b.cfg = c
	case x < 55: // replay of the current version
	case x < 70: // fresh incarnation
		c.Incarnation++
		c.Version = 1
		b.cfg = c
	case x < 80: // stale incarnation
		c.Incarnation--
	case x < 90: // windows cannot change in place
		c.Version++
		c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: 3_600_000})
	default: // invalid
		c.Version++
		c.Windows = []*pb.WindowSpec{{DurationMs: 1500}}
	}
	g.command(mustEncode(EncodeConfig(c)))
}

// ---- comparison helpers ----

func detResult(r interface{}) string {
	switch r := r.(type) {
	case nil:
		return "nil"
	case *IngestResult:
		var b bytes.Buffer
		for _, o := range r.Outcomes {
			fmt.Fprintf(&b, "[%v]", o)
		}
		return b.String()
	case error:
		return "error: " + r.Error()
	default:
		return fmt.Sprintf("%T %+v", r, r)
	}
}

// detApplyOneByOne applies entries with Apply, one at a time.
func detApplyOneByOne(f *FSM, logs []*raft.Log) []string {
	out := make([]string, len(logs))
	for i, l := range logs {
		out[i] = detResult(f.Apply(l))
	}
	return out
}

// detApplyBatches applies entries in random-size ApplyBatch calls.
func detApplyBatches(f *FSM, logs []*raft.Log, r *rand.Rand) []string {
	var out []string
	for len(logs) > 0 {
		n := min(len(logs), 1+r.IntN(1+r.IntN(64)))
		for _, res := range f.ApplyBatch(logs[:n]) {
			out = append(out, detResult(res))
		}
		logs = logs[n:]
	}
	return out
}

func detCompare(t *testing.T, what string, got, want *FSM) {
	t.Helper()
	if a, b := got.AppliedIndex(), want.AppliedIndex(); a != b {
		t.Fatalf("%s: applied index %d, want %d", what, a, b)
	}
	if a, b := snapshotBytes(t, got), snapshotBytes(t, want); !bytes.Equal(a, b) {
		t.Fatalf("%s: snapshots differ (%d and %d bytes)", what, len(a), len(b))
	}
	// [1:]: the checksum history is per replica (not in snapshots); callers compare it.
	if d := fzDiff(fzObserve(t, got)[1:], fzObserve(t, want)[1:]); d != "" {
		t.Fatalf("%s: answers differ:\n%s", what, d)
	}
}

func detSeeds() []uint64 {
	if testing.Short() {
		return []uint64{1, 2}
	}
	return []uint64{1, 2, 3, 4, 5}
}

func detLen() int {
	if testing.Short() {
		return 1500
	}
	return 4000
}

// detCoverage records which features a run exercised, so a generator that
// stops producing them fails the test instead of passing vacuously.
type detCoverage struct {
	freed, reused, late, maxItems bool
	lastFree                      map[*leaderboard]int
}

func (c *detCoverage) observe(f *FSM) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if c.lastFree == nil {
		c.lastFree = make(map[*leaderboard]int)
	}
	for _, lb := range f.st.boards {
		if e, ok := lb.counts.(*exactBoard); ok {
			n := len(e.free)
			if n > 0 {
				c.freed = true
			}
			if prev, ok := c.lastFree[lb]; ok && n < prev {
				c.reused = true
			}
			c.lastFree[lb] = n
			c.maxItems = c.maxItems || e.rejectedMI > 0
		}
		for _, l := range lb.late {
			c.late = c.late || l > 0
		}
	}
}

func detCheckCoverage(t *testing.T, f *FSM, cov *detCoverage) {
	t.Helper()
	s := f.Stats()
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"duplicates", s.Duplicates > 0}, {"too old", s.TooOld > 0}, {"stale epoch", s.StaleEpoch > 0},
		{"stale incarnation", s.RejectedStale > 0}, {"ignored commands", s.IgnoredCommands > 0},
		{"rejected configs", s.ConfigRejected > 0}, {"late events", cov.late}, {"max_items", cov.maxItems},
		{"checksums", len(f.Checksums()) > 0}, {"freed ids", cov.freed}, {"reused ids", cov.reused},
	} {
		if !c.ok {
			t.Errorf("the generated log never exercised %s (stats %+v)", c.name, s)
		}
	}
}

// TestDeterminismBatchSplit: one FSM applies the log one entry at a time, the
// other in random-size ApplyBatch calls; results, snapshots, digests and
// answers must agree at every batch boundary.
func TestDeterminismBatchSplit(t *testing.T) {
	for _, seed := range detSeeds() {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			logs := detGenLog(seed, detLen())
			one := New(Options{ChecksumHistory: 10_000})
			batched := New(Options{ChecksumHistory: 10_000})
			r := rand.New(rand.NewPCG(seed, 42))
			cov := &detCoverage{}
			for i, nb := 0, 0; i < len(logs); nb++ {
				n := min(len(logs)-i, 1+r.IntN(1+r.IntN(64)))
				got := detApplyBatches(batched, logs[i:i+n], r)
				for j, l := range logs[i : i+n] {
					want := detResult(one.Apply(l))
					if got[j] != want {
						t.Fatalf("entry %d: batched result %s, one-by-one %s", l.Index, got[j], want)
					}
					cov.observe(one)
				}
				i += n
				if nb%8 == 0 || i == len(logs) {
					detCompare(t, fmt.Sprintf("after index %d", i), batched, one)
					if a, b := batched.Checksums(), one.Checksums(); !slices.Equal(a, b) {
						t.Fatalf("after index %d: checksum records differ:\n got  %v\n want %v", i, a, b)
					}
				}
			}
			detCheckCoverage(t, one, cov)
			fzCheckAnswers(t, one)
		})
	}
}

// TestDeterminismRestoreThenContinue: a snapshot taken at a cut, persisted
// after the source kept applying (copy-on-write), restored into an FSM that
// held other state, then fed the rest of the log, ends byte-identical to an
// FSM that was never snapshotted, with the same digests after the cut.
func TestDeterminismRestoreThenContinue(t *testing.T) {
	for _, seed := range detSeeds() {
		logs := detGenLog(seed, detLen())
		r := rand.New(rand.NewPCG(seed, 7))
		never := New(Options{ChecksumHistory: 10_000})
		detApplyBatches(never, logs, r)
		for _, cut := range []int{0, 1 + r.IntN(len(logs)/3), len(logs)/2 + r.IntN(len(logs)/2)} {
			t.Run(fmt.Sprintf("seed=%d/cut=%d", seed, cut), func(t *testing.T) {
				src := New(Options{ChecksumHistory: 10_000})
				detApplyBatches(src, logs[:cut], r)
				atCut := snapshotBytes(t, src)
				snap, err := src.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				more := min(len(logs), cut+50)
				detApplyBatches(src, logs[cut:more], r) // must not leak into the frozen snapshot
				persisted := detPersist(t, snap, uint64(cut))
				if !bytes.Equal(persisted, atCut) {
					t.Fatalf("snapshot persisted after %d more entries differs from the state at the cut", more-cut)
				}
				dst := New(Options{ChecksumHistory: 10_000})
				detApplyBatches(dst, detGenLog(seed+1000, 300), r) // state to be replaced
				if err := fzRestore(dst, persisted); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if got := dst.AppliedIndex(); got != uint64(cut) {
					t.Fatalf("restored applied index %d, want %d", got, cut)
				}
				if got := snapshotBytes(t, dst); !bytes.Equal(got, atCut) {
					t.Fatal("restored FSM's snapshot differs from the one it restored")
				}
				detApplyBatches(dst, logs[cut:], r)
				detApplyBatches(src, logs[more:], r)
				detCompare(t, "restored vs never snapshotted", dst, never)
				detCompare(t, "snapshotted vs never snapshotted", src, never)
				var after []ChecksumRecord
				for _, c := range never.Checksums() {
					if c.Index > uint64(cut) {
						after = append(after, c)
					}
				}
				if got := dst.Checksums(); !slices.Equal(got, after) {
					t.Fatalf("digests after the cut:\n got  %v\n want %v", got, after)
				}
			})
		}
	}
}

func detPersist(t testing.TB, s raft.FSMSnapshot, index uint64) []byte {
	t.Helper()
	defer s.Release()
	store := raft.NewInmemSnapshotStore()
	sink, err := store.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	_, rc, err := store.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDeterminismDigestTracksState: two FSMs fed the same log except for one
// entry record different digests at the next checksum command; identical
// logs record equal ones; a digest is the CRC-64 of the canonical snapshot.
func TestDeterminismDigestTracksState(t *testing.T) {
	prefix := detGenLog(11, 400)
	base := int64(1_800_000_000_000)
	sec := base / 1000
	setup := [][]byte{
		mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "dg", Incarnation: 1, Version: 1, KMax: 3,
			Windows: []*pb.WindowSpec{{DurationMs: 60_000, BucketMs: 1000}}})),
		fzIngest(base, part("pd", 1, 1, deltas("dg", 1, ev{"a", 5, 0}, ev{"b", 3, sec}))),
	}
	ing := func(seq uint64, evs ...ev) []byte {
		return fzIngest(base+1000, part("pd", 1, seq, deltas("dg", 1, evs...)))
	}
	tests := []struct {
		name     string
		x, y     []byte // nil: a no-op log entry
		sameWant bool
	}{
		{"identical", ing(2, ev{"a", 1, sec}), ing(2, ev{"a", 1, sec}), true},
		{"identical no-ops", nil, nil, true},
		{"delta value", ing(2, ev{"a", 1, sec}), ing(2, ev{"a", 2, sec}), false},
		{"item", ing(2, ev{"a", 1, sec}), ing(2, ev{"c", 1, sec}), false},
		{"bucket", ing(2, ev{"a", 1, sec}), ing(2, ev{"a", 1, sec + 1}), false},
		{"sequence", ing(2, ev{"a", 1, sec}), ing(3, ev{"a", 1, sec}), false},
		{"cancelled delta vs nothing", ing(2, ev{"n", 1, sec}, ev{"n", -1, sec}), nil, false},
		{"duplicate vs nothing", ing(1, ev{"a", 1, sec}), nil, false},                               // it refreshes the producer's last-seen time
		{"duplicates with different content", ing(1, ev{"a", 1, sec}), ing(1, ev{"z", 9, 0}), true}, // content of a duplicate is never read
		{"log time", fzTick(base + 1000), fzTick(base + 1001), false},
		{"tombstone", mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: "never-existed", Incarnation: 1})), nil, false},
		{"ignored command", EncodeRaw(150, true, nil), nil, false},
		{"limits", mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "dg", Incarnation: 1, Version: 2, KMax: 4,
			Windows: []*pb.WindowSpec{{DurationMs: 60_000, BucketMs: 1000}}})), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			digest := func(variant []byte) (ChecksumRecord, []byte) {
				f := New(Options{})
				detApplyOneByOne(f, prefix)
				fzApply(t, f, setup...)
				if variant == nil {
					f.Apply(&raft.Log{Index: f.AppliedIndex() + 1, Term: 1, Type: raft.LogNoop})
				} else {
					fzApply(t, f, variant)
				}
				res := fzApply(t, f, mustEncode(EncodeChecksum(&pb.Checksum{Id: 77, LeaderTimeMs: base + 1000})))
				rec, ok := res[0].(ChecksumRecord)
				if !ok {
					t.Fatalf("checksum command returned %T %v", res[0], res[0])
				}
				if got := f.Checksums(); len(got) == 0 || got[len(got)-1] != rec {
					t.Fatalf("Checksums() = %v, want it to end with %v", got, rec)
				}
				snap := snapshotBytes(t, f)
				if got, want := rec.Digest, crc64.Checksum(snap, crc64.MakeTable(crc64.ECMA)); got != want {
					t.Fatalf("digest %016x, CRC-64 of the snapshot at the same index %016x", got, want)
				}
				return rec, snap
			}
			rx, sx := digest(tt.x)
			ry, sy := digest(tt.y)
			if rx.Index != ry.Index || rx.ID != 77 {
				t.Fatalf("records %+v and %+v, want the same index and id 77", rx, ry)
			}
			if same := rx.Digest == ry.Digest; same != tt.sameWant {
				t.Fatalf("digests %016x and %016x: equal = %v, want %v", rx.Digest, ry.Digest, same, tt.sameWant)
			}
			if same := bytes.Equal(sx, sy); same != tt.sameWant {
				t.Fatalf("snapshots equal = %v, want %v", same, tt.sameWant)
			}
		})
	}
}

// TestDeterminismChecksumMovesClockLikeTick: a checksum command advances log
// time, and with it the wall-clock windows, exactly as a tick without
// watermarks does; before the fix the windows lagged until the next entry.
func TestDeterminismChecksumMovesClockLikeTick(t *testing.T) {
	base := int64(1_800_000_000_000)
	setup := [][]byte{
		mustEncode(EncodeConfig(fzWallConfig())),
		fzIngest(base, part("", 0, 0, deltas("wall", 1, ev{"a", 2, 0}, ev{"b", 1, 0}))),
	}
	later := base + ms(2*time.Minute)
	withChecksum, withTick := New(Options{}), New(Options{})
	fzApply(t, withChecksum, setup...)
	fzApply(t, withTick, setup...)
	fzApply(t, withChecksum, mustEncode(EncodeChecksum(&pb.Checksum{Id: 1, LeaderTimeMs: later})))
	fzApply(t, withTick, fzTick(later))
	if a, b := snapshotBytes(t, withChecksum), snapshotBytes(t, withTick); !bytes.Equal(a, b) {
		t.Fatal("state after a checksum differs from the state after a tick at the same time")
	}
	r, err := withChecksum.TopK("wall", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Items) != 0 || r.WindowEndMs != later {
		t.Fatalf("1m window after the checksum: items %v ending %d, want none ending %d", r.Items, r.WindowEndMs, later)
	}
	// A delta older than the window is late at once, under either entry.
	late := fzIngest(later, part("", 0, 0, deltas("wall", 1, ev{"c", 1, base/1000 + 1})))
	rc := fzApply(t, withChecksum, late)[0].(*IngestResult)
	rt := fzApply(t, withTick, late)[0].(*IngestResult)
	if detResult(rc) != detResult(rt) || len(rc.Outcomes[0].Late) != 2 {
		t.Fatalf("late delta after checksum: %s; after tick: %s; want it late for both windows", detResult(rc), detResult(rt))
	}
}
