package fsm

import (
	"bytes"
	"io"
	"math"
	"testing"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// TestHugeDeltasRefused: deltas that would carry a count or an approximate
// total past the kept range are refused and counted, in every mode, on the
// all-time and sliding windows; nothing wraps, bounds hold, expiry does not
// panic, and the state survives a snapshot.
func TestHugeDeltasRefused(t *testing.T) {
	for _, mode := range []pb.Mode{pb.Mode_MODE_EXACT, pb.Mode_MODE_CMS, pb.Mode_MODE_SPACESAVING} {
		t.Run(mode.String(), func(t *testing.T) {
			lf := newFeeder(t)
			c := &pb.LeaderboardConfig{Name: "b", Incarnation: 1, Version: 1, Mode: mode, KMax: 1,
				Windows: []*pb.WindowSpec{{DurationMs: 2000, BucketMs: 1000}}}
			switch mode {
			case pb.Mode_MODE_CMS:
				c.Epsilon, c.Delta = 0.99, 0.9
			case pb.Mode_MODE_SPACESAVING:
				c.Capacity, c.FilterCells = 1, 1
			}
			if err := lf.config(c); err != nil {
				t.Fatal(err)
			}
			now := int64(1_700_000_000_000)
			var accepted, rejected uint64
			var want int64 // the true count: the sum of the accepted deltas
			big := []int64{math.MaxInt64, MaxDelta, MaxDelta, MaxDelta, MaxDelta, MaxDelta, MaxDelta, MaxDelta, MaxDelta, 5}
			for i, d := range big {
				r := lf.ingest(&pb.IngestEntry{LeaderTimeMs: now + int64(i)*500, Parts: []*pb.ProducerPart{
					part("", 0, 0, deltas("b", 1, ev{"x", d, 0}))}})
				accepted += r.Outcomes[0].Accepted
				rejected += r.Outcomes[0].Rejected
				if r.Outcomes[0].Accepted > 0 {
					want += d
				}
			}
			if rejected == 0 || accepted == 0 {
				t.Fatalf("accepted %d, rejected %d: want both", accepted, rejected)
			}
			cnt, err := lf.f.Count("b", "x", 0)
			if err != nil {
				t.Fatal(err)
			}
			if cnt.Lower > want || cnt.Upper < want || cnt.Upper < 0 {
				t.Fatalf("count %+v, true %d", cnt, want)
			}
			st := lf.f.Stats()
			if got := st.Leaderboards[0].RejectedOverflow; got != rejected {
				t.Fatalf("stats RejectedOverflow %d, want %d", got, rejected)
			}
			lf.tick(now + 20_000) // expires every bucket
			nf := New(Options{})
			if err := nf.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, lf.f)))); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if !bytes.Equal(snapshotBytes(t, nf), snapshotBytes(t, lf.f)) {
				t.Fatal("restored state differs")
			}
			// Both go on to the limit and must refuse the same deltas: the
			// restored one's range check starts from what it loaded.
			rf := &logFeeder{t: t, f: nf, index: lf.index}
			var refused uint64
			for i := range 40 {
				e := func() *pb.IngestEntry {
					return &pb.IngestEntry{LeaderTimeMs: now + 30_000 + int64(i)*500, Parts: []*pb.ProducerPart{
						part("", 0, 0, deltas("b", 1, ev{"x", MaxDelta, 0}))}}
				}
				a, b := lf.ingest(e()).Outcomes[0], rf.ingest(e()).Outcomes[0]
				if a.Accepted != b.Accepted || a.Rejected != b.Rejected {
					t.Fatalf("delta %d: outcome %v, restored %v", i, a, b)
				}
				refused += a.Rejected
			}
			if c, err := nf.Count("b", "x", 0); err != nil || refused == 0 || c.Upper > MaxCount || c.Lower < -MaxCount {
				t.Fatalf("after 40 more deltas of MaxDelta: count %+v (%v), %d refused", c, err, refused)
			}
			if !bytes.Equal(snapshotBytes(t, nf), snapshotBytes(t, lf.f)) {
				t.Fatal("restored state differs after more huge deltas")
			}
		})
	}
}

// TestDistinctAtIncarnation: the item counts the server's max_items check
// reads belong to one incarnation; a partition still holding an older one
// holds none of the newer one's items.
func TestDistinctAtIncarnation(t *testing.T) {
	lf := newFeeder(t)
	if err := lf.config(&pb.LeaderboardConfig{Name: "m", Incarnation: 3, Version: 1}); err != nil {
		t.Fatal(err)
	}
	lf.ingest(&pb.IngestEntry{LeaderTimeMs: 1_700_000_000_000, Parts: []*pb.ProducerPart{
		part("", 0, 0, deltas("m", 3, ev{"a", 1, 0}, ev{"b", 1, 0}))}})
	if got := lf.f.DistinctAt("m", 3); got != 2 {
		t.Fatalf("DistinctAt(3) = %d, want 2", got)
	}
	if got := lf.f.DistinctAt("m", 4); got != 0 || lf.f.ContainsAt("m", 4, "a") || !lf.f.ContainsAt("m", 3, "a") {
		t.Fatalf("incarnation 4: distinct %d, contains a %v", got, lf.f.ContainsAt("m", 4, "a"))
	}
}
