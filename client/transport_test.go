package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
)

// countingTransport counts the Ingest requests the server accepted; an
// attempt the client retried (the node not ready yet) is not one.
type countingTransport struct {
	next     http.RoundTripper
	accepted atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK && strings.HasSuffix(r.URL.Path, "/Ingest") {
		t.accepted.Add(1)
	}
	return resp, err
}

// losingTransport lets the first `lose` Ingest requests reach the server,
// waits for the server's answer, and then reports a broken connection
// instead: the server applied the batch but the client cannot know.
type losingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	lose int
	lost int
}

var errLost = errors.New("simulated connection reset after the server answered")

func (t *losingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, "/Ingest") {
		return resp, err
	}
	t.mu.Lock()
	drop := t.lost < t.lose
	if drop {
		t.lost++
	}
	t.mu.Unlock()
	if !drop {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, errLost
}

func (t *losingTransport) dropped() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

// handlerTransport serves requests in memory with an http.Handler: no
// sockets, so it also works inside a testing/synctest bubble.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Body = io.NopCloser(bytes.NewReader(rec.Body.Bytes()))
	return resp, nil
}

// fakeService records Ingest requests and fails them as told by failures
// (one code per request, 0 for success).
type fakeService struct {
	topkv1connect.UnimplementedTopKServiceHandler
	mu       sync.Mutex
	requests []*topkv1.IngestRequest
	failures []connect.Code
}

func (f *fakeService) Ingest(_ context.Context, req *connect.Request[topkv1.IngestRequest]) (*connect.Response[topkv1.IngestResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := len(f.requests)
	f.requests = append(f.requests, req.Msg)
	if i < len(f.failures) && f.failures[i] != 0 {
		return nil, connect.NewError(f.failures[i], errors.New("injected failure"))
	}
	return connect.NewResponse(&topkv1.IngestResponse{Accepted: uint64(len(req.Msg.Events) + len(req.Msg.GetColumns().GetItems()))}), nil
}

func (f *fakeService) got() []*topkv1.IngestRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*topkv1.IngestRequest(nil), f.requests...)
}

// fakeHTTPClient serves svc in memory.
func fakeHTTPClient(svc *fakeService) *http.Client {
	mux := http.NewServeMux()
	mux.Handle(topkv1connect.NewTopKServiceHandler(svc))
	return &http.Client{Transport: handlerTransport{mux}}
}
