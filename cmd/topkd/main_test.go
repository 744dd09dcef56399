package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
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

func TestPprofMux(t *testing.T) {
	srv := httptest.NewServer(pprofMux())
	defer srv.Close()
	for path, want := range map[string]string{"/debug/pprof/": "goroutine", "/debug/pprof/goroutine?debug=1": "goroutine profile"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
}
