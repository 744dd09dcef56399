package main

import (
	"runtime"
	"testing"
)

func TestSetProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	base := runtime.GOMAXPROCS(0)
	t.Setenv("GOMAXPROCS", "")
	setProcs(0)
	if got := runtime.GOMAXPROCS(0); got != 2*base {
		t.Fatalf("default: GOMAXPROCS %d, want %d", got, 2*base)
	}
	setProcs(3)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("--procs 3: GOMAXPROCS %d", got)
	}
	t.Setenv("GOMAXPROCS", "1")
	setProcs(5)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("with GOMAXPROCS set: %d, want it left at 3", got)
	}
}
