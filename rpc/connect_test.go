package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
)

// protocol is one of the three wire protocols the HTTP port serves.
type protocol struct {
	name        string
	contentType string // request Content-Type of a unary call with the binary codec
	wantProto   string // HTTP version the call must have used
	opts        []connect.ClientOption
	h2c         bool // needs HTTP/2 without TLS
}

var protocols = []protocol{
	{name: "connect", contentType: "application/proto", wantProto: "HTTP/1.1"},
	{name: "grpc", contentType: "application/grpc", wantProto: "HTTP/2.0", opts: []connect.ClientOption{connect.WithGRPC()}, h2c: true},
	{name: "grpc-web", contentType: "application/grpc-web+proto", wantProto: "HTTP/1.1", opts: []connect.ClientOption{connect.WithGRPCWeb()}},
}

// httpClient returns a client for the protocol: HTTP/1.1, or HTTP/2 over
// cleartext only (so a gRPC call cannot silently fall back to HTTP/1.1).
func (p protocol) httpClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	if p.h2c {
		var ps http.Protocols
		ps.SetUnencryptedHTTP2(true)
		tr.Protocols = &ps
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestConnectRoundTrip ingests, reads the top items and counts over every protocol.
func TestConnectRoundTrip(t *testing.T) {
	tn := newTestNode(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := topkv1connect.NewTopKServiceClient(p.httpClient(t), tn.url, p.opts...)
			ctx := t.Context()
			lb := "rt-" + p.name

			cr, err := c.CreateLeaderboard(ctx, connect.NewRequest(&topkv1.CreateLeaderboardRequest{
				Leaderboard: &topkv1.Leaderboard{Name: lb, Windows: []string{"1m", "1h"}, KMax: 50}}))
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if got := cr.Msg.Leaderboard; got.Name != lb || got.Mode != "exact" || got.KMax != 50 || !slices.Equal(got.Windows, []string{"1m", "1h"}) {
				t.Errorf("create: got %v", got)
			}

			now := time.Now().UnixMilli()
			req := &topkv1.IngestRequest{Leaderboard: lb, ProducerId: "prod-" + p.name, Epoch: 1, Sequence: 1, Events: []*topkv1.Event{
				{Item: "a", Count: 3}, {Item: "b"}, {Item: "c", Count: 2, TimeUnixMs: now}, {Item: "b", TimeUnixMs: now}, {Item: "d"},
			}}
			ir, err := c.Ingest(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatalf("ingest: %v", err)
			}
			if ir.Msg.Accepted != 5 || ir.Msg.Duplicate || ir.Msg.Rejected != 0 {
				t.Errorf("ingest: got %v, want accepted 5", ir.Msg)
			}
			if got := tn.proto(p.contentType); got != p.wantProto {
				t.Errorf("the call went over %q with Content-Type %q, want %s", got, p.contentType, p.wantProto)
			}
			// A retry is answered from the deduplication table.
			ir, err = c.Ingest(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			if ir.Msg.Accepted != 5 || !ir.Msg.Duplicate {
				t.Errorf("retry: got %v, want accepted 5, duplicate", ir.Msg)
			}

			want := []string{"a 3", "b 2", "c 2", "d 1"} // ties by id
			for _, tc := range []struct {
				window string
				k      uint32
				want   []string
			}{{"", 10, want}, {"all", 2, want[:2]}, {"1h", 3, want[:3]}, {"1m", 50, want}} {
				tr, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{Leaderboard: lb, K: tc.k, Window: tc.window,
					Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
				if err != nil {
					t.Fatalf("top-k %q: %v", tc.window, err)
				}
				var got []string
				for _, it := range tr.Msg.Items {
					got = append(got, fmt.Sprintf("%s %d", it.Id, it.Count))
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("top-k %q k=%d: got %v, want %v", tc.window, tc.k, got, tc.want)
				}
				m := tr.Msg
				if m.Consistency != topkv1.Consistency_CONSISTENCY_LINEARIZABLE || m.Approximate || m.Leaderboard != lb || m.Window == nil {
					t.Errorf("top-k %q: got %v", tc.window, m)
				}
				if wantType := map[bool]string{true: "global", false: "sliding"}[tc.window == "" || tc.window == "all"]; m.Window.GetType() != wantType {
					t.Errorf("top-k %q: got window type %q, want %q", tc.window, m.Window.GetType(), wantType)
				}
			}

			for item, want := range map[string]int64{"a": 3, "b": 2, "absent": 0} {
				cr, err := c.Count(ctx, connect.NewRequest(&topkv1.CountRequest{Leaderboard: lb, Item: item, Window: "1h",
					Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
				if err != nil {
					t.Fatalf("count %q: %v", item, err)
				}
				if cr.Msg.Count != want || cr.Msg.Id != item || cr.Msg.Consistency != topkv1.Consistency_CONSISTENCY_LINEARIZABLE {
					t.Errorf("count %q: got %v, want %d at linearizable", item, cr.Msg, want)
				}
			}
			// A cached count is read from this node's replica, and says so.
			cc, err := c.Count(ctx, connect.NewRequest(&topkv1.CountRequest{Leaderboard: lb, Item: "a", Window: "1h",
				Consistency: topkv1.Consistency_CONSISTENCY_CACHED}))
			if err != nil || cc.Msg.Consistency != topkv1.Consistency_CONSISTENCY_CACHED || cc.Msg.Count != 3 {
				t.Errorf("cached count: got %v, %v; want 3 at cached consistency", cc.Msg, err)
			}

			ls, err := c.ListLeaderboards(ctx, connect.NewRequest(&topkv1.ListLeaderboardsRequest{}))
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			if !slices.ContainsFunc(ls.Msg.Leaderboards, func(l *topkv1.Leaderboard) bool { return l.Name == lb }) {
				t.Errorf("list: %q missing from %v", lb, ls.Msg.Leaderboards)
			}
			if _, err := c.DropLeaderboard(ctx, connect.NewRequest(&topkv1.DropLeaderboardRequest{Name: lb})); err != nil {
				t.Fatalf("drop: %v", err)
			}
			_, err = c.DescribeLeaderboard(ctx, connect.NewRequest(&topkv1.DescribeLeaderboardRequest{Name: lb}))
			if got := connect.CodeOf(err); got != connect.CodeNotFound {
				t.Errorf("describe after drop: got %v (%v), want not_found", got, err)
			}
		})
	}
}

// TestConnectErrors checks error codes over every protocol, and that the
// message names the offending field or value.
func TestConnectErrors(t *testing.T) {
	tn := newTestNode(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := topkv1connect.NewTopKServiceClient(p.httpClient(t), tn.url, p.opts...)
			ctx := t.Context()
			if _, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "keep"}}})); err != nil {
				t.Fatalf("ingest: %v", err)
			}
			tests := []struct {
				name      string
				call      func() error
				wantCode  connect.Code
				wantInMsg []string
			}{
				{"top-k k above k_max", func() error {
					_, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{K: 1001}))
					return err
				}, connect.CodeInvalidArgument, []string{"k", "1000"}},
				{"top-k huge k", func() error {
					_, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{K: 1<<32 - 1}))
					return err
				}, connect.CodeInvalidArgument, []string{"k"}},
				{"top-k window not configured", func() error {
					_, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{K: 10, Window: "2h"}))
					return err
				}, connect.CodeInvalidArgument, []string{"window"}},
				{"top-k window not a duration", func() error {
					_, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{K: 10, Window: "xyz"}))
					return err
				}, connect.CodeInvalidArgument, []string{"window", "xyz"}},
				{"top-k unknown leaderboard", func() error {
					_, err := c.TopK(ctx, connect.NewRequest(&topkv1.TopKRequest{Leaderboard: "nope", K: 10}))
					return err
				}, connect.CodeNotFound, []string{"nope"}},
				{"count unknown leaderboard", func() error {
					_, err := c.Count(ctx, connect.NewRequest(&topkv1.CountRequest{Leaderboard: "nope", Item: "x"}))
					return err
				}, connect.CodeNotFound, []string{"nope"}},
				{"ingest unknown leaderboard", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Leaderboard: "nope", Events: []*topkv1.Event{{Item: "fresh"}}}))
					return err
				}, connect.CodeNotFound, []string{"nope"}},
				{"ingest empty item", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "fresh"}, {Item: ""}}}))
					return err
				}, connect.CodeInvalidArgument, []string{"events[1].item"}},
				{"ingest item over 512 bytes", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "fresh"}, {Item: strings.Repeat("x", 513)}}}))
					return err
				}, connect.CodeInvalidArgument, []string{"events[1].item", "512"}},
				{"ingest time in the future", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "fresh"},
						{Item: "x", TimeUnixMs: time.Now().Add(time.Hour).UnixMilli()}}}))
					return err
				}, connect.CodeInvalidArgument, []string{"events[1].time"}},
				{"ingest time before 1970", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "fresh"}, {Item: "x", TimeUnixMs: -5}}}))
					return err
				}, connect.CodeInvalidArgument, []string{"events[1].time"}},
				{"ingest no events", func() error {
					_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{}))
					return err
				}, connect.CodeInvalidArgument, []string{"events"}},
				{"create duplicate", func() error {
					_, err := c.CreateLeaderboard(ctx, connect.NewRequest(&topkv1.CreateLeaderboardRequest{Leaderboard: &topkv1.Leaderboard{Name: "default"}}))
					return err
				}, connect.CodeAlreadyExists, []string{"default"}},
				{"create bad mode", func() error {
					_, err := c.CreateLeaderboard(ctx, connect.NewRequest(&topkv1.CreateLeaderboardRequest{Leaderboard: &topkv1.Leaderboard{Name: "x", Mode: "fuzzy"}}))
					return err
				}, connect.CodeInvalidArgument, []string{"mode"}},
				{"create without leaderboard", func() error {
					_, err := c.CreateLeaderboard(ctx, connect.NewRequest(&topkv1.CreateLeaderboardRequest{}))
					return err
				}, connect.CodeInvalidArgument, []string{"leaderboard"}},
				{"drop default", func() error {
					_, err := c.DropLeaderboard(ctx, connect.NewRequest(&topkv1.DropLeaderboardRequest{Name: "default"}))
					return err
				}, connect.CodeInvalidArgument, []string{"default"}},
				{"drop unknown", func() error {
					_, err := c.DropLeaderboard(ctx, connect.NewRequest(&topkv1.DropLeaderboardRequest{Name: "nope"}))
					return err
				}, connect.CodeNotFound, []string{"nope"}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					err := tc.call()
					var ce *connect.Error
					if !errors.As(err, &ce) {
						t.Fatalf("got %v, want a connect error with code %v", err, tc.wantCode)
					}
					if ce.Code() != tc.wantCode {
						t.Errorf("got code %v (%v), want %v", ce.Code(), err, tc.wantCode)
					}
					for _, s := range tc.wantInMsg {
						if !strings.Contains(ce.Message(), s) {
							t.Errorf("got message %q, want it to name %q", ce.Message(), s)
						}
					}
				})
			}
			// Nothing of the refused batches was counted.
			cr, err := c.Count(ctx, connect.NewRequest(&topkv1.CountRequest{Item: "fresh", Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
			if err != nil {
				t.Fatalf("count: %v", err)
			}
			if cr.Msg.Count != 0 {
				t.Errorf("count of fresh: got %d, want 0", cr.Msg.Count)
			}
		})
	}
}

// TestConnectTopKZeroIsDefault pins the proto3 reading of k: 0 is "unset"
// and asks for the default of 100 (client.TopK documents it), unlike the
// REST API, where an explicit k=0 is refused.
func TestConnectTopKZeroIsDefault(t *testing.T) {
	tn := newTestNode(t)
	events := make([]*topkv1.Event, 120)
	for i := range events {
		events[i] = &topkv1.Event{Item: fmt.Sprintf("i%03d", i)}
	}
	c := topkv1connect.NewTopKServiceClient(protocols[0].httpClient(t), tn.url)
	if _, err := c.Ingest(t.Context(), connect.NewRequest(&topkv1.IngestRequest{Events: events})); err != nil {
		t.Fatalf("ingest: %v", err)
	}
	r, err := c.TopK(t.Context(), connect.NewRequest(&topkv1.TopKRequest{Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil {
		t.Fatalf("top-k with k=0: %v", err)
	}
	if len(r.Msg.Items) != 100 {
		t.Errorf("k=0: got %d items, want the default 100", len(r.Msg.Items))
	}
}

// TestGRPCHealth asks the standard health service over every protocol.
func TestGRPCHealth(t *testing.T) {
	tn := newTestNode(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			hc := grpchealth.NewClient(p.httpClient(t), tn.url, p.opts...)
			for _, svc := range []string{"", topkv1connect.TopKServiceName} {
				r, err := hc.Check(t.Context(), &grpchealth.CheckRequest{Service: svc})
				if err != nil {
					t.Fatalf("check %q: %v", svc, err)
				}
				if r.Status != grpchealth.StatusServing {
					t.Errorf("check %q: got %v, want SERVING", svc, r.Status)
				}
			}
			_, err := hc.Check(t.Context(), &grpchealth.CheckRequest{Service: "no.such.Service"})
			if got := connect.CodeOf(err); got != connect.CodeNotFound {
				t.Errorf("unknown service: got %v (%v), want not_found", got, err)
			}
		})
	}
}

func TestConnectIngestColumns(t *testing.T) {
	tn := newTestNode(t)
	c := topkv1connect.NewTopKServiceClient(protocols[0].httpClient(t), tn.url)
	ctx := t.Context()
	_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Columns: &topkv1.EventColumns{
		Items: []string{"colA", "colB", "colA"}, Counts: []int64{2, 0, 3}}}))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Count(ctx, connect.NewRequest(&topkv1.CountRequest{Item: "colA", Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil || r.Msg.Count != 5 {
		t.Fatalf("count colA = %v, %v; want 5", r, err)
	}
	_, err = c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Columns: &topkv1.EventColumns{
		Items: []string{"x", "y"}, Counts: []int64{1}}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "columns") {
		t.Fatalf("mismatched columns: %v, want InvalidArgument naming columns", err)
	}
}

// TestConnectIngestCancelled sends column-wise batches from several producers
// with deadlines short enough that many expire while their parts are queued
// or in flight. Requests' events and aggregation rows are pooled and their
// strings alias a copy of the request: whatever the outcome, every counted
// item must be one that was sent (run under -race in CI).
func TestConnectIngestCancelled(t *testing.T) {
	tn := newTestNode(t)
	c := topkv1connect.NewTopKServiceClient(protocols[0].httpClient(t), tn.url)
	sent := map[string]bool{}
	for i := range 400 {
		sent[fmt.Sprintf("item-%03d-%s", i, strings.Repeat("x", i%40))] = true
	}
	names := slices.Sorted(maps.Keys(sent))
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for p := range 6 {
		wg.Go(func() {
			for r := range 30 {
				cols := &topkv1.EventColumns{}
				for j := range 500 {
					cols.Items = append(cols.Items, names[(p*131+r*17+j*7)%len(names)])
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Duration(1+r%8)*5*time.Millisecond)
				_, err := c.Ingest(ctx, connect.NewRequest(&topkv1.IngestRequest{Columns: cols}))
				cancel()
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d batches acknowledged, %d cut short", ok.Load(), failed.Load())
	if failed.Load() == 0 {
		t.Log("no deadline expired on this run; the check below still holds")
	}
	// Let in-flight entries apply, then read every counted item.
	time.Sleep(200 * time.Millisecond)
	res, err := c.TopK(t.Context(), connect.NewRequest(&topkv1.TopKRequest{K: 1000, Consistency: topkv1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.Items) == 0 && ok.Load() > 0 {
		t.Fatal("acknowledged batches but no items counted")
	}
	for _, it := range res.Msg.Items {
		if !sent[it.Id] {
			t.Fatalf("counted item %q was never sent", it.Id)
		}
	}
}
