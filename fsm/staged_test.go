package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// TestStagedApplyMatchesPlain feeds random logs (frees and id reuse within
// a part, max_items and overflow rejections, both clocks, several
// leaderboards per part) to the staged apply and to the plain loop: the
// snapshots and outcomes must be identical.
func TestStagedApplyMatchesPlain(t *testing.T) {
	for seed := range 300 {
		run := func(staged bool) ([]byte, []string) {
			lf := newTunedFeeder(t, func(tu *tuning) { tu.unstaged = !staged })
			r := rand.New(rand.NewPCG(uint64(seed), 3))
			cfgs := []*pb.LeaderboardConfig{
				{Name: "a", Incarnation: 1, Version: 1, KMax: 3},
				{Name: "b", Incarnation: 1, Version: 1, KMax: 2, MaxItems: 3,
					Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}},
				{Name: "c", Incarnation: 1, Version: 1, KMax: 2, Clock: pb.Clock_CLOCK_EVENT,
					Windows: []*pb.WindowSpec{{DurationMs: 3000, BucketMs: 1000}}},
			}
			for _, c := range cfgs {
				if err := lf.config(c); err != nil {
					t.Fatal(err)
				}
			}
			var outs []string
			now := int64(100_000)
			for e := 0; e < 40; e++ {
				now += int64(r.IntN(1500))
				var parts []*pb.ProducerPart
				for p := 0; p < 1+r.IntN(3); p++ {
					var ds []*pb.LeaderboardDeltas
					for b := 0; b < 1+r.IntN(3); b++ {
						var evs []ev
						for k := 0; k < r.IntN(8); k++ {
							d := int64(r.IntN(5) - 2)
							if r.IntN(20) == 0 {
								d = MaxDelta
							}
							ts := int64(0)
							if r.IntN(2) == 0 {
								ts = now/1000 - int64(r.IntN(6))
							}
							evs = append(evs, ev{fmt.Sprintf("i%d", r.IntN(5)), d, ts})
						}
						ds = append(ds, deltas(cfgs[r.IntN(3)].Name, 1, evs...))
					}
					parts = append(parts, part("", 0, 0, ds...))
				}
				res := lf.ingest(&pb.IngestEntry{LeaderTimeMs: now, Parts: parts})
				outs = append(outs, fmt.Sprint(res.Outcomes))
			}
			return snapshotBytes(t, lf.f), outs
		}
		s1, o1 := run(true)
		s2, o2 := run(false)
		if !bytes.Equal(s1, s2) || fmt.Sprint(o1) != fmt.Sprint(o2) {
			t.Fatalf("seed %d: staged and unstaged diverge", seed)
		}
	}
}
