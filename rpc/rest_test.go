package rpc_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// TestTopItemsShape checks the seed's answer shape of GET /api/top-items and
// its defaults: k=100, time_window=all, consistency=cached.
func TestTopItemsShape(t *testing.T) {
	tn := newTestNode(t)
	// 150 distinct items, item-000 counted 150 times down to item-149 once.
	var b strings.Builder
	b.WriteString("[")
	for i := range 150 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"item":"item-%03d","count":%d}`, i, 150-i)
	}
	b.WriteString("]")
	if got := tn.post(t, "", b.String()); got.Accepted != 150 {
		t.Fatalf("got accepted %d, want 150", got.Accepted)
	}

	tests := []struct {
		name         string
		query        string
		wantItems    int
		wantWindow   map[string]any // keys that must be present with these values
		noDuration   bool
		wantConsist  string
		checkCounted bool
	}{
		{name: "1d is a 24h sliding window", query: "?time_window=1d&k=3&consistency=linearizable", wantItems: 3,
			wantWindow: map[string]any{"type": "sliding", "duration": "1d"}, wantConsist: "linearizable", checkCounted: true},
		{name: "all is the global window", query: "?time_window=all&k=5&consistency=leader", wantItems: 5,
			wantWindow: map[string]any{"type": "global"}, noDuration: true, wantConsist: "leader", checkCounted: true},
		{name: "defaults k=100 all-time", query: "?consistency=linearizable", wantItems: 100,
			wantWindow: map[string]any{"type": "global"}, noDuration: true, wantConsist: "linearizable", checkCounted: true},
		{name: "default consistency is cached", query: "?k=1", wantItems: 1,
			wantWindow: map[string]any{"type": "global"}, noDuration: true, wantConsist: "cached"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var raw map[string]json.RawMessage
			tn.doJSON(t, http.MethodGet, "/api/top-items"+tc.query, "", http.StatusOK, &raw)
			for _, k := range []string{"items", "window", "approximate", "generated_at"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("answer lacks %q: %v", k, raw)
				}
			}
			var items []map[string]json.RawMessage
			if err := json.Unmarshal(raw["items"], &items); err != nil {
				t.Fatalf("items: %v", err)
			}
			if len(items) != tc.wantItems {
				t.Fatalf("got %d items, want %d", len(items), tc.wantItems)
			}
			for i, it := range items {
				var id string
				var count int64
				if err := json.Unmarshal(it["id"], &id); err != nil {
					t.Fatalf("items[%d].id: %v (%s)", i, err, it["id"])
				}
				if err := json.Unmarshal(it["count"], &count); err != nil {
					t.Fatalf("items[%d].count: %v (%s)", i, err, it["count"])
				}
				// The cached answer may predate the ingest; the others must be exact.
				if wantID, wantCount := fmt.Sprintf("item-%03d", i), int64(150-i); tc.checkCounted && (id != wantID || count != wantCount) {
					t.Errorf("items[%d]: got {%s %d}, want {%s %d}", i, id, count, wantID, wantCount)
				}
			}
			var window map[string]any
			if err := json.Unmarshal(raw["window"], &window); err != nil {
				t.Fatalf("window: %v", err)
			}
			for k, v := range tc.wantWindow {
				if window[k] != v {
					t.Errorf("window.%s: got %v, want %v (window %v)", k, window[k], v, window)
				}
			}
			if _, ok := window["duration"]; tc.noDuration && ok {
				t.Errorf("global window has a duration: %v", window)
			}
			if string(raw["approximate"]) != "false" {
				t.Errorf("approximate: got %s, want false", raw["approximate"])
			}
			var gen string
			if err := json.Unmarshal(raw["generated_at"], &gen); err != nil {
				t.Fatalf("generated_at: %v", err)
			}
			if _, err := time.Parse(time.RFC3339, gen); err != nil {
				t.Errorf("generated_at %q is not RFC 3339: %v", gen, err)
			}
			var cons string
			if err := json.Unmarshal(raw["consistency"], &cons); err != nil || cons != tc.wantConsist {
				t.Errorf("consistency: got %s, want %q", raw["consistency"], tc.wantConsist)
			}
		})
	}
}

func TestTopItemsErrors(t *testing.T) {
	tn := newTestNode(t)
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantInMsg  []string
	}{
		{"k negative", "k=-1", http.StatusBadRequest, []string{"k"}},
		{"k above k_max", "k=1001", http.StatusBadRequest, []string{"k", "1000"}},
		{"k not a number", "k=abc", http.StatusBadRequest, []string{"k", "abc"}},
		{"k huge", "k=99999999999999999999", http.StatusBadRequest, []string{"k"}},
		{"window not configured", "time_window=2h", http.StatusBadRequest, []string{"window", "2h"}},
		{"window not a duration", "time_window=xyz", http.StatusBadRequest, []string{"time_window", "xyz"}},
		{"window negative", "time_window=-1h", http.StatusBadRequest, []string{"time_window"}},
		{"unknown leaderboard", "leaderboard=nope", http.StatusNotFound, []string{"leaderboard", "nope"}},
		{"unknown consistency", "consistency=bogus", http.StatusBadRequest, []string{"consistency", "bogus"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, raw := tn.do(t, http.MethodGet, "/api/top-items?"+tc.query, "", nil)
			checkError(t, st, raw, tc.wantStatus, tc.wantInMsg...)
		})
	}
}

func TestTopItemsConsistencyEchoed(t *testing.T) {
	tn := newTestNode(t)
	tn.post(t, "", `[{"item":"x"}]`)
	for _, c := range []string{"cached", "leader", "linearizable"} {
		t.Run(c, func(t *testing.T) {
			var out top
			tn.doJSON(t, http.MethodGet, "/api/top-items?consistency="+c, "", http.StatusOK, &out)
			if out.Consistency != c {
				t.Errorf("got consistency %q, want %q", out.Consistency, c)
			}
			if out.Leaderboard != "default" {
				t.Errorf("got leaderboard %q, want default", out.Leaderboard)
			}
		})
	}
}

// TestTopItemsExact checks exact answers after ingest, ties ordered by id.
func TestTopItemsExact(t *testing.T) {
	tn := newTestNode(t)
	tn.createLeaderboard(t, "exact")
	// Spread over several requests and formats; counts a=5 b=3 c=3 e=3 d=1.
	tn.post(t, "?leaderboard=exact", `[{"item":"e","count":2},{"item":"a","count":4},{"item":"c"}]`)
	tn.post(t, "?leaderboard=exact", "{\"item\":\"b\",\"count\":3}\n{\"item\":\"d\"}\n{\"item\":\"c\",\"count\":2}\n")
	tn.post(t, "", `{"leaderboard":"exact","events":[{"item":"a"},{"item":"e"}]}`)

	all := []ranked{{"a", 5}, {"b", 3}, {"c", 3}, {"e", 3}, {"d", 1}}
	tests := []struct {
		query string
		want  []ranked
	}{
		{"k=10", all},
		{"k=1", all[:1]},
		{"k=3", all[:3]},
		{"k=4&time_window=1h", all[:4]},
		{"k=5&time_window=1m", all},
		{"k=5&time_window=7d", all},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			got := tn.topItems(t, "leaderboard=exact&"+tc.query).Items
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// The default leaderboard saw none of it.
	if got := tn.topItems(t, "k=10").Items; len(got) != 0 {
		t.Errorf("default leaderboard: got %v, want no items", got)
	}
}

func TestEventsFormats(t *testing.T) {
	tn := newTestNode(t)
	now := time.Now()
	long := strings.Repeat("é", 256) // 512 bytes: the largest item allowed
	tests := []struct {
		name        string
		query       string
		contentType string
		body        string
		wantAcc     uint64
		want        map[string]int64
	}{
		{name: "JSON array", body: `[{"item":"arr-a"},{"item":"arr-b","count":2},{"item":"arr-a"}]`,
			wantAcc: 3, want: map[string]int64{"arr-a": 2, "arr-b": 2}},
		{name: "pretty JSON array", body: "[\n  {\"item\": \"parr-a\"},\n  {\"item\": \"parr-a\", \"count\": 4}\n]\n",
			wantAcc: 2, want: map[string]int64{"parr-a": 5}},
		{name: "NDJSON", contentType: "application/x-ndjson", body: "{\"item\":\"nd-a\"}\n{\"item\":\"nd-a\",\"count\":3}\r\n\n{\"item\":\"nd-b\"}",
			wantAcc: 3, want: map[string]int64{"nd-a": 4, "nd-b": 1}},
		{name: "single NDJSON line", body: `{"item":"nd1"}`, wantAcc: 1, want: map[string]int64{"nd1": 1}},
		{name: "envelope", body: `{"producer_id":"p-env","epoch":1,"sequence":1,"events":[{"item":"env-a"},{"item":"env-b","count":7}]}`,
			wantAcc: 2, want: map[string]int64{"env-a": 1, "env-b": 7}},
		{name: "envelope with events first", body: `{"events":[{"item":"env1"}],"producer_id":"p-env1","sequence":1}`,
			wantAcc: 1, want: map[string]int64{"env1": 1}},
		{name: "pretty envelope", body: "{\n  \"producer_id\": \"p-penv\",\n  \"sequence\": 1,\n  \"events\": [\n    {\"item\": \"penv\"}\n  ]\n}\n",
			wantAcc: 1, want: map[string]int64{"penv": 1}},
		{name: "time RFC 3339", body: `[{"item":"t-rfc","time":"` + now.Add(-time.Second).UTC().Format(time.RFC3339) + `"}]`,
			wantAcc: 1, want: map[string]int64{"t-rfc": 1}},
		{name: "time RFC 3339 with offset and fraction", body: `[{"item":"t-rfc2","time":"` + now.In(time.FixedZone("x", 2*3600)).Format(time.RFC3339Nano) + `"}]`,
			wantAcc: 1, want: map[string]int64{"t-rfc2": 1}},
		{name: "time unix ms", body: `[{"item":"t-ms","time":` + strconv.FormatInt(now.UnixMilli(), 10) + `}]`,
			wantAcc: 1, want: map[string]int64{"t-ms": 1}},
		{name: "time null", body: `[{"item":"t-null","time":null}]`, wantAcc: 1, want: map[string]int64{"t-null": 1}},
		{name: "time 9 min ahead", body: `[{"item":"t-ahead","time":` + strconv.FormatInt(now.Add(9*time.Minute).UnixMilli(), 10) + `}]`,
			wantAcc: 1, want: map[string]int64{"t-ahead": 1}},
		{name: "negative count in exact mode", body: `[{"item":"neg","count":5},{"item":"neg","count":-2}]`,
			wantAcc: 2, want: map[string]int64{"neg": 3}},
		{name: "512-byte item", body: `[{"item":"` + long + `"}]`, wantAcc: 1, want: map[string]int64{long: 1}},
		{name: "unicode escapes", body: `[{"item":"caf\u00e9 \ud83c\udfb5"}]`, wantAcc: 1, want: map[string]int64{"café 🎵": 1}},
		{name: "leaderboard query parameter", query: "?leaderboard=default", body: `[{"item":"q-lb"}]`,
			wantAcc: 1, want: map[string]int64{"q-lb": 1}},
		{name: "leaderboard per event", body: `[{"item":"ev-lb","leaderboard":"default"}]`,
			wantAcc: 1, want: map[string]int64{"ev-lb": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			st, raw := tn.do(t, http.MethodPost, "/api/events"+tc.query, ct, []byte(tc.body))
			if st != http.StatusOK {
				t.Fatalf("got status %d, want 200; body %s", st, raw)
			}
			var got ingestResult
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			if got.Accepted != tc.wantAcc || got.Duplicate || got.Rejected != 0 || len(got.LateDropped) != 0 {
				t.Errorf("got %+v, want accepted %d and nothing else", got, tc.wantAcc)
			}
			for item, want := range tc.want {
				if item == long {
					// A 512-byte id does not fit a readable URL; ask through top-items instead.
					continue
				}
				if got := tn.count(t, "default", item); got != want {
					t.Errorf("count of %q: got %d, want %d", item, got, want)
				}
			}
		})
	}
	found := false
	for _, it := range tn.topItems(t, "k=1000").Items {
		if it.ID == long {
			found = it.Count == 1
		}
	}
	if !found {
		t.Errorf("the 512-byte item is not in the top items with count 1")
	}
}

// TestEventsLateAndRejected checks the late_dropped and rejected answers.
func TestEventsLateAndRejected(t *testing.T) {
	tn := newTestNode(t)
	t.Run("late_dropped", func(t *testing.T) {
		// A fresh event first, so the item's partition has a window clock.
		if got := tn.post(t, "", `[{"item":"late"}]`); got.Accepted != 1 || len(got.LateDropped) != 0 {
			t.Fatalf("fresh event: got %+v, want accepted 1, nothing late", got)
		}
		old := time.Now().Add(-2 * time.Hour).UnixMilli()
		got := tn.post(t, "", `[{"item":"late","time":`+strconv.FormatInt(old, 10)+`}]`)
		want := map[string]uint64{"1m": 1, "1h": 1}
		if got.Accepted != 1 || got.Rejected != 0 || len(got.LateDropped) != len(want) {
			t.Fatalf("2h-old event: got %+v, want accepted 1, late_dropped %v", got, want)
		}
		for w, n := range want {
			if got.LateDropped[w] != n {
				t.Errorf("late_dropped[%s]: got %d, want %d", w, got.LateDropped[w], n)
			}
		}
		// Counted in all and in 1d, not in 1h.
		for _, tc := range []struct {
			window string
			want   int64
		}{{"all", 2}, {"1d", 2}, {"1h", 1}} {
			var out struct {
				Count int64 `json:"count"`
			}
			tn.doJSON(t, http.MethodGet, "/api/items/late?consistency=linearizable&time_window="+tc.window, "", http.StatusOK, &out)
			if out.Count != tc.want {
				t.Errorf("count in %s: got %d, want %d", tc.window, out.Count, tc.want)
			}
		}
	})
	t.Run("max_items", func(t *testing.T) {
		// At max_items the node refuses new items before proposal (429 naming
		// the limit); items it already holds still count, and skew between
		// partitions never refuses an item below the total.
		tn.doJSON(t, http.MethodPost, "/api/leaderboards", `{"name":"small","max_items":4}`, http.StatusCreated, nil)
		var same []string
		for i := 0; len(same) < 4; i++ {
			if id := fmt.Sprintf("i%d", i); server.PartitionOf("small", id, tn.node.Partitions()) == 0 {
				same = append(same, id)
			}
		}
		body := `[{"item":"` + strings.Join(same, `"},{"item":"`) + `"}]`
		if got := tn.post(t, "?leaderboard=small", body); got.Accepted != 4 || got.Rejected != 0 {
			t.Errorf("4 items in one partition: got %+v, want accepted 4", got)
		}
		if got := tn.post(t, "?leaderboard=small", `[{"item":"`+same[0]+`"}]`); got.Accepted != 1 {
			t.Errorf("known item at the limit: got %+v, want accepted 1", got)
		}
		st, raw := tn.do(t, http.MethodPost, "/api/events?leaderboard=small", "application/json", []byte(`[{"item":"brand-new"}]`))
		checkError(t, st, raw, http.StatusTooManyRequests, "max_items")
		if c := tn.count(t, "small", "brand-new"); c != 0 {
			t.Errorf("refused item counted: %d", c)
		}
	})
}

// TestEventsDedupe checks that a retried batch is counted once and answers
// duplicate with the original outcome.
func TestEventsDedupe(t *testing.T) {
	tn := newTestNode(t)
	tests := []struct {
		name  string
		query func(seq int) string
		body  func(seq int, item string) string
	}{
		{name: "query parameters",
			query: func(seq int) string { return fmt.Sprintf("?producer_id=pq&epoch=3&sequence=%d", seq) },
			body: func(_ int, item string) string {
				return `[{"item":"` + item + `-a","count":5},{"item":"` + item + `-b"},{"item":"` + item + `-c"}]`
			}},
		{name: "envelope",
			query: func(int) string { return "" },
			body: func(seq int, item string) string {
				return fmt.Sprintf(`{"producer_id":"pe","epoch":3,"sequence":%d,"events":[{"item":"%s-a","count":5},{"item":"%s-b"},{"item":"%s-c"}]}`,
					seq, item, item, item)
			}},
		{name: "NDJSON with query parameters",
			query: func(seq int) string { return fmt.Sprintf("?producer_id=pn&sequence=%d", seq) },
			body: func(_ int, item string) string {
				return `{"item":"` + item + `-a","count":5}` + "\n" + `{"item":"` + item + `-b"}` + "\n" + `{"item":"` + item + `-c"}`
			}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			item := fmt.Sprintf("d%d", i)
			first := tn.post(t, tc.query(1), tc.body(1, item))
			if first.Accepted != 3 || first.Duplicate {
				t.Fatalf("first: got %+v, want accepted 3, not duplicate", first)
			}
			for retry := range 2 {
				got := tn.post(t, tc.query(1), tc.body(1, item))
				if !got.Duplicate || got.Accepted != first.Accepted || got.Rejected != first.Rejected {
					t.Errorf("retry %d: got %+v, want duplicate with accepted %d", retry, got, first.Accepted)
				}
			}
			for suffix, want := range map[string]int64{"-a": 5, "-b": 1, "-c": 1} {
				if got := tn.count(t, "default", item+suffix); got != want {
					t.Errorf("after retries, count of %s: got %d, want %d", item+suffix, got, want)
				}
			}
			// The next sequence counts again.
			if got := tn.post(t, tc.query(2), tc.body(2, item)); got.Duplicate || got.Accepted != 3 {
				t.Errorf("sequence 2: got %+v, want accepted 3, not duplicate", got)
			}
			if got := tn.count(t, "default", item+"-a"); got != 10 {
				t.Errorf("after sequence 2, count of %s-a: got %d, want 10", item, got)
			}
		})
	}
	t.Run("without producer the retry counts again", func(t *testing.T) {
		tn.post(t, "", `[{"item":"alo"}]`)
		tn.post(t, "", `[{"item":"alo"}]`)
		if got := tn.count(t, "default", "alo"); got != 2 {
			t.Errorf("got count %d, want 2 (at-least-once without producer id)", got)
		}
	})
}

// TestEventsRejectedRequests sends invalid requests, each carrying a good
// event too, and checks the error names the field and that nothing of the
// request was counted (all-or-nothing validation).
func TestEventsRejectedRequests(t *testing.T) {
	tn := newTestNode(t)
	tn.createLeaderboard(t, "val")
	if got := tn.post(t, "?leaderboard=val", `[{"item":"keep","count":3},{"item":"keep2"}]`); got.Accepted != 2 {
		t.Fatalf("setup: got %+v, want accepted 2", got)
	}
	before := tn.topItems(t, "leaderboard=val&k=10").Items
	if want := []ranked{{"keep", 3}, {"keep2", 1}}; !slices.Equal(before, want) {
		t.Fatalf("setup: got %v, want %v", before, want)
	}

	good := `{"item":"fresh"}`
	arr := func(bad string) string { return "[" + good + "," + bad + "]" }
	ms := func(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10) }
	tests := []struct {
		name       string
		query      string // after "leaderboard=" ("" = val)
		body       []byte
		wantStatus int
		wantInMsg  []string
	}{
		{"malformed JSON array", "", []byte(`[` + good + `,{"item":`), 400, []string{"body"}},
		{"malformed JSON value", "", []byte(`[` + good + `,{"item":fresh}]`), 400, []string{"body"}},
		{"trailing data after array", "", []byte(arr(good) + ` x`), 400, []string{"body"}},
		{"malformed NDJSON line", "", []byte(good + "\n" + `{"item":`), 400, []string{"line 2"}},
		{"NDJSON line not an object", "", []byte(good + "\n" + `"fresh"`), 400, []string{"line 2"}},
		{"malformed envelope", "", []byte(`{"producer_id":"p","events":[` + good + `,]}`), 400, []string{"body", "envelope"}},
		{"envelope with a string sequence", "", []byte(`{"producer_id":"p","sequence":"1","events":[` + good + `]}`), 400, []string{"sequence"}},
		{"empty body", "", []byte{}, 400, []string{"body", "empty"}},
		{"blank body", "", []byte(" \n\t\n"), 400, []string{"body", "empty"}},
		{"empty array", "", []byte(`[]`), 400, []string{"events", "empty"}},
		{"envelope without events", "", []byte(`{"producer_id":"p","events":[]}`), 400, []string{"events", "empty"}},
		{"empty item", "", []byte(arr(`{"item":""}`)), 400, []string{"events[1].item", "empty"}},
		{"missing item", "", []byte(arr(`{"count":2}`)), 400, []string{"events[1].item", "missing"}},
		{"null item", "", []byte(arr(`{"item":null}`)), 400, []string{"events[1].item"}},
		{"item not a string", "", []byte(arr(`{"item":7}`)), 400, []string{"item"}},
		{"item over 512 bytes", "", []byte(arr(`{"item":"` + strings.Repeat("x", 513) + `"}`)), 400, []string{"events[1].item", "512"}},
		{"item of 257 two-byte runes", "", []byte(arr(`{"item":"` + strings.Repeat("é", 257) + `"}`)), 400, []string{"events[1].item", "512"}},
		{"invalid UTF-8 byte in item", "", []byte(arr(`{"item":"a` + "\xff" + `b"}`)), 400, []string{"body", "UTF-8"}},
		{"invalid UTF-8 byte in NDJSON", "", []byte(good + "\n{\"item\":\"\xc3\x28\"}"), 400, []string{"body", "UTF-8"}},
		{"lone high surrogate escape", "", []byte(arr(`{"item":"a\ud800"}`)), 400, []string{"events[1].item"}},
		{"lone low surrogate escape", "", []byte(arr(`{"item":"\udc00b"}`)), 400, []string{"events[1].item"}},
		{"reversed surrogate pair", "", []byte(arr(`{"item":"\udc00\ud800"}`)), 400, []string{"events[1].item"}},
		{"count beyond 2^40", "", []byte(arr(`{"item":"big","count":1099511627777}`)), 400, []string{"events[1].count", "limit"}},
		{"count not an integer", "", []byte(arr(`{"item":"frac","count":1.5}`)), 400, []string{"count"}},
		{"time 11 min ahead (ms)", "", []byte(arr(`{"item":"fut","time":` + ms(11*time.Minute) + `}`)), 400, []string{"events[1].time"}},
		{"time a day ahead (RFC 3339)", "", []byte(arr(`{"item":"fut","time":"` + time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339) + `"}`)), 400, []string{"events[1].time"}},
		{"time before 1970 (ms)", "", []byte(arr(`{"item":"old","time":-1000}`)), 400, []string{"events[1].time", "1970"}},
		{"time before 1970 (RFC 3339)", "", []byte(arr(`{"item":"old","time":"1969-12-31T23:59:59Z"}`)), 400, []string{"events[1].time", "1970"}},
		{"time not RFC 3339", "", []byte(arr(`{"item":"t","time":"yesterday"}`)), 400, []string{"events[1].time", "RFC 3339"}},
		{"time as a bool", "", []byte(arr(`{"item":"t","time":true}`)), 400, []string{"events[1].time"}},
		{"unknown field in array event", "", []byte(arr(`{"item":"u","colour":"red"}`)), 400, []string{"colour"}},
		{"unknown field in NDJSON event", "", []byte(good + "\n" + `{"item":"u","colour":"red"}`), 400, []string{"line 2", "colour"}},
		{"unknown field in envelope", "", []byte(`{"producer_id":"p","colour":"red","events":[` + good + `]}`), 400, []string{"colour"}},
		{"unknown field in envelope event", "", []byte(`{"producer_id":"p","events":[` + good + `,{"item":"u","colour":"red"}]}`), 400, []string{"colour"}},
		{"two leaderboards in one request", "", []byte(arr(`{"item":"x","leaderboard":"default"}`)), 400, []string{"events[1].leaderboard"}},
		{"epoch not a number", "val&producer_id=p&epoch=x", []byte(arr(`{"item":"e"}`)), 400, []string{"epoch"}},
		{"sequence negative", "val&producer_id=p&sequence=-1", []byte(arr(`{"item":"e"}`)), 400, []string{"sequence"}},
		{"producer_id not UTF-8", "val&producer_id=p%FF&sequence=1", []byte(arr(`{"item":"e"}`)), 400, []string{"producer_id", "UTF-8"}},
		{"producer_id over 128 bytes", "val&producer_id=" + strings.Repeat("p", 129) + "&sequence=1", []byte(arr(`{"item":"e"}`)), 400, []string{"producer_id", "128"}},
		{"producer_id without sequence", "val&producer_id=p", []byte(arr(`{"item":"e"}`)), 400, []string{"sequence", "at least 1"}},
		{"unknown leaderboard (query)", "nope", []byte(arr(`{"item":"x"}`)), 404, []string{"leaderboard", "nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.query
			if q == "" {
				q = "val"
			}
			st, raw := tn.do(t, http.MethodPost, "/api/events?leaderboard="+q, "application/json", tc.body)
			checkError(t, st, raw, tc.wantStatus, tc.wantInMsg...)
			if got := tn.count(t, "val", "fresh"); got != 0 {
				t.Errorf("the good event of the refused request was counted: got %d, want 0", got)
			}
		})
	}
	t.Run("unknown leaderboard (envelope)", func(t *testing.T) {
		st, raw := tn.do(t, http.MethodPost, "/api/events", "application/json", []byte(`{"leaderboard":"nope","events":[`+good+`]}`))
		checkError(t, st, raw, http.StatusNotFound, "nope")
	})
	t.Run("body over 32 MiB", func(t *testing.T) {
		body := make([]byte, 0, rpc.MaxBodyBytes+64)
		body = append(body, "["+good+","+good...)
		body = append(body, bytes.Repeat([]byte(" "), rpc.MaxBodyBytes)...)
		body = append(body, ']')
		st, raw := tn.do(t, http.MethodPost, "/api/events?leaderboard=val", "application/json", body)
		checkError(t, st, raw, http.StatusRequestEntityTooLarge, "body")
	})
	if got := tn.topItems(t, "leaderboard=val&k=10").Items; !slices.Equal(got, before) {
		t.Errorf("after the refused requests: got %v, want %v (unchanged)", got, before)
	}
	if got := tn.topItems(t, "leaderboard=val&k=10&time_window=1h").Items; !slices.Equal(got, before) {
		t.Errorf("after the refused requests, 1h window: got %v, want %v (unchanged)", got, before)
	}
}

func TestItemCount(t *testing.T) {
	tn := newTestNode(t)
	tn.post(t, "", `[{"item":"song","count":4},{"item":"song"},{"item":"other"}]`)
	tests := []struct {
		path       string
		wantStatus int
		wantCount  int64
		wantInMsg  []string
	}{
		{path: "/api/items/song?time_window=1h", wantStatus: 200, wantCount: 5},
		{path: "/api/items/song?time_window=1h&consistency=linearizable", wantStatus: 200, wantCount: 5},
		{path: "/api/items/song", wantStatus: 200, wantCount: 5},
		{path: "/api/items/song?time_window=all&consistency=cached", wantStatus: 200, wantCount: 5},
		{path: "/api/items/other?time_window=1d", wantStatus: 200, wantCount: 1},
		{path: "/api/items/absent?time_window=1h", wantStatus: 200, wantCount: 0},
		{path: "/api/items/song?time_window=2h", wantStatus: 400, wantInMsg: []string{"window"}},
		{path: "/api/items/song?time_window=xyz", wantStatus: 400, wantInMsg: []string{"time_window"}},
		{path: "/api/items/song?consistency=bogus", wantStatus: 400, wantInMsg: []string{"consistency"}},
		{path: "/api/items/song?leaderboard=nope", wantStatus: 404, wantInMsg: []string{"nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			st, raw := tn.do(t, http.MethodGet, tc.path, "", nil)
			if tc.wantStatus != http.StatusOK {
				checkError(t, st, raw, tc.wantStatus, tc.wantInMsg...)
				return
			}
			if st != http.StatusOK {
				t.Fatalf("got status %d, want 200; body %s", st, raw)
			}
			var out struct {
				ID    string `json:"id"`
				Count *int64 `json:"count"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			if out.Count == nil || *out.Count != tc.wantCount {
				t.Errorf("got %s, want count %d", raw, tc.wantCount)
			}
			if want := strings.TrimPrefix(strings.Split(tc.path, "?")[0], "/api/items/"); out.ID != want {
				t.Errorf("got id %q, want %q", out.ID, want)
			}
		})
	}
}

type leaderboardJSON struct {
	Name            string   `json:"name"`
	Mode            string   `json:"mode"`
	Windows         []string `json:"windows"`
	KMax            uint32   `json:"k_max"`
	Clock           string   `json:"clock"`
	AllowedLateness string   `json:"allowed_lateness"`
}

func TestLeaderboards(t *testing.T) {
	tn := newTestNode(t)
	const plays = `{"name":"plays","mode":"exact","windows":["1m","1h"],"k_max":10,"clock":"event","allowed_lateness":"5m"}`
	want := leaderboardJSON{Name: "plays", Mode: "exact", Windows: []string{"1m", "1h"}, KMax: 10, Clock: "event", AllowedLateness: "5m"}
	names := func(t *testing.T) []string {
		t.Helper()
		var out struct {
			Leaderboards []leaderboardJSON `json:"leaderboards"`
		}
		tn.doJSON(t, http.MethodGet, "/api/leaderboards", "", http.StatusOK, &out)
		var ns []string
		for _, l := range out.Leaderboards {
			ns = append(ns, l.Name)
		}
		return ns
	}

	t.Run("create", func(t *testing.T) {
		var got leaderboardJSON
		tn.doJSON(t, http.MethodPost, "/api/leaderboards", plays, http.StatusCreated, &got)
		if !equalLeaderboard(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("list", func(t *testing.T) {
		if got := names(t); !slices.Equal(got, []string{"default", "plays"}) {
			t.Errorf("got %v, want [default plays]", got)
		}
	})
	t.Run("describe", func(t *testing.T) {
		var got struct {
			Leaderboard leaderboardJSON `json:"leaderboard"`
		}
		tn.doJSON(t, http.MethodGet, "/api/leaderboards/plays", "", http.StatusOK, &got)
		if !equalLeaderboard(got.Leaderboard, want) {
			t.Errorf("got %+v, want %+v", got.Leaderboard, want)
		}
		var def struct {
			Leaderboard leaderboardJSON `json:"leaderboard"`
		}
		tn.doJSON(t, http.MethodGet, "/api/leaderboards/default", "", http.StatusOK, &def)
		wantDef := leaderboardJSON{Name: "default", Mode: "exact", Windows: []string{"1m", "1h", "1d", "7d"}, KMax: 1000, Clock: "wall"}
		if !equalLeaderboard(def.Leaderboard, wantDef) {
			t.Errorf("default: got %+v, want %+v", def.Leaderboard, wantDef)
		}
	})
	t.Run("use", func(t *testing.T) {
		now := time.Now().UnixMilli()
		body := fmt.Sprintf(`[{"item":"x","time":%d},{"item":"x","time":%d},{"item":"y","time":%d}]`, now, now, now)
		if got := tn.post(t, "?leaderboard=plays", body); got.Accepted != 3 {
			t.Errorf("got %+v, want accepted 3", got)
		}
		if got, want := tn.topItems(t, "leaderboard=plays&k=10&time_window=1h").Items, []ranked{{"x", 2}, {"y", 1}}; !slices.Equal(got, want) {
			t.Errorf("top items: got %v, want %v", got, want)
		}
		for _, tc := range []struct{ query, field string }{{"k=11", "k"}, {"time_window=1d", "window"}} {
			st, raw := tn.do(t, http.MethodGet, "/api/top-items?leaderboard=plays&"+tc.query, "", nil)
			checkError(t, st, raw, http.StatusBadRequest, tc.field)
		}
	})

	errTests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantInMsg  []string
	}{
		{"duplicate create", "POST", "/api/leaderboards", plays, 409, []string{"plays"}},
		{"duplicate default", "POST", "/api/leaderboards", `{"name":"default"}`, 409, []string{"default"}},
		{"bad mode", "POST", "/api/leaderboards", `{"name":"b1","mode":"fuzzy"}`, 400, []string{"mode", "fuzzy"}},
		{"bad clock", "POST", "/api/leaderboards", `{"name":"b2","clock":"sundial"}`, 400, []string{"clock", "sundial"}},
		{"bad window", "POST", "/api/leaderboards", `{"name":"b3","windows":["1m","xyz"]}`, 400, []string{"windows[1]", "xyz"}},
		{"zero window", "POST", "/api/leaderboards", `{"name":"b4","windows":["0s"]}`, 400, []string{"windows[0]"}},
		{"sub-second window", "POST", "/api/leaderboards", `{"name":"b5","windows":["1500ms"]}`, 400, []string{"window"}},
		{"repeated window", "POST", "/api/leaderboards", `{"name":"b6","windows":["1h","60m"]}`, 400, []string{"window"}},
		{"bad allowed_lateness", "POST", "/api/leaderboards", `{"name":"b7","allowed_lateness":"soon"}`, 400, []string{"allowed_lateness"}},
		{"k_max too large", "POST", "/api/leaderboards", `{"name":"b8","k_max":100001}`, 400, []string{"k_max"}},
		{"empty name", "POST", "/api/leaderboards", `{"mode":"exact"}`, 400, []string{"name"}},
		{"unknown field", "POST", "/api/leaderboards", `{"name":"b9","colour":"red"}`, 400, []string{"colour"}},
		{"malformed JSON", "POST", "/api/leaderboards", `{"name":`, 400, []string{"body"}},
		{"drop default", "DELETE", "/api/leaderboards/default", "", 400, []string{"default"}},
		{"drop unknown", "DELETE", "/api/leaderboards/nope", "", 404, []string{"nope"}},
		{"describe unknown", "GET", "/api/leaderboards/nope", "", 404, []string{"nope"}},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			st, raw := tn.do(t, tc.method, tc.path, "application/json", body)
			checkError(t, st, raw, tc.wantStatus, tc.wantInMsg...)
		})
	}
	t.Run("refused creates created nothing", func(t *testing.T) {
		if got := names(t); !slices.Equal(got, []string{"default", "plays"}) {
			t.Errorf("got %v, want [default plays]", got)
		}
	})

	t.Run("drop", func(t *testing.T) {
		st, raw := tn.do(t, http.MethodDelete, "/api/leaderboards/plays", "", nil)
		if st != http.StatusNoContent {
			t.Fatalf("got status %d, want 204; body %s", st, raw)
		}
		if got := names(t); !slices.Equal(got, []string{"default"}) {
			t.Errorf("list after drop: got %v, want [default]", got)
		}
	})
	afterDrop := []struct {
		name   string
		method string
		path   string
		body   string
	}{
		{"top-items", "GET", "/api/top-items?leaderboard=plays", ""},
		{"top-items linearizable", "GET", "/api/top-items?leaderboard=plays&consistency=linearizable", ""},
		{"item", "GET", "/api/items/x?leaderboard=plays", ""},
		{"describe", "GET", "/api/leaderboards/plays", ""},
		{"events", "POST", "/api/events?leaderboard=plays", `[{"item":"x"}]`},
		{"events (envelope)", "POST", "/api/events", `{"leaderboard":"plays","events":[{"item":"x"}]}`},
		{"drop again", "DELETE", "/api/leaderboards/plays", ""},
	}
	for _, tc := range afterDrop {
		t.Run("after drop: "+tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			st, raw := tn.do(t, tc.method, tc.path, "application/json", body)
			checkError(t, st, raw, http.StatusNotFound, "plays")
		})
	}
	t.Run("re-create starts from zero", func(t *testing.T) {
		tn.doJSON(t, http.MethodPost, "/api/leaderboards", plays, http.StatusCreated, nil)
		if got := tn.topItems(t, "leaderboard=plays&k=10").Items; len(got) != 0 {
			t.Errorf("got %v, want no items (counts of the dropped incarnation must not return)", got)
		}
	})
}

func equalLeaderboard(a, b leaderboardJSON) bool {
	return a.Name == b.Name && a.Mode == b.Mode && slices.Equal(a.Windows, b.Windows) && a.KMax == b.KMax &&
		a.Clock == b.Clock && a.AllowedLateness == b.AllowedLateness
}

func TestHealthReadyMetrics(t *testing.T) {
	tn := newTestNode(t)
	tn.post(t, "", `[{"item":"m"}]`)
	tests := []struct {
		path     string
		contains []string
	}{
		{"/healthz", []string{`"ok"`}},
		{"/readyz", []string{`"ready"`}},
		{"/metrics", []string{"topkd_ingest_events_total{leaderboard=\"default\"} 1", "topkd_raft_state{", "topkd_query_seconds"}},
		{"/api/status", []string{`"node_id":"n1"`}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			st, raw := tn.do(t, http.MethodGet, tc.path, "", nil)
			if st != http.StatusOK {
				t.Fatalf("got status %d, want 200; body %s", st, raw)
			}
			for _, s := range tc.contains {
				if !bytes.Contains(raw, []byte(s)) {
					t.Errorf("body lacks %q:\n%.2000s", s, raw)
				}
			}
		})
	}
	t.Run("no profiles on the client port", func(t *testing.T) {
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1"} {
			if st, _ := tn.do(t, http.MethodGet, path, "", nil); st != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404 (profiles are served on --debug-addr only)", path, st)
			}
		}
	})
	t.Run("/metrics raft_state leader", func(t *testing.T) {
		_, raw := tn.do(t, http.MethodGet, "/metrics", "", nil)
		for _, g := range []string{"meta", "p0", "p3"} {
			want := fmt.Sprintf(`topkd_raft_state{group="%s",state="Leader"} 1`, g)
			if !bytes.Contains(raw, []byte(want)) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
}

// TestVerifyReplicasSingleNode: on one node every partition has one
// replica, which records a digest at the checksum entry.
func TestVerifyReplicasSingleNode(t *testing.T) {
	tn := newTestNode(t)
	tn.post(t, "", `[{"item":"a"},{"item":"b"}]`)
	st, raw := tn.do(t, http.MethodPost, "/api/verify-replicas", "", nil)
	if st != http.StatusOK {
		t.Fatalf("status %d, body %s", st, raw)
	}
	var res struct {
		Consistent bool `json:"consistent"`
		Partitions []struct {
			Index    string `json:"index"`
			Replicas []struct {
				NodeID string `json:"nodeId"`
				Digest string `json:"digest"`
			} `json:"replicas"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Consistent || len(res.Partitions) == 0 {
		t.Fatalf("got %s", raw)
	}
	for _, p := range res.Partitions {
		if len(p.Replicas) != 1 || len(p.Replicas[0].Digest) != 16 || p.Index == "" {
			t.Errorf("partition %+v: want one replica with a 16-digit digest", p)
		}
	}
}
