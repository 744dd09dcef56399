package client

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/ring"
)

func testRoutes(leaders ...string) *routes {
	ns := newNodeSet(http.DefaultClient, []string{"http://a", "http://b"})
	return newRoutes(ns, leaders, &topkv1.IngestLimits{MaxBatchEvents: 1000, MaxItemBytes: 16,
		MaxFutureSkewMs: (10 * time.Minute).Milliseconds(), MaxEventCount: 1 << 40})
}

func TestSplitGroupsByLeaderNode(t *testing.T) {
	r := testRoutes("http://a", "http://b", "http://a", "http://b")
	now := time.Now()
	var events []Event
	for i := range 200 {
		events = append(events, Event{Item: fmt.Sprintf("i%d", i)})
	}
	parts := r.split("", events, now)
	if len(parts) != 2 {
		t.Fatalf("%d parts, want one per leader node (2)", len(parts))
	}
	n := 0
	for _, p := range parts {
		for _, e := range p.events {
			if want := r.addrs[ring.Partition("default", e.Item, 4)]; p.addr != want {
				t.Fatalf("%q in the part for %s, its partition is led by %s", e.Item, p.addr, want)
			}
		}
		n += len(p.events)
	}
	if n != len(events) {
		t.Fatalf("parts hold %d events, want %d", n, len(events))
	}
	// One leader for every partition: one part, the whole batch.
	if parts := testRoutes("http://a", "http://a", "http://a", "http://a").split("", events, now); len(parts) != 1 || len(parts[0].events) != 200 {
		t.Fatalf("single leader: %d parts, want 1 of 200 events", len(parts))
	}
}

func TestSplitSendsWholeWhatANodeMightRefuse(t *testing.T) {
	r := testRoutes("http://a", "http://b", "http://a", "http://b")
	now := time.Now()
	ok := Event{Item: "fine"}
	for name, e := range map[string]Event{
		"empty item":       {Item: ""},
		"long item":        {Item: strings.Repeat("x", 17)},
		"invalid UTF-8":    {Item: "\xff"},
		"negative count":   {Item: "x", Count: -1},
		"huge count":       {Item: "x", Count: 1<<40 + 1},
		"dimensions":       {Item: "x", Dimensions: map[string]string{"k": "v"}},
		"before 1970":      {Item: "x", Time: time.UnixMilli(5)},
		"near the horizon": {Item: "x", Time: now.Add(6 * time.Minute)},
	} {
		if parts := r.split("", []Event{ok, e}, now); parts != nil {
			t.Errorf("%s: split into %d parts, want the batch sent whole", name, len(parts))
		}
	}
	if parts := r.split("", []Event{ok, {Item: "y", Time: now.Add(4 * time.Minute), Count: 3}}, now); parts == nil {
		t.Error("valid events: not split")
	}
	var many []Event
	for i := range 50 {
		many = append(many, Event{Item: fmt.Sprintf("i%d", i)})
	}
	if parts := testRoutes("http://a", "", "http://a", "http://b").split("", many, now); parts != nil {
		t.Error("a partition without a known leader: split, want whole")
	}
	var nilRoutes *routes
	if nilRoutes.split("", []Event{ok}, now) != nil {
		t.Error("no routes: split")
	}
}
