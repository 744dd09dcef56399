package fsm

import (
	"bytes"
	"fmt"
	"io"
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

// TestDedupeTableBounded: above maxProducers rows, the minute sweep evicts
// the least recently seen producers (ties by id) down to 90% of the cap,
// identically on every replica, and a snapshot-restored replica agrees.
func TestDedupeTableBounded(t *testing.T) {
	lf := newTunedFeeder(t, func(tu *tuning) { tu.maxProducers = 100 })
	if err := lf.config(DefaultLeaderboard(1)); err != nil {
		t.Fatal(err)
	}
	base := int64(1_700_000_000_000)
	for i := range 150 {
		lf.ingest(&pb.IngestEntry{LeaderTimeMs: base + int64(i), Parts: []*pb.ProducerPart{
			part(fmt.Sprintf("p%03d", i), 1, 1, deltas("default", 1, ev{"x", 1, 0}))}})
	}
	if n := len(lf.f.st.dedupe.producers); n != 150 {
		t.Fatalf("%d rows before the sweep", n)
	}
	lf.tick(base + 61_000) // crosses a log-time minute: the sweep runs
	tbl := lf.f.st.dedupe.producers
	if len(tbl) != 90 {
		t.Fatalf("%d rows after the sweep, want 90", len(tbl))
	}
	for i := range 150 {
		_, kept := tbl[fmt.Sprintf("p%03d", i)]
		if kept != (i >= 60) {
			t.Fatalf("producer %d kept=%v: the 60 least recently seen go", i, kept)
		}
	}
	// A retry of an evicted producer counts again; a kept one is a duplicate.
	r := lf.ingest(&pb.IngestEntry{LeaderTimeMs: base + 62_000, Parts: []*pb.ProducerPart{
		part("p000", 1, 1, deltas("default", 1, ev{"x", 1, 0})),
		part("p149", 1, 1, deltas("default", 1, ev{"x", 1, 0}))}})
	if r.Outcomes[0].Status != pb.PartStatus_PART_STATUS_APPLIED || r.Outcomes[1].Status != pb.PartStatus_PART_STATUS_DUPLICATE {
		t.Fatalf("after eviction: %v", r.Outcomes)
	}
	nf := New(Options{})
	if err := nf.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, lf.f)))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, nf), snapshotBytes(t, lf.f)) {
		t.Fatal("restored table differs")
	}
}
