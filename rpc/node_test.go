package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// TestMain fails the package when a test leaves goroutines behind: the node,
// its Raft groups, the HTTP servers and the clients' idle connections must
// all be stopped by the tests' cleanups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNode is a real single-node topkd (meta group and 4 partition groups
// on a loopback Raft port, data in t.TempDir) served by rpc.Handler on an
// httptest server that speaks HTTP/1.1 and unencrypted HTTP/2 (for gRPC).
type testNode struct {
	node *server.Node
	url  string
	http *http.Client // HTTP/1.1 client of the JSON API

	mu     sync.Mutex
	protos map[string]string // request Content-Type -> HTTP version last seen with it
}

// proto is the HTTP version of the last request sent with this Content-Type.
func (tn *testNode) proto(contentType string) string {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.protos[contentType]
}

func newTestNode(t testing.TB) *testNode {
	t.Helper()
	return newTestNodeWith(t, nil)
}

// newTestNodeWith is newTestNode with its configuration changed by edit.
func newTestNodeWith(t testing.TB, edit func(*server.Config)) *testNode {
	t.Helper()
	// The advertised Raft address must be a real one (it is written into the
	// bootstrap configuration), so listen first and pass the listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen raft: %v", err)
	}
	pol := server.DefaultRaftPolicy()
	pol.HeartbeatTimeout, pol.ElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := server.Config{NodeID: "n1", DataDir: t.TempDir(), RaftAddr: ln.Addr().String(),
		RaftListener: ln, Partitions: 4, Raft: pol, Logger: slog.New(slog.DiscardHandler)}
	if edit != nil {
		edit(&cfg)
	}
	n, err := server.Open(ctx, cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("open node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})

	tn := &testNode{node: n, protos: map[string]string{}}
	h := rpc.Handler(n, rpc.Security{})
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tn.mu.Lock()
		tn.protos[r.Header.Get("Content-Type")] = r.Proto
		tn.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = &p
	ts.Start()
	t.Cleanup(ts.Close) // runs before the node closes (cleanups are LIFO)

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	tn.url, tn.http = ts.URL, &http.Client{Transport: tr}
	tn.waitServing(t)
	return tn
}

// waitServing polls until every partition answers the default leaderboard:
// Open returns once every group has a leader, but the default definition
// reaches the partitions asynchronously (reconcileLoop), and until it does
// ingest counts the events as rejected and queries answer 404.
func (tn *testNode) waitServing(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		st, body := tn.do(t, http.MethodGet, "/api/top-items?consistency=leader", "", nil)
		if st == http.StatusOK {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node never served the default leaderboard: last answer %d %s", st, body)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// do sends a request and returns the status and the raw body.
func (tn *testNode) do(t testing.TB, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, tn.url+path, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := tn.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// doJSON sends a request, checks the status and decodes the JSON answer into out (unless nil).
func (tn *testNode) doJSON(t *testing.T, method, path, body string, wantStatus int, out any) {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	st, raw := tn.do(t, method, path, "application/json", b)
	if st != wantStatus {
		t.Fatalf("%s %s: got status %d, want %d; body %s", method, path, st, wantStatus, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
}

// apiErr is the error body of the JSON API.
type apiErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkError checks an error answer: its status, that the body is the JSON
// error shape, and that the message names the offending field.
func checkError(t *testing.T, status int, raw []byte, wantStatus int, wantInMessage ...string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("got status %d, want %d; body %s", status, wantStatus, raw)
	}
	var e apiErr
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("got body %s, want {\"error\":{\"code\",\"message\"}} (decode error %v)", raw, err)
	}
	for _, s := range wantInMessage {
		if !strings.Contains(e.Error.Message, s) {
			t.Errorf("got message %q, want it to name %q", e.Error.Message, s)
		}
	}
}

// ranked is one item of a top-items answer.
type ranked struct {
	ID    string `json:"id"`
	Count int64  `json:"count"`
}

// top is the part of a top-items answer the tests compare.
type top struct {
	Items  []ranked `json:"items"`
	Window struct {
		Type     string `json:"type"`
		Duration string `json:"duration"`
	} `json:"window"`
	Approximate *bool  `json:"approximate"`
	GeneratedAt string `json:"generated_at"`
	Consistency string `json:"consistency"`
	Leaderboard string `json:"leaderboard"`
}

// topItems reads a leaderboard's top items at linearizable consistency.
func (tn *testNode) topItems(t *testing.T, query string) top {
	t.Helper()
	var out top
	tn.doJSON(t, http.MethodGet, "/api/top-items?consistency=linearizable&"+query, "", http.StatusOK, &out)
	return out
}

// count reads one item's count in the all-time window at linearizable consistency.
func (tn *testNode) count(t *testing.T, leaderboard, item string) int64 {
	t.Helper()
	var out struct {
		Count int64 `json:"count"`
	}
	tn.doJSON(t, http.MethodGet, "/api/items/"+url.PathEscape(item)+"?consistency=linearizable&leaderboard="+leaderboard, "", http.StatusOK, &out)
	return out.Count
}

// createLeaderboard creates an exact wall-clock leaderboard with the default windows.
func (tn *testNode) createLeaderboard(t *testing.T, name string) {
	t.Helper()
	tn.doJSON(t, http.MethodPost, "/api/leaderboards", `{"name":"`+name+`"}`, http.StatusCreated, nil)
}

// ingestResult is the answer of POST /api/events.
type ingestResult struct {
	Accepted    uint64            `json:"accepted"`
	Duplicate   bool              `json:"duplicate"`
	LateDropped map[string]uint64 `json:"late_dropped"`
	Rejected    uint64            `json:"rejected"`
}

// post sends events and expects 200.
func (tn *testNode) post(t *testing.T, query, body string) ingestResult {
	t.Helper()
	var out ingestResult
	tn.doJSON(t, http.MethodPost, "/api/events"+query, body, http.StatusOK, &out)
	return out
}
