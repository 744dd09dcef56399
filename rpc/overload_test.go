package rpc_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/topkd/topkd/client"
	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// A node above its memory high-water mark refuses ingest before proposing
// anything: REST says so with Retry-After and the refused mark, and the Go
// client, after backing off as told, reports a refusal, not an unknown
// outcome.
func TestOverloadIsAKnownOutcome(t *testing.T) {
	tn := newTestNodeWith(t, func(c *server.Config) { c.MemoryHighWater = 1 })
	st, raw := tn.do(t, http.MethodPost, "/api/events", "application/json", []byte(`[{"item":"a"}]`))
	if st != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", st, raw)
	}
	req, _ := http.NewRequest(http.MethodPost, tn.url+"/api/events", strings.NewReader(`[{"item":"a"}]`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := tn.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Retry-After") == "" || resp.Header.Get(rpc.OutcomeHeader) != rpc.OutcomeRefused {
		t.Errorf("headers %v: want Retry-After and %s: %s", resp.Header, rpc.OutcomeHeader, rpc.OutcomeRefused)
	}

	c, err := client.New([]string{tn.url}, client.WithDiscovery(0), client.WithRetryTimeout(2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	start := time.Now()
	res, err := c.IngestBatch(t.Context(), "default", []client.Event{{Item: "a"}})
	if err == nil {
		t.Fatal("ingest above the high-water mark succeeded")
	}
	if client.OutcomeUnknown(err) {
		t.Errorf("a refusal before proposal reported as unknown: %v", err)
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "high-water") {
		t.Errorf("error %v: want resource_exhausted naming the high-water mark", err)
	}
	// Retry-After: 1 s between attempts, so about 3 attempts in 2.5 s.
	if res.Attempts < 2 || res.Attempts > 4 {
		t.Errorf("%d attempts in %v, want the node's 1 s Retry-After honoured", res.Attempts, time.Since(start))
	}
}
