package rpc_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/proto/topkd/node/v1/nodev1connect"
	"github.com/topkd/topkd/rpc"
)

// Hostile input through the real handlers of a real node: every request
// must be answered (no panic, here or in a goroutine it starts) and never
// with 500, which would blame the node for the client's input. Run each for
// 10 minutes with, for example:
//
//	go test ./rpc -run '^$' -fuzz '^FuzzREST$' -fuzztime 10m

type fuzzTarget struct{ method, path, contentType string }

// serveFuzz sends body to the target chosen by sel: as the body of a
// POST, or as the query string (after "?") or path tail of a GET.
func serveFuzz(t *testing.T, h http.Handler, targets []fuzzTarget, sel uint8, body []byte) {
	tg := targets[int(sel)%len(targets)]
	var req *http.Request
	var err error
	if tg.method == http.MethodGet {
		req, err = http.NewRequest(tg.method, "http://topkd"+tg.path+string(body), nil)
	} else {
		req, err = http.NewRequest(tg.method, "http://topkd"+tg.path, bytes.NewReader(body))
	}
	if err != nil {
		return // not a request a client could send
	}
	if tg.contentType != "" {
		req.Header.Set("Content-Type", tg.contentType)
	}
	if strings.HasPrefix(tg.contentType, "application/grpc") {
		req.Header.Set("TE", "trailers")
		req.ProtoMajor, req.ProtoMinor = 2, 0
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code == http.StatusInternalServerError {
		t.Errorf("%s %s (%s) with %q: 500 %s", tg.method, tg.path, tg.contentType, body, w.Body.Bytes())
	}
}

func fuzzNode(f *testing.F) http.Handler {
	return rpc.Handler(newTestNode(f).node, rpc.Security{})
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

var restTargets = []fuzzTarget{
	{http.MethodPost, "/api/events", "application/x-ndjson"},
	{http.MethodPost, "/api/events", "application/json"},
	{http.MethodPost, "/api/events?producer_id=p&epoch=1&sequence=", "application/x-ndjson"},
	{http.MethodPost, "/api/leaderboards", "application/json"},
	{http.MethodGet, "/api/top-items?", ""},
	{http.MethodGet, "/api/items/", ""},
	{http.MethodGet, "/api/leaderboards/", ""},
}

func FuzzREST(f *testing.F) {
	h := fuzzNode(f)
	for i, s := range []string{
		`{"item":"a"}` + "\n" + `{"item":"b","count":3,"time":"2026-12-05T00:00:00Z"}`,
		`{"events":[{"item":"a","count":2}],"producer_id":"p","epoch":1,"sequence":4}`,
		`[{"item":"a"}]`,
		`{"name":"lb1","mode":"exact","windows":["1h","1d"],"clock":"event","allowed_lateness":"5m"}`,
		`k=10&time_window=1d&consistency=cached`,
		`song_a?time_window=1h&consistency=linearizable`,
		`default`,
	} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) { serveFuzz(t, h, restTargets, sel, body) })
}

var connectTargets = []fuzzTarget{
	{http.MethodPost, topkv1connect.TopKServiceIngestProcedure, "application/proto"},
	{http.MethodPost, topkv1connect.TopKServiceIngestProcedure, "application/json"},
	{http.MethodPost, topkv1connect.TopKServiceTopKProcedure, "application/proto"},
	{http.MethodPost, topkv1connect.TopKServiceCountProcedure, "application/proto"},
	{http.MethodPost, topkv1connect.TopKServiceCreateLeaderboardProcedure, "application/proto"},
	{http.MethodPost, topkv1connect.TopKServiceIngestProcedure, "application/grpc"},
	{http.MethodPost, topkv1connect.TopKServiceTopKProcedure, "application/grpc-web+proto"},
}

func FuzzConnect(f *testing.F) {
	h := fuzzNode(f)
	f.Add(uint8(0), mustMarshal(&topkv1.IngestRequest{ProducerId: "p", Epoch: 1, Sequence: 1,
		Columns: &topkv1.EventColumns{Items: []string{"a", "b"}, Counts: []int64{1, 2}}}))
	f.Add(uint8(1), []byte(`{"producerId":"p","epoch":"1","sequence":"2","events":[{"item":"a","count":"3"}]}`))
	f.Add(uint8(2), mustMarshal(&topkv1.TopKRequest{K: 10, Window: "1h"}))
	f.Add(uint8(3), mustMarshal(&topkv1.CountRequest{Item: "a"}))
	f.Add(uint8(4), mustMarshal(&topkv1.CreateLeaderboardRequest{Leaderboard: &topkv1.Leaderboard{Name: "x", Windows: []string{"1h"}}}))
	frame := func(m []byte) []byte { return append([]byte{0, 0, 0, 0, byte(len(m))}, m...) }
	f.Add(uint8(5), frame(mustMarshal(&topkv1.IngestRequest{Events: []*topkv1.Event{{Item: "a"}}})))
	f.Add(uint8(6), frame(mustMarshal(&topkv1.TopKRequest{K: 3})))
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) { serveFuzz(t, h, connectTargets, sel, body) })
}

var peerTargets = []fuzzTarget{
	{http.MethodPost, nodev1connect.NodeServiceSubmitProcedure, "application/proto"},
	{http.MethodPost, nodev1connect.NodeServiceTopKProcedure, "application/proto"},
	{http.MethodPost, nodev1connect.NodeServiceCountProcedure, "application/proto"},
	{http.MethodPost, nodev1connect.NodeServiceDistinctProcedure, "application/proto"},
	{http.MethodPost, nodev1connect.NodeServiceReplicaStatusProcedure, "application/proto"},
	{http.MethodPost, nodev1connect.NodeServiceChecksumProcedure, "application/proto"},
}

func FuzzPeer(f *testing.F) {
	h := fuzzNode(f)
	f.Add(uint8(0), mustMarshal(&nodev1.SubmitRequest{Partition: 1}))
	f.Add(uint8(1), mustMarshal(&nodev1.TopKRequest{Partition: 2, Leaderboard: "default", K: 5}))
	f.Add(uint8(2), mustMarshal(&nodev1.CountRequest{Partition: 3, Leaderboard: "default", Item: "a"}))
	f.Add(uint8(3), mustMarshal(&nodev1.DistinctRequest{Partition: 0, Leaderboard: "default", Items: []string{"a"}}))
	f.Add(uint8(4), mustMarshal(&nodev1.ReplicaStatusRequest{Group: 9}))
	f.Add(uint8(5), mustMarshal(&nodev1.ChecksumRequest{Group: 2}))
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) { serveFuzz(t, h, peerTargets, sel, body) })
}
