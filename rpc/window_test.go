package rpc

import (
	"testing"
	"time"
)

func TestWindowOfStatesNoTimeBeforeAnyClock(t *testing.T) {
	if w := windowOf(time.Hour, -3_540_000, 0); w.Start != "" || w.End != "" || w.Type != "sliding" {
		t.Fatalf("no clock yet: %+v, want a sliding window without start or end", w)
	}
	w := windowOf(time.Hour, 1_700_000_000_000-3_600_000, 1_700_000_000_000)
	if w.Start != "2023-11-14T21:13:20Z" || w.End != "2023-11-14T22:13:20Z" {
		t.Fatalf("%+v", w)
	}
	if w := windowOf(0, 0, 1_700_000_000_000); w.Type != "global" || w.Start != "" || w.End == "" {
		t.Fatalf("all: %+v", w)
	}
}
