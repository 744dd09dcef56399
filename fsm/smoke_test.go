package fsm

import (
	"bytes"
	"io"
	"testing"
	"time"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

func TestSmoke(t *testing.T) {
	lf := newFeeder(t)
	base := int64(1_700_000_000_000)
	if err := lf.config(DefaultLeaderboard(1)); err != nil {
		t.Fatal(err)
	}
	lf.tick(base)
	res := lf.ingest(&pb.IngestEntry{LeaderTimeMs: base + 1000, Parts: []*pb.ProducerPart{
		part("p", 1, 1, deltas("default", 1, ev{"a", 3, 0}, ev{"b", 5, 0}, ev{"c", 1, 0})),
	}})
	if got := res.Outcomes[0].Accepted; got != 3 {
		t.Fatalf("accepted %d", got)
	}
	r, err := lf.f.TopK("default", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Items) != 2 || r.Items[0] != ex("b", 5) || r.Items[1] != ex("a", 3) {
		t.Fatalf("top %+v", r.Items)
	}
	// duplicate
	res = lf.ingest(&pb.IngestEntry{LeaderTimeMs: base + 2000, Parts: []*pb.ProducerPart{
		part("p", 1, 1, deltas("default", 1, ev{"a", 3, 0})),
	}})
	if res.Outcomes[0].Status != pb.PartStatus_PART_STATUS_DUPLICATE || res.Outcomes[0].Accepted != 3 {
		t.Fatalf("dup outcome %+v", res.Outcomes[0])
	}
	// slide the 1m window past
	lf.tick(base + ms(2*time.Minute))
	r, _ = lf.f.TopK("default", time.Minute, 10)
	if len(r.Items) != 0 {
		t.Fatalf("1m after expiry %+v", r.Items)
	}
	r, _ = lf.f.TopK("default", time.Hour, 10)
	if len(r.Items) != 3 {
		t.Fatalf("1h %+v", r.Items)
	}
	snap := snapshotBytes(t, lf.f)
	f2 := New(Options{})
	if err := f2.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, f2), snap) {
		t.Fatal("restored snapshot differs")
	}
	r2, _ := f2.TopK("default", time.Hour, 10)
	if len(r2.Items) != 3 || r2.Items[0] != ex("b", 5) {
		t.Fatalf("restored %+v", r2.Items)
	}
}
