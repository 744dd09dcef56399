package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Reopening a replica replays its own data into a new state machine,
// counting nothing twice; reopening with drop leaves it empty, on disk too.
func TestReopenPartition(t *testing.T) {
	dir := t.TempDir()
	n := openTestNode(t, dir)
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]int64{}
	for b := range 20 {
		var evs []Event
		for i := range 100 {
			item := fmt.Sprintf("i%d", (b*7+i)%50)
			evs = append(evs, Event{Item: item, Count: 1, TimeMs: time.Now().UnixMilli()})
			want[item]++
		}
		if _, err := n.Ingest(ctx, IngestRequest{Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	// A snapshot in the middle: the reopen restores it, then replays the rest.
	if err := n.parts[0].group().raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "i1", Count: 5}}}); err != nil {
		t.Fatal(err)
	}
	want["i1"] += 5
	for p := range n.parts {
		if err := n.reopenPartition(p, false); err != nil {
			t.Fatal(err)
		}
		if err := n.waitLeader(ctx, n.parts[p].group()); err != nil {
			t.Fatal(err)
		}
	}
	for item, c := range want {
		got, err := n.Count(ctx, "default", item, 0, Linearizable)
		if err != nil || got.Count != c {
			t.Fatalf("after reopen: %s = %d (%v), want %d", item, got.Count, err, c)
		}
	}

	p := 0
	if err := n.reopenPartition(p, true); err != nil {
		t.Fatal(err)
	}
	r := n.parts[p]
	if last, _ := r.group().store.LastIndex(); last != 0 || r.fsm().AcceptedEvents() != 0 {
		t.Errorf("after drop: last index %d, %d events", last, r.fsm().AcceptedEvents())
	}
	if snaps, _ := filepath.Glob(filepath.Join(dir, "p0", "snapshots", "*")); len(snaps) != 0 {
		t.Errorf("after drop: snapshots %v", snaps)
	}
	if _, err := os.Stat(filepath.Join(dir, "p1", "snapshots")); err != nil {
		t.Errorf("partition 1's snapshots: %v", err)
	}
}
