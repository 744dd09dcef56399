package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	"github.com/topkd/topkd/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newClient(t *testing.T, addrs []string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addrs, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func countOf(t *testing.T, c *client.Client, lb, item string) int64 {
	t.Helper()
	n, err := c.Count(context.Background(), lb, item, "all", client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatalf("Count(%q): %v", item, err)
	}
	return n.Count
}

func ownTransport(next http.RoundTripper) *http.Client { return &http.Client{Transport: next} }

func TestBatchingSendsFewerRequestsThanEvents(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	tr := &countingTransport{next: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(tr.next.(*http.Transport).CloseIdleConnections)
	// An age of an hour: only size and Flush cut batches, so the count is exact.
	c := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(tr)),
		client.WithBatchSize(100), client.WithBatchAge(time.Hour))
	const events = 1050
	for i := range events {
		if err := c.Add(ctx, "", client.Event{Item: fmt.Sprintf("item-%d", i%7)}); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got, want := tr.accepted.Load(), int64(11); got != want {
		t.Errorf("accepted Ingest requests = %d, want %d (10 full batches of 100 and one of 50)", got, want)
	}
	var total int64
	for i := range 7 {
		total += countOf(t, c, "default", fmt.Sprintf("item-%d", i))
	}
	if total != events {
		t.Errorf("counted %d events, want %d", total, events)
	}
}

func TestBatchAgeSendsWithoutFlush(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	c := newClient(t, []string{node.Addr}, client.WithBatchSize(1000), client.WithBatchAge(5*time.Millisecond))
	for range 3 {
		if err := c.Add(ctx, "default", client.Event{Item: "aged"}); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	// No Flush: the age timer must send the partial batch by itself.
	deadline := time.Now().Add(20 * time.Second)
	for countOf(t, c, "default", "aged") != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("partial batch never sent by age: count = %d, want 3", countOf(t, c, "default", "aged"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The batcher's timer, in a synctest bubble against an in-memory fake.
func TestBatchAgeCutsPartialBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := &fakeService{}
		c, err := client.New([]string{"fake:1"}, client.WithHTTPClient(fakeHTTPClient(svc)),
			client.WithBatchSize(10), client.WithBatchAge(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 13 {
			if err := c.Add(ctx, "lb", client.Event{Item: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if got := len(svc.got()); got != 1 {
			t.Fatalf("before the age passed: %d requests, want 1 (the full batch)", got)
		}
		time.Sleep(49 * time.Millisecond)
		synctest.Wait()
		if got := len(svc.got()); got != 1 {
			t.Fatalf("1 ms before the age: %d requests, want 1", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		reqs := svc.got()
		if len(reqs) != 2 {
			t.Fatalf("after the age: %d requests, want 2", len(reqs))
		}
		if got := len(reqs[1].Events) + len(reqs[1].GetColumns().GetItems()); got != 3 {
			t.Errorf("aged batch has %d events, want 3", got)
		}
		if reqs[0].Sequence == reqs[1].Sequence {
			t.Errorf("two batches share sequence %d", reqs[0].Sequence)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// A retry keeps the batch's identity; definite failures are not retried.
func TestRetryKeepsSequence(t *testing.T) {
	tests := []struct {
		name      string
		failures  []connect.Code
		wantReqs  int
		wantCode  connect.Code // 0: success
		wantTries int
	}{
		{"unavailable twice", []connect.Code{connect.CodeUnavailable, connect.CodeUnavailable}, 3, 0, 3},
		{"deadline exceeded", []connect.Code{connect.CodeDeadlineExceeded}, 2, 0, 2},
		{"resource exhausted", []connect.Code{connect.CodeResourceExhausted}, 2, 0, 2},
		{"invalid argument", []connect.Code{connect.CodeInvalidArgument}, 1, connect.CodeInvalidArgument, 1},
		{"not found", []connect.Code{connect.CodeNotFound}, 1, connect.CodeNotFound, 1},
		{"internal from the server", []connect.Code{connect.CodeInternal}, 1, connect.CodeInternal, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{failures: tt.failures}
			c := newClient(t, []string{"fake:1"}, client.WithHTTPClient(fakeHTTPClient(svc)),
				client.WithBackoff(time.Millisecond, 2*time.Millisecond), client.WithProducer("p1", 7))
			res, err := c.IngestBatch(context.Background(), "lb", []client.Event{{Item: "a"}, {Item: "b"}})
			if got := connect.CodeOf(err); err != nil && got != tt.wantCode || err == nil && tt.wantCode != 0 {
				t.Fatalf("err = %v (code %v), want code %v", err, got, tt.wantCode)
			}
			if res.Attempts != tt.wantTries {
				t.Errorf("Attempts = %d, want %d", res.Attempts, tt.wantTries)
			}
			reqs := svc.got()
			if len(reqs) != tt.wantReqs {
				t.Fatalf("server saw %d requests, want %d", len(reqs), tt.wantReqs)
			}
			for i, r := range reqs {
				if r.ProducerId != "p1" || r.Epoch != 7 || r.Sequence != reqs[0].Sequence {
					t.Errorf("request %d identity = (%q, %d, %d), want (p1, 7, %d)", i, r.ProducerId, r.Epoch, r.Sequence, reqs[0].Sequence)
				}
			}
			// The next batch gets the next sequence.
			if tt.wantCode == 0 {
				if _, err := c.IngestBatch(context.Background(), "lb", []client.Event{{Item: "c"}}); err != nil {
					t.Fatal(err)
				}
				reqs = svc.got()
				if got, want := reqs[len(reqs)-1].Sequence, reqs[0].Sequence+1; got != want {
					t.Errorf("next batch sequence = %d, want %d", got, want)
				}
			}
		})
	}
}

func TestRetryAfterLostResponseCountsOnce(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	inner := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(inner.CloseIdleConnections)

	t.Run("IngestBatch", func(t *testing.T) {
		tr := &losingTransport{next: inner, lose: 1}
		c := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(tr)))
		events := make([]client.Event, 50)
		for i := range events {
			events[i] = client.Event{Item: "lost-once"}
		}
		res, err := c.IngestBatch(ctx, "default", events)
		if err != nil {
			t.Fatalf("IngestBatch: %v", err)
		}
		if tr.dropped() != 1 {
			t.Fatalf("dropped %d responses, want 1", tr.dropped())
		}
		if res.Attempts != 2 || !res.Duplicate || res.Accepted != 50 {
			t.Errorf("result = %+v, want 2 attempts, duplicate, the original 50 accepted", res)
		}
		if got := countOf(t, c, "default", "lost-once"); got != 50 {
			t.Errorf("count = %d, want 50 (the retry must not count twice)", got)
		}
	})

	t.Run("Add", func(t *testing.T) {
		tr := &losingTransport{next: inner, lose: 3}
		c := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(tr)), client.WithBatchSize(10),
			client.WithBackoff(time.Millisecond, 5*time.Millisecond))
		for range 100 {
			if err := c.Add(ctx, "default", client.Event{Item: "lost-async"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if tr.dropped() != 3 {
			t.Fatalf("dropped %d responses, want 3", tr.dropped())
		}
		if got := countOf(t, c, "default", "lost-async"); got != 100 {
			t.Errorf("count = %d, want 100", got)
		}
	})
}

func TestInvalidInputComesBackWithItsCode(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	c := newClient(t, []string{node.Addr})
	if _, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "small", KMax: 5, Windows: []string{"1h"}}); err != nil {
		t.Fatalf("CreateLeaderboard: %v", err)
	}
	tests := []struct {
		name string
		call func() error
		want connect.Code
		text string // part of the message
	}{
		{"empty item", func() error {
			_, err := c.IngestBatch(ctx, "default", []client.Event{{Item: "ok"}, {Item: ""}})
			return err
		}, connect.CodeInvalidArgument, "events[1].item"},
		{"invalid UTF-8 item", func() error {
			_, err := c.IngestBatch(ctx, "default", []client.Event{{Item: "\xff\xfe"}})
			return err
		}, connect.CodeInvalidArgument, "UTF-8"},
		{"no events", func() error {
			_, err := c.IngestBatch(ctx, "default", nil)
			return err
		}, connect.CodeInvalidArgument, "no events"},
		{"event far in the future", func() error {
			_, err := c.IngestBatch(ctx, "default", []client.Event{{Item: "x", Time: time.Now().Add(24 * time.Hour)}})
			return err
		}, connect.CodeInvalidArgument, "ahead"},
		{"unknown leaderboard ingest", func() error {
			_, err := c.IngestBatch(ctx, "nope", []client.Event{{Item: "x"}})
			return err
		}, connect.CodeNotFound, "nope"},
		{"unknown leaderboard top-k", func() error {
			_, err := c.TopK(ctx, "nope", "all", 3)
			return err
		}, connect.CodeNotFound, "nope"},
		{"unknown window", func() error {
			_, err := c.TopK(ctx, "small", "1d", 3)
			return err
		}, connect.CodeInvalidArgument, "window"},
		{"k above k_max", func() error {
			_, err := c.TopK(ctx, "small", "all", 6)
			return err
		}, connect.CodeInvalidArgument, "k_max"},
		{"negative k", func() error {
			_, err := c.TopK(ctx, "small", "all", -1)
			return err
		}, connect.CodeInvalidArgument, "k"},
		{"count unknown leaderboard", func() error {
			_, err := c.Count(ctx, "nope", "x", "all")
			return err
		}, connect.CodeNotFound, "nope"},
		{"bad mode", func() error {
			_, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "bad", Mode: "magic"})
			return err
		}, connect.CodeInvalidArgument, "magic"},
		{"existing leaderboard", func() error {
			_, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "small"})
			return err
		}, connect.CodeAlreadyExists, "small"},
		{"describe unknown", func() error {
			_, err := c.DescribeLeaderboard(ctx, "nope")
			return err
		}, connect.CodeNotFound, "nope"},
		{"drop default", func() error {
			return c.DropLeaderboard(ctx, "default")
		}, connect.CodeInvalidArgument, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatalf("err = nil, want %v", tt.want)
			}
			if got := connect.CodeOf(err); got != tt.want {
				t.Errorf("code = %v, want %v (err: %v)", got, tt.want, err)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %q, want it to mention %q", err, tt.text)
			}
			if strings.Contains(err.Error(), "gave up") {
				t.Errorf("err = %q: a definite failure must not be retried", err)
			}
		})
	}
}

func TestAdminAndStatus(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	c := newClient(t, []string{node.Addr})
	lb, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "songs", Windows: []string{"1h", "1d"}, KMax: 50})
	if err != nil {
		t.Fatal(err)
	}
	if lb.Mode != "exact" || lb.Clock != "wall" || lb.Incarnation == 0 {
		t.Errorf("created %+v, want defaults filled in (exact, wall, an incarnation)", lb)
	}
	list, err := c.ListLeaderboards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range list {
		names = append(names, l.Name)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "default") || !strings.Contains(got, "songs") {
		t.Errorf("leaderboards = %s, want default and songs", got)
	}
	if _, err := c.IngestBatch(ctx, "songs", []client.Event{{Item: "a"}, {Item: "b"}, {Item: "a"}}); err != nil {
		t.Fatal(err)
	}
	info, err := c.DescribeLeaderboard(ctx, "songs")
	if err != nil {
		t.Fatal(err)
	}
	if info.Accepted != 3 || len(info.Windows) != 3 {
		t.Errorf("describe = %+v, want 3 accepted and windows all, 1h, 1d", info)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.NodeID != "node1" || st.Partitions != 2 || len(st.Replicas) != 2 || !st.Node.Ready {
		t.Errorf("status = %+v, want ready node1 with 2 partitions", st)
	}
	if err := c.DropLeaderboard(ctx, "songs"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TopK(ctx, "songs", "all", 1); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("top-k after drop: err = %v, want NotFound", err)
	}
}

func TestFailsOverToALiveAddress(t *testing.T) {
	node := newTestNode(t)
	dead := deadAddr(t)
	c := newClient(t, []string{dead, node.Addr}, client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	for i := range 4 { // round-robin starts at each address in turn
		if _, err := c.IngestBatch(context.Background(), "", []client.Event{{Item: "fo"}}); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatalf("status %d: %v", i, err)
		}
	}
	if got := countOf(t, c, "default", "fo"); got != 4 {
		t.Errorf("count = %d, want 4", got)
	}
}

func TestGivesUpAtTheRetryDeadline(t *testing.T) {
	c := newClient(t, []string{deadAddr(t)}, client.WithRetryTimeout(100*time.Millisecond),
		client.WithBackoff(time.Millisecond, 10*time.Millisecond))
	_, err := c.IngestBatch(context.Background(), "", []client.Event{{Item: "x"}})
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "gave up after") {
		t.Errorf("err = %v, want Unavailable after giving up", err)
	}
	// The caller's context ends retries too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.TopK(ctx, "", "all", 1); err == nil {
		t.Error("TopK with a canceled context succeeded")
	}
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestProducerIdentity(t *testing.T) {
	a, err := client.New([]string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b, err := client.New([]string{"127.0.0.1:1"}, client.WithProducer("fixed", 42))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	c, err := client.New([]string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	aid, aep := a.Producer()
	cid, _ := c.Producer()
	if len(aid) != 32 || aid == cid || aep == 0 {
		t.Errorf("random producers (%q, %d) and %q: want distinct 32-hex-digit ids and a non-zero epoch", aid, aep, cid)
	}
	if id, ep := b.Producer(); id != "fixed" || ep != 42 {
		t.Errorf("Producer() = (%q, %d), want (fixed, 42)", id, ep)
	}
	if _, err := client.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	if _, err := client.New([]string{"ftp://x"}); err == nil {
		t.Error("New(ftp://x) succeeded")
	}
}

func TestCloseFlushesAndLeavesNoGoroutines(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	ignore := goleak.IgnoreCurrent() // the node's own goroutines
	c, err := client.New([]string{node.Addr}, client.WithBatchAge(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2500 {
		// These leaderboards do not exist: the batches fail, and Close reports it.
		if err := c.Add(ctx, fmt.Sprintf("lb-%d", i%2), client.Event{Item: "closing"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		if err := c.Add(ctx, "default", client.Event{Item: fmt.Sprint("c", i%3)}); err != nil {
			t.Fatal(err)
		}
	}
	err = c.Close(ctx)
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("Close: err = %v, want the first batch error (NotFound)", err)
	}
	if err := c.Add(ctx, "default", client.Event{Item: "late"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Add after Close: err = %v, want ErrClosed", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	goleak.VerifyNone(t, ignore)

	// Everything queued for default was sent before Close returned.
	c2 := newClient(t, []string{node.Addr})
	for i := range 3 {
		if got := countOf(t, c2, "default", fmt.Sprint("c", i)); got != 100 {
			t.Errorf("count c%d = %d, want 100", i, got)
		}
	}
}

// TestResendAfterGivingUp: a batch whose every answer was lost is reported
// with an unknown outcome and its sequence; resending it under that
// sequence answers the original outcome and counts nothing twice, where a
// new batch would have.
func TestResendAfterGivingUp(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	inner := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(inner.CloseIdleConnections)
	tr := &losingTransport{next: inner, lose: 1 << 30}
	c := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(tr)), client.WithRetryTimeout(200*time.Millisecond),
		client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	events := []client.Event{{Item: "resent", Count: 7}}
	res, err := c.IngestBatch(ctx, "default", events)
	if err == nil || !client.OutcomeUnknown(err) || res.Sequence == 0 {
		t.Fatalf("IngestBatch with every answer lost: %+v, %v; want an unknown outcome with its sequence", res, err)
	}
	tr.mu.Lock()
	tr.lose = 0 // answers get through again
	tr.mu.Unlock()
	again, err := c.Resend(ctx, "default", events, res.Sequence)
	if err != nil || !again.Duplicate || again.Accepted != 1 {
		t.Fatalf("Resend: %+v, %v; want the original outcome, duplicate", again, err)
	}
	if got := countOf(t, c, "default", "resent"); got != 7 {
		t.Fatalf("count = %d, want 7 (counted once)", got)
	}
	if client.OutcomeUnknown(nil) {
		t.Error("OutcomeUnknown(nil) = true")
	}
	if _, err := c.Resend(ctx, "default", events, 0); err == nil || client.OutcomeUnknown(err) {
		t.Errorf("Resend of sequence 0: %v, want a definite error", err)
	}
}

// cancelAfterSend delivers each Ingest request, then answers as if the
// caller's context had been canceled while waiting.
type cancelAfterSend struct{ next http.RoundTripper }

func (t cancelAfterSend) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, "/Ingest") {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, context.Canceled
}

// TestOutcomeUnknownOnlyWhenSent: a batch refused before sending, or
// refused by the server, is a definite failure; one sent and not settled
// (here: canceled after the server counted it) is unknown, with its sequence.
func TestOutcomeUnknownOnlyWhenSent(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	c := newClient(t, []string{node.Addr})
	if _, err := c.IngestBatch(ctx, "", []client.Event{{Item: "a\xff"}}); err == nil || client.OutcomeUnknown(err) {
		t.Errorf("invalid item: %v, want a definite error", err)
	}
	if _, err := c.IngestBatch(ctx, "nope", []client.Event{{Item: "x"}}); err == nil || client.OutcomeUnknown(err) {
		t.Errorf("unknown leaderboard: %v, want a definite error", err)
	}
	inner := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(inner.CloseIdleConnections)
	cc := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(cancelAfterSend{inner})))
	res, err := cc.IngestBatch(ctx, "", []client.Event{{Item: "canceled-late", Count: 4}})
	if !client.OutcomeUnknown(err) || res.Sequence == 0 {
		t.Fatalf("canceled after sending: %+v, %v; want an unknown outcome with its sequence", res, err)
	}
	if got := countOf(t, c, "default", "canceled-late"); got != 4 {
		t.Fatalf("count %d, want 4: the server counted the batch", got)
	}
	closed, err := client.New([]string{node.Addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := closed.IngestBatch(ctx, "", []client.Event{{Item: "x"}}); err == nil || client.OutcomeUnknown(err) {
		t.Errorf("after Close: %v, want a definite error", err)
	}
}

// slowIngest delays every Ingest answer.
type slowIngest struct {
	next  http.RoundTripper
	delay time.Duration
}

func (t slowIngest) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/Ingest") {
		time.Sleep(t.delay)
	}
	return resp, err
}

// TestConcurrentFlushesEachReportTheFailure: two Flushes waiting for the same
// failed batch both return its error; neither consumes it for the other.
func TestConcurrentFlushesEachReportTheFailure(t *testing.T) {
	node := newTestNode(t)
	ctx := context.Background()
	inner := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(inner.CloseIdleConnections)
	c := newClient(t, []string{node.Addr}, client.WithHTTPClient(ownTransport(slowIngest{inner, 200 * time.Millisecond})),
		client.WithBatchSize(1))
	if err := c.Add(ctx, "nope", client.Event{Item: "x"}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- c.Flush(ctx) }()
	}
	for range 2 {
		if err := <-errs; connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("Flush: %v, want the batch's NotFound", err)
		}
	}
}

// Dimensions are not supported yet: a batch carrying any is refused before
// it is sent, by IngestBatch and by Add.
func TestDimensionsRefused(t *testing.T) {
	node := newTestNode(t)
	c, err := client.New([]string{node.Addr}, client.WithDiscovery(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	e := client.Event{Item: "x", Dimensions: map[string]string{"region": "eu"}}
	if _, err := c.IngestBatch(t.Context(), "default", []client.Event{{Item: "ok"}, e}); err == nil || !strings.Contains(err.Error(), "events[1].dimensions") {
		t.Errorf("IngestBatch with dimensions: %v", err)
	}
	if err := c.Add(t.Context(), "default", e); err == nil || !strings.Contains(err.Error(), "dimensions") {
		t.Errorf("Add with dimensions: %v", err)
	}
}
