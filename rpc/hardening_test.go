package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

// Leaderboard names follow one grammar on every API; a refused name is
// never stored.
func TestLeaderboardNameGrammar(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	for _, bad := range []string{"../x", "a b", "a\x00b", "bell\a", "caf\xe9", ".x", "-x", strings.Repeat("n", 129), strings.Repeat("n", 1_000_000)} {
		body, _ := json.Marshal(map[string]string{"name": bad})
		st, raw := tn.do(t, http.MethodPost, "/api/leaderboards", "application/json", body)
		if st == http.StatusBadRequest && strings.Contains(bad, "\xe9") {
			continue // invalid UTF-8 may already be refused as JSON
		}
		checkError(t, st, raw, http.StatusBadRequest, "leaderboard name")
		if len(raw) > 1000 {
			t.Errorf("%.20q: error answer of %d bytes", bad, len(raw))
		}
	}
	var list struct {
		Leaderboards []struct {
			Name string `json:"name"`
		} `json:"leaderboards"`
	}
	tn.doJSON(t, http.MethodGet, "/api/leaderboards", "", http.StatusOK, &list)
	if len(list.Leaderboards) != 1 {
		t.Errorf("leaderboards after refused names: %+v", list.Leaderboards)
	}
	tn.createLeaderboard(t, "songs.2026-12_eu")
}

// An item id ingest would refuse is refused by the item endpoint too.
func TestItemIDRules(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	for name, id := range map[string]string{"600 bytes": strings.Repeat("i", 600), "invalid UTF-8": "\xff\xfe"} {
		st, raw := tn.do(t, http.MethodGet, "/api/items/"+url.PathEscape(id), "", nil)
		if st != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", name, st, raw)
		}
		st, raw = tn.do(t, http.MethodPost, "/api/events", "application/json", []byte(`[{"item":"`+url.PathEscape(id)+`"}]`))
		_ = raw
		if name == "600 bytes" && st != http.StatusBadRequest {
			t.Errorf("ingest of a %s item: status %d", name, st)
		}
	}
}

// A cached item read is served as cached and says so.
func TestItemCachedConsistency(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	tn.post(t, "", `[{"item":"a"}]`)
	var out struct {
		Consistency string `json:"consistency"`
	}
	tn.doJSON(t, http.MethodGet, "/api/items/a?consistency=cached", "", http.StatusOK, &out)
	if out.Consistency != "cached" {
		t.Errorf("consistency %q, want cached", out.Consistency)
	}
}

// A window is written one way on every surface: listings, top-K answers,
// late_dropped and metric labels.
func TestOneWindowFormat(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	tn.post(t, "", `[{"item":"a"}]`)
	top := tn.topItems(t, "time_window=24h&k=1")
	if top.Window.Duration != "1d" {
		t.Errorf("top-K window.duration %q, want 1d", top.Window.Duration)
	}
	_, raw := tn.do(t, http.MethodGet, "/api/leaderboards/default", "", nil)
	if !strings.Contains(string(raw), `"1d"`) || strings.Contains(string(raw), `"24h"`) {
		t.Errorf("description: %s", raw)
	}
	_, raw = tn.do(t, http.MethodGet, "/metrics", "", nil)
	if !strings.Contains(string(raw), `window="1d"`) || strings.Contains(string(raw), `24h0m0s`) {
		t.Errorf("metrics do not label the 1d window as 1d")
	}
}

// k and count have one rule on every API: 0 (or absent) means the
// default, min(100, k_max) items and a weight of 1.
func TestZeroMeansDefault(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	var evs []string
	for i := range 150 {
		evs = append(evs, `{"item":"i`+strconv.Itoa(i)+`","count":0}`)
	}
	tn.post(t, "", "["+strings.Join(evs, ",")+"]")
	if got := len(tn.topItems(t, "k=0").Items); got != 100 {
		t.Errorf("REST k=0: %d items, want 100", got)
	}
	if c := tn.count(t, "default", "i7"); c != 1 {
		t.Errorf("REST count 0 counted %d, want 1", c)
	}
	c, err := client.New([]string{tn.url}, client.WithDiscovery(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.IngestBatch(t.Context(), "default", []client.Event{{Item: "i7", Count: 0}}); err != nil {
		t.Fatal(err)
	}
	res, err := c.TopK(t.Context(), "default", "all", 0, client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 100 || res.Items[0].ID != "i7" || res.Items[0].Count != 2 {
		t.Errorf("Connect k=0 after count 0: %d items, first %+v; want 100, i7 with 2", len(res.Items), res.Items[0])
	}
}

// late_dropped reports an event too old for a window in every request: on
// a fresh event-clock leaderboard, alone or beside a current event, and
// beside a current event that lands in another partition.
func TestLateDroppedInEveryRequest(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	tn.doJSON(t, http.MethodPost, "/api/leaderboards", `{"name":"ev","clock":"event","windows":["1h"]}`, http.StatusCreated, nil)
	now := time.Now()
	old := strconv.FormatInt(now.Add(-3*time.Hour).UnixMilli(), 10)
	cur := strconv.FormatInt(now.UnixMilli(), 10)
	for _, tc := range []struct{ name, body string }{
		{"old and current, same item", `[{"item":"a","time":` + old + `},{"item":"a","time":` + cur + `}]`},
		{"old and current, different items", `[{"item":"b","time":` + old + `},{"item":"c","time":` + cur + `},{"item":"d","time":` + cur + `},{"item":"e","time":` + cur + `}]`},
		{"old alone, after the current", `[{"item":"f","time":` + old + `}]`},
	} {
		got := tn.post(t, "?leaderboard=ev", tc.body)
		if got.LateDropped["1h"] != 1 {
			t.Errorf("%s: late_dropped %v, want 1h: 1", tc.name, got.LateDropped)
		}
	}
}

// Malformed Connect-side requests are client errors that say what is
// wrong: a gRPC body cut inside its envelope, a content type no protocol
// speaks, a JSON key given twice.
func TestMalformedRequestsAreClientErrors(t *testing.T) {
	tn := newTestNode(t)
	tn.waitServing(t)
	for name, body := range map[string][]byte{
		"message shorter than promised": {0, 0, 0, 0, 100, 1, 2, 3},
		"prefix cut":                    {0, 0, 0},
	} {
		for _, ct := range []string{"application/grpc", "application/grpc-web+proto"} {
			req, _ := http.NewRequest(http.MethodPost, tn.url+"/topk.v1.TopKService/TopK", bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			resp, err := tn.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// In trailers, or in headers for a trailers-only answer, or
			// (gRPC-Web) in a trailer frame of the body.
			status := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
			if bytes.Contains(raw, []byte("grpc-status:")) {
				status = string(bytes.TrimSpace(bytes.SplitN(bytes.SplitN(raw, []byte("grpc-status:"), 2)[1], []byte("\r"), 2)[0]))
			}
			if status != "3" {
				t.Errorf("%s, %s: grpc-status %q (header %v, body %q), want 3 (invalid argument)", name, ct, status, resp.Header, raw)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodPost, tn.url+"/topk.v1.TopKService/TopK", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := tn.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(raw), "application/proto") {
		t.Errorf("text/plain: %d %q, want 415 naming the types taken", resp.StatusCode, raw)
	}
	st, raw := tn.do(t, http.MethodPost, "/api/events", "application/json", []byte(`[{"item":"a","item":"b"}]`))
	checkError(t, st, raw, http.StatusBadRequest, `"item" appears twice`)
	st, raw = tn.do(t, http.MethodPost, "/api/leaderboards", "application/json", []byte(`{"name":"x","name":"y"}`))
	checkError(t, st, raw, http.StatusBadRequest, `"name" appears twice`)
	st, raw = tn.do(t, http.MethodPost, "/topk.v1.TopKService/TopK", "application/json", []byte(`{"leaderboard":"default","leaderboard":"x"}`))
	if st != http.StatusBadRequest {
		t.Errorf("Connect JSON with a key twice: %d %s", st, raw)
	}
}
