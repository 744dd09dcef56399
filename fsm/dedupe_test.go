package fsm

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// TestProducerOutcomesCompact: a producer row that starts with a few inline
// outcomes answers and snapshots exactly like one that holds the full ring
// from the start, across the switch, slot reuse (sequences 256 apart) and
// gaps.
func TestProducerOutcomesCompact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		compact := &producer{id: "p"}
		full := &producer{id: "p", ring: new([dedupeWindow]*pb.Outcome)}
		var seq uint64
		for i := range rapid.IntRange(1, 60).Draw(t, "records") {
			switch rapid.IntRange(0, 3).Draw(t, "step") {
			case 0:
				seq += uint64(rapid.IntRange(1, 3).Draw(t, "small"))
			case 1:
				seq += dedupeWindow + uint64(rapid.IntRange(-2, 2).Draw(t, "wrap"))
			case 2:
				// an older sequence inside the window, possibly already seen
				if seq > 0 {
					seq -= uint64(rapid.IntRange(0, int(min(seq-1, 20))).Draw(t, "back"))
				}
			default:
				seq++
			}
			seq = max(seq, 1)
			for _, p := range []*producer{compact, full} {
				if p.any && seq <= p.high && p.high-seq >= dedupeWindow {
					continue // too old: check() refuses it before record
				}
				p.record(seq, &pb.Outcome{Sequence: seq, Accepted: uint64(i)})
			}
		}
		lo := uint64(0)
		if compact.high > dedupeWindow+5 {
			lo = compact.high - dedupeWindow - 5
		}
		for s := lo; s <= compact.high+2; s++ {
			a, b := compact.outcome(s), full.outcome(s)
			if (a == nil) != (b == nil) || (a != nil && a.Accepted != b.Accepted) {
				t.Fatalf("sequence %d: compact %v, ring %v", s, a, b)
			}
		}
		if !proto.Equal(compact.state(), full.state()) {
			t.Fatalf("snapshots differ:\n%v\n%v", compact.state(), full.state())
		}
		if len(compact.few) > maxFewOutcomes {
			t.Fatalf("%d inline outcomes", len(compact.few))
		}
	})
}
