package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// run executes topkctl with args against addr and returns stdout.
func run(t *testing.T, addr string, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(strings.NewReader(stdin), &out, &errOut)
	root := a.root()
	root.SetArgs(append([]string{"--addr", addr, "--timeout", "20s"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, err := run(t, addr, "", args...)
	if err != nil {
		t.Fatalf("topkctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// flightsCSV writes a small file shaped like the flights data set:
// ORD-ATL 7 flights, LAX-SFO 5, JFK-BOS 3, SEA-DEN 1.
func flightsCSV(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("time,origin,destination,delay_min,distance_mi\n")
	base := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	i := 0
	for route, n := range map[[2]string]int{{"ORD", "ATL"}: 7, {"LAX", "SFO"}: 5, {"JFK", "BOS"}: 3, {"SEA", "DEN"}: 1} {
		for range n {
			fmt.Fprintf(&b, "%s,%s,%s,%d,100\n", base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339), route[0], route[1], i-3)
			i++
		}
	}
	path := filepath.Join(t.TempDir(), "flights.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var spaces = regexp.MustCompile(`[ \t]+`)

// rows returns the table lines of out with runs of blanks squeezed.
func rows(out string) []string {
	var r []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		r = append(r, strings.TrimSpace(spaces.ReplaceAllString(l, " ")))
	}
	return r
}

func TestIngestFlightsCSVThenTop(t *testing.T) {
	node := newTestNode(t)
	path := flightsCSV(t)
	out := mustRun(t, node.Addr, "ingest", path, "--item-col", "origin+destination", "--item-sep", "-",
		"--time-col", "time", "--batch", "4", "--producers", "3", "--progress=false")
	for _, want := range []string{"sent 16 events in 4 batches", "accepted 16", "duplicates 0", "rejected 0", "events/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("ingest summary %q lacks %q", out, want)
		}
	}
	out = mustRun(t, node.Addr, "top", "--k", "3", "--consistency", "linearizable")
	got := rows(out)
	want := []string{"RANK ID COUNT", "1 ORD-ATL 7", "2 LAX-SFO 5", "3 JFK-BOS 3"}
	if len(got) != 5 || !strings.HasPrefix(got[0], "leaderboard default, window all, consistency linearizable") ||
		strings.Join(got[1:], "|") != strings.Join(want, "|") {
		t.Errorf("top output:\n%s\nwant a header line and rows %q", out, want)
	}
	out = mustRun(t, node.Addr, "top", "--k", "2", "--consistency", "linearizable", "--json")
	if !strings.Contains(out, `"id": "ORD-ATL"`) || !strings.Contains(out, `"consistency": "linearizable"`) {
		t.Errorf("top --json:\n%s", out)
	}
	out = mustRun(t, node.Addr, "count", "SEA-DEN", "--consistency", "linearizable")
	if !strings.HasPrefix(out, "SEA-DEN\t1\t") {
		t.Errorf("count output %q, want SEA-DEN 1", out)
	}
}

func TestIngestGzipNDJSONFromStdinWithEventTimeLeaderboard(t *testing.T) {
	node := newTestNode(t)
	out := mustRun(t, node.Addr, "leaderboard", "create", "retail", "--windows", "1h,1d", "--k-max", "50")
	if !strings.Contains(out, "created leaderboard retail") || !strings.Contains(out, "windows      all,1h,1d") {
		t.Errorf("create output:\n%s", out)
	}
	now := time.Now().UnixMilli()
	var raw bytes.Buffer
	zw := gzip.NewWriter(&raw)
	fmt.Fprintf(zw, "{\"code\":\"A1\",\"qty\":5,\"ts\":%d}\n\n{\"code\":\"B2\",\"qty\":\"2\",\"ts\":%d}\n", now, now)
	fmt.Fprintf(zw, "{\"code\":\"A1\",\"qty\":-1,\"ts\":%d}\n{\"code\":\"C3\",\"qty\":0,\"ts\":%d}\n", now, now)
	zw.Close()
	out, err := run(t, node.Addr, raw.String(), "ingest", "--leaderboard", "retail", "--item-col", "code",
		"--count-col", "qty", "--time-col", "ts", "--time-format", "unix-ms", "--progress=false")
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	if !strings.Contains(out, "sent 3 events") || !strings.Contains(out, "accepted 3") {
		t.Errorf("ingest summary %q, want 3 events sent and accepted (the zero weight skipped)", out)
	}
	out = mustRun(t, node.Addr, "top", "--leaderboard", "retail", "--window", "1h", "--consistency", "linearizable")
	if got := rows(out); len(got) != 4 || got[2] != "1 A1 4" || got[3] != "2 B2 2" {
		t.Errorf("top of retail 1h:\n%s\nwant A1 4 then B2 2", out)
	}
	out = mustRun(t, node.Addr, "leaderboard", "describe", "retail")
	if !strings.Contains(out, "accepted events: 3") {
		t.Errorf("describe:\n%s", out)
	}
	out = mustRun(t, node.Addr, "leaderboard", "list")
	if !strings.Contains(out, "retail") || !strings.Contains(out, "default") {
		t.Errorf("list:\n%s", out)
	}
	mustRun(t, node.Addr, "leaderboard", "drop", "retail")
	if _, err := run(t, node.Addr, "", "top", "--leaderboard", "retail"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("top of a dropped leaderboard: err = %v, want not_found", err)
	}
}

func TestIngestReportsBadRecords(t *testing.T) {
	node := newTestNode(t)
	path := filepath.Join(t.TempDir(), "bad.csv")
	os.WriteFile(path, []byte("item,time\na,2001-01-01T00:00:00Z\nb,yesterday\nc,2001-01-01T00:00:00Z\n"), 0o644)
	_, err := run(t, node.Addr, "", "ingest", path, "--time-col", "time", "--progress=false")
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "yesterday") {
		t.Errorf("err = %v, want it to name line 3 and the bad value", err)
	}
	out := mustRun(t, node.Addr, "ingest", path, "--time-col", "time", "--skip-invalid", "--progress=false")
	if !strings.Contains(out, "sent 2 events") || !strings.Contains(out, "skipped 1 invalid records") {
		t.Errorf("summary %q, want 2 sent and 1 skipped", out)
	}
	if _, err := run(t, node.Addr, "", "ingest", path, "--item-col", "sku", "--progress=false"); err == nil ||
		!strings.Contains(err.Error(), `column "sku" is not in the header`) {
		t.Errorf("missing column: err = %v", err)
	}
}

func TestStatusAndBench(t *testing.T) {
	node := newTestNode(t)
	out := mustRun(t, node.Addr, "status")
	if !strings.Contains(out, "node1 (ready)") || !strings.Contains(out, "PARTITION") || len(rows(out)) < 10 {
		t.Errorf("status:\n%s", out)
	}
	out = mustRun(t, node.Addr, "bench", "--events", "3000", "--items", "50", "--producers", "2", "--batch", "500",
		"--query-rate", "100", "--query-k", "5", "--progress=false")
	for _, want := range []string{"acknowledged  3000 events in 6 batches", "accepted 3000", "ack latency", "client CPU"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench report lacks %q:\n%s", want, out)
		}
	}
	// Through the client's queue: batches of 500 per leader (one node leads all).
	out = mustRun(t, node.Addr, "bench", "--events", "3000", "--items", "50", "--producers", "2", "--batch", "500",
		"--batch-per-leader", "--query-rate", "0", "--progress=false", "--json")
	var rep struct {
		Events            uint64 `json:"events_acknowledged"`
		Accepted, Batches uint64
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Events != 3000 || rep.Accepted != 3000 || rep.Batches < 6 || rep.Batches > 8 {
		t.Errorf("bench --batch-per-leader: %+v (%v), want 3000 events accepted in 6 to 8 batches (the last of each producer may be partial):\n%s", rep, err, out)
	}
	out = mustRun(t, node.Addr, "count", "item-0", "--consistency", "linearizable")
	if strings.HasPrefix(out, "item-0\t0\t") {
		t.Errorf("the most frequent Zipf item has no count: %q", out)
	}
}

// The cluster commands on one node: nothing to rebalance, the node has
// joined (it holds every replica), a stranger has not, replicas agree.
func TestClusterCommandsOnOneNode(t *testing.T) {
	node := newTestNode(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rebalance", "--dry-run"}, "balanced: nothing to move"},
		{[]string{"rebalance"}, "balanced: nothing to move"},
		{[]string{"join", "node1"}, "node1 joined in"},
		{[]string{"verify"}, "replicas agree"},
	} {
		if out := mustRun(t, node.Addr, c.args...); !strings.Contains(out, c.want) {
			t.Errorf("%v:\n%s\nwant %q", c.args, out, c.want)
		}
	}
	out, err := run(t, node.Addr, "", "join", "ghost", "--wait", "500ms")
	if err == nil || !strings.Contains(err.Error(), "not a member yet") {
		t.Errorf("join ghost: %v\n%s", err, out)
	}
}

func TestBadAddressFailsClearly(t *testing.T) {
	_, err := run(t, "127.0.0.1:1", "", "status", "--timeout", "200ms")
	if err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Errorf("err = %v, want unavailable", err)
	}
}

// TestProgressLinesWhenNotATerminal: without a terminal, ingest progress is
// plain periodic lines, and stopping it ends them.
func TestProgressLinesWhenNotATerminal(t *testing.T) {
	var buf syncBuffer
	if isTerminal(&buf) {
		t.Fatal("a buffer is not a terminal")
	}
	stats := &ingestStats{sent: 3000, batches: 3}
	stop := progressLines(&buf, stats, 10*time.Millisecond)
	time.Sleep(60 * time.Millisecond)
	stop()
	n := strings.Count(buf.String(), "\n")
	if n == 0 || !strings.Contains(buf.String(), "3000 events in 3 batches acknowledged") {
		t.Fatalf("progress output %q", buf.String())
	}
	time.Sleep(30 * time.Millisecond)
	if strings.Count(buf.String(), "\n") != n {
		t.Fatal("lines after stop")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverCPU reads the node's process_cpu_seconds_total for bench's "server
// CPU" line; an address without it reports false.
func TestServerCPU(t *testing.T) {
	node := newTestNode(t)
	a := newApp(nil, io.Discard, io.Discard)
	a.addr = node.Addr
	if cpu, ok := a.serverCPU(t.Context()); !ok || cpu <= 0 {
		t.Fatalf("serverCPU = %v, %v; want the node's CPU time so far", cpu, ok)
	}
	a.addr = "127.0.0.1:1"
	if _, ok := a.serverCPU(t.Context()); ok {
		t.Fatal("serverCPU succeeded against an address with no node")
	}
}
