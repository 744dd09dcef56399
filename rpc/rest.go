package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/topkd/topkd/fsm"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
	"github.com/topkd/topkd/server"
	"github.com/topkd/topkd/server/security"
)

// MaxBodyBytes bounds a request body of the JSON API.
const MaxBodyBytes = 32 << 20

type rest struct {
	n *server.Node
}

func (h *rest) register(mux *http.ServeMux, g *guard) {
	mux.HandleFunc("GET /api/top-items", g.rest(security.Read, h.topItems))
	mux.HandleFunc("POST /api/events", g.rest(security.Write, h.events))
	mux.HandleFunc("GET /api/items/{id}", g.rest(security.Read, h.item))
	mux.HandleFunc("GET /api/leaderboards", g.rest(security.Read, h.listLeaderboards))
	mux.HandleFunc("POST /api/leaderboards", g.rest(security.Admin, h.createLeaderboard))
	mux.HandleFunc("GET /api/leaderboards/{name}", g.rest(security.Read, h.describeLeaderboard))
	mux.HandleFunc("DELETE /api/leaderboards/{name}", g.rest(security.Admin, h.dropLeaderboard))
	mux.HandleFunc("GET /api/status", g.rest(security.Read, h.status))
	mux.HandleFunc("POST /api/verify-replicas", g.rest(security.Admin, h.verifyReplicas))
	mux.HandleFunc("POST /api/gossip-keys", g.rest(security.Admin, h.gossipKeys))
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	c := code(err)
	if c == connect.CodeResourceExhausted {
		w.Header().Set("Retry-After", "1")
	}
	if server.NotApplied(err) {
		w.Header().Set(OutcomeHeader, OutcomeRefused)
	}
	writeJSON(w, httpStatus(c), map[string]apiError{"error": {Code: c.String(), Message: err.Error()}})
}

func badRequest(field, format string, a ...any) error {
	return &server.FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

type windowJSON struct {
	Type     string `json:"type"`
	Duration string `json:"duration,omitempty"`
	Start    string `json:"start,omitempty"`
	End      string `json:"end,omitempty"`
}

func windowOf(d time.Duration, startMs, endMs int64) windowJSON {
	w := windowJSON{Type: "global"}
	if d != 0 {
		w = windowJSON{Type: "sliding", Duration: FormatWindow(d)}
	}
	if endMs > 0 { // 0: the partitions have seen no time yet
		w.End = rfc3339(endMs)
		if d != 0 {
			w.Start = rfc3339(startMs)
		}
	}
	return w
}

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

type itemJSON struct {
	ID         string `json:"id"`
	Count      int64  `json:"count"`
	LowerBound int64  `json:"lower_bound"`
	UpperBound int64  `json:"upper_bound"`
}

type topJSON struct {
	Items       []itemJSON `json:"items"`
	Window      windowJSON `json:"window"`
	Approximate bool       `json:"approximate"`
	Guaranteed  bool       `json:"guaranteed"`
	MaxError    int64      `json:"max_error"`
	GeneratedAt string     `json:"generated_at"`
	Leaderboard string     `json:"leaderboard"`
	Consistency string     `json:"consistency"`
	AsOf        string     `json:"as_of"`
	// With partial=true: the partitions left out, when any.
	Partial           bool  `json:"partial,omitempty"`
	MissingPartitions []int `json:"missing_partitions,omitempty"`
}

func (h *rest) topItems(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k := 0 // absent or 0: the node's default, min(100, k_max), as over Connect
	if s := q.Get("k"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			writeErr(w, badRequest("k", "%q is not an integer", s))
			return
		}
		k = v // the node checks the range, for every API alike
	}
	win, err := ParseWindow(q.Get("time_window"))
	if err != nil {
		writeErr(w, badRequest("time_window", "%v", err))
		return
	}
	cons, err := server.ParseConsistency(q.Get("consistency"), server.Cached)
	if err != nil {
		writeErr(w, err)
		return
	}
	partial, err := parseBool(q.Get("partial"))
	if err != nil {
		writeErr(w, badRequest("partial", "%v", err))
		return
	}
	a, err := h.n.TopK(r.Context(), server.TopKQuery{Leaderboard: q.Get("leaderboard"), Window: win, K: k, Consistency: cons,
		AllowPartial: partial})
	if err != nil {
		writeErr(w, err)
		return
	}
	out := topJSON{Items: make([]itemJSON, len(a.Items)), Window: windowOf(win, a.WindowStartMs, a.WindowEndMs),
		Approximate: a.Approximate, Guaranteed: a.Guaranteed, MaxError: a.MaxError, GeneratedAt: time.Now().UTC().Format(time.RFC3339Nano),
		Leaderboard: a.Leaderboard, Consistency: a.Consistency.String(), AsOf: a.AsOf.UTC().Format(time.RFC3339Nano)}
	for i, it := range a.Items {
		out.Items[i] = itemJSON{ID: it.Item, Count: it.Count, LowerBound: it.Lower, UpperBound: it.Upper}
	}
	out.Partial, out.MissingPartitions = len(a.Missing) > 0, a.Missing
	writeJSON(w, http.StatusOK, out)
}

// parseBool reads an optional boolean query parameter.
func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	return strconv.ParseBool(s)
}

// eventJSON is one event of POST /api/events. time is RFC 3339 or unix milliseconds.
type eventJSON struct {
	Item        *string         `json:"item"`
	Count       *int64          `json:"count"`
	Time        json.RawMessage `json:"time"`
	Leaderboard string          `json:"leaderboard"`
}

type batchJSON struct {
	Leaderboard string      `json:"leaderboard"`
	ProducerID  string      `json:"producer_id"`
	Epoch       uint64      `json:"epoch"`
	Sequence    uint64      `json:"sequence"`
	Events      []eventJSON `json:"events"`
}

// events accepts a JSON array, NDJSON, or {"producer_id":..,"events":[..]}.
// Producer fields may also come as query parameters. Without a producer id
// ingest is at-least-once: a retried request may be counted twice.
func (h *rest) events(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]apiError{"error": {Code: "invalid_argument",
				Message: fmt.Sprintf("body exceeds %d bytes; split the batch", MaxBodyBytes)}})
			return
		}
		writeErr(w, badRequest("body", "read: %v", err))
		return
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD and merge distinct ids: refuse it up front.
	if !utf8.Valid(body) {
		writeErr(w, badRequest("body", "not valid UTF-8"))
		return
	}
	b, err := parseBatch(body)
	if err != nil {
		writeErr(w, err)
		return
	}
	q := r.URL.Query()
	if v := q.Get("leaderboard"); v != "" {
		b.Leaderboard = v
	}
	if v := q.Get("producer_id"); v != "" {
		b.ProducerID = v
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"epoch", &b.Epoch}, {"sequence", &b.Sequence}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeErr(w, badRequest(f.name, "%q is not an unsigned integer", v))
				return
			}
			*f.dst = n
		}
	}
	req := server.IngestRequest{Leaderboard: b.Leaderboard, ProducerID: b.ProducerID, Epoch: b.Epoch, Sequence: b.Sequence,
		Events: make([]server.Event, len(b.Events))}
	for i, e := range b.Events {
		field := fmt.Sprintf("events[%d]", i)
		if e.Item == nil {
			writeErr(w, badRequest(field+".item", "missing"))
			return
		}
		if strings.ContainsRune(*e.Item, utf8.RuneError) {
			writeErr(w, badRequest(field+".item", "contains U+FFFD or an invalid escape; items must be valid UTF-8"))
			return
		}
		if e.Leaderboard != "" && req.Leaderboard == "" {
			req.Leaderboard = e.Leaderboard
		}
		if e.Leaderboard != "" && e.Leaderboard != req.Leaderboard {
			writeErr(w, badRequest(field+".leaderboard", "%q differs from the batch's %q; send one leaderboard per request", e.Leaderboard, req.Leaderboard))
			return
		}
		ev := server.Event{Item: *e.Item} // count absent or 0 means 1, as over Connect
		if e.Count != nil {
			ev.Count = *e.Count
		}
		if len(e.Time) > 0 && string(e.Time) != "null" {
			t, err := parseTime(e.Time)
			if err != nil {
				writeErr(w, badRequest(field+".time", "%v", err))
				return
			}
			ev.TimeMs = t
		}
		req.Events[i] = ev
	}
	res, err := h.n.Ingest(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	late := map[string]uint64{}
	for d, n := range res.Late {
		late[FormatWindow(d)] = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"accepted": res.Accepted, "duplicate": res.Duplicate,
		"late_dropped": late, "rejected": res.Rejected})
}

func parseBatch(body []byte) (batchJSON, error) {
	var b batchJSON
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) == 0:
		return b, badRequest("body", "empty")
	case trimmed[0] == '[':
		if err := strictUnmarshal(trimmed, &b.Events); err != nil {
			return b, badRequest("body", "malformed JSON array of events: %v", err)
		}
		return b, nil
	}
	// An envelope object (possibly spanning lines), or NDJSON (one event per line).
	if isEnvelope(trimmed) {
		if err := strictUnmarshal(trimmed, &b); err != nil {
			return b, badRequest("body", "malformed envelope {\"producer_id\",...,\"events\":[...]}: %v", err)
		}
		return b, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(trimmed))
	sc.Buffer(make([]byte, 64<<10), MaxBodyBytes)
	line := 0
	for sc.Scan() {
		line++
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		var e eventJSON
		if err := strictUnmarshal(l, &e); err != nil {
			return b, badRequest(fmt.Sprintf("line %d", line), "malformed JSON event: %v", err)
		}
		b.Events = append(b.Events, e)
	}
	if err := sc.Err(); err != nil {
		return b, badRequest("body", "%v", err)
	}
	return b, nil
}

// isEnvelope reports whether the body's first JSON value is an object with
// an "events" key; when it does not decode, whether its first line names "events".
func isEnvelope(body []byte) bool {
	var first map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&first); err != nil {
		line, _, _ := bytes.Cut(body, []byte("\n"))
		return bytes.Contains(line, []byte(`"events"`))
	}
	_, ok := first["events"]
	return ok
}

// strictUnmarshal decodes one JSON value, refusing unknown fields, a key
// given twice in one object and trailing data.
func strictUnmarshal(data []byte, v any) error {
	if k, dup := duplicateKey(data); dup {
		return fmt.Errorf("key %q appears twice in one object", k)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// parseTime reads RFC 3339 strings or unix milliseconds.
func parseTime(raw json.RawMessage) (int64, error) {
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, fmt.Errorf("%q is not RFC 3339 (e.g. 2001-01-01T00:00:00Z) or unix milliseconds", s)
		}
		return t.UnixMilli(), nil
	}
	var ms int64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return 0, fmt.Errorf("%s is not RFC 3339 or unix milliseconds", raw)
	}
	return ms, nil
}

func (h *rest) item(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	win, err := ParseWindow(q.Get("time_window"))
	if err != nil {
		writeErr(w, badRequest("time_window", "%v", err))
		return
	}
	cons, err := server.ParseConsistency(q.Get("consistency"), server.Leader)
	if err != nil {
		writeErr(w, err)
		return
	}
	id := r.PathValue("id")
	a, err := h.n.Count(r.Context(), q.Get("leaderboard"), id, win, cons)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := map[string]any{"id": id, "count": a.Count, "lower_bound": a.Lower, "upper_bound": a.Upper,
		"window": windowOf(win, a.WindowStartMs, a.WindowEndMs), "approximate": a.Approximate, "consistency": a.Consistency.String()}
	if a.Rank > 0 {
		out["rank"] = a.Rank // among the cached top k_max, refreshed every second
	}
	writeJSON(w, http.StatusOK, out)
}

// leaderboardJSON is the JSON form of a leaderboard definition.
type leaderboardJSON struct {
	Name            string   `json:"name"`
	Mode            string   `json:"mode,omitempty"`
	Windows         []string `json:"windows,omitempty"`
	KMax            uint32   `json:"k_max,omitempty"`
	Clock           string   `json:"clock,omitempty"`
	AllowedLateness string   `json:"allowed_lateness,omitempty"`
	MaxItems        uint64   `json:"max_items,omitempty"`
	Epsilon         float64  `json:"epsilon,omitempty"`
	Delta           float64  `json:"delta,omitempty"`
	Capacity        uint64   `json:"capacity,omitempty"`
	FilterCells     uint32   `json:"filter_cells,omitempty"`
	Incarnation     uint64   `json:"incarnation,omitempty"`
	Version         uint64   `json:"version,omitempty"`
}

// ConfigFromFields converts the JSON/flag form to a config (shared with Connect).
func ConfigFromFields(name, mode string, windows []string, kmax uint32, clock, lateness string, maxItems uint64,
	eps, delta float64, capacity uint64, filterCells uint32) (*pb.LeaderboardConfig, error) {
	c := &pb.LeaderboardConfig{Name: name, KMax: kmax, MaxItems: maxItems, Epsilon: eps, Delta: delta, Capacity: capacity,
		FilterCells: filterCells}
	switch mode {
	case "", "exact":
		c.Mode = pb.Mode_MODE_EXACT
	case "cms":
		c.Mode = pb.Mode_MODE_CMS
	case "spacesaving":
		c.Mode = pb.Mode_MODE_SPACESAVING
	default:
		return nil, badRequest("mode", "%q is not one of exact, cms, spacesaving", mode)
	}
	switch clock {
	case "", "wall":
		c.Clock = pb.Clock_CLOCK_WALL
	case "event":
		c.Clock = pb.Clock_CLOCK_EVENT
	default:
		return nil, badRequest("clock", "%q is not one of wall, event", clock)
	}
	if lateness != "" {
		d, err := ParseWindow(lateness)
		if err != nil || lateness == "all" {
			return nil, badRequest("allowed_lateness", "%q is not a duration", lateness)
		}
		c.AllowedLatenessMs = d.Milliseconds()
	}
	if windows == nil {
		for _, d := range fsm.DefaultWindows {
			c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: d.Milliseconds()})
		}
	}
	for i, s := range windows {
		if s == "all" {
			continue
		}
		d, err := ParseWindow(s)
		if err != nil {
			return nil, badRequest(fmt.Sprintf("windows[%d]", i), "%v", err)
		}
		c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: d.Milliseconds()})
	}
	return c, nil
}

// ConfigJSON renders a config in the JSON/flag form.
func ConfigJSON(c *pb.LeaderboardConfig) leaderboardJSON {
	out := leaderboardJSON{Name: c.Name, Mode: modeString(c.Mode), KMax: c.KMax, Clock: "wall", MaxItems: c.MaxItems,
		Epsilon: c.Epsilon, Delta: c.Delta, Capacity: c.Capacity, FilterCells: c.FilterCells, Incarnation: c.Incarnation, Version: c.Version,
		Windows: []string{}}
	if c.Clock == pb.Clock_CLOCK_EVENT {
		out.Clock = "event"
	}
	if c.AllowedLatenessMs > 0 {
		out.AllowedLateness = fsm.FormatSpan(time.Duration(c.AllowedLatenessMs) * time.Millisecond)
	}
	for _, w := range c.Windows {
		out.Windows = append(out.Windows, FormatWindow(time.Duration(w.DurationMs)*time.Millisecond))
	}
	return out
}

func modeString(m pb.Mode) string {
	switch m {
	case pb.Mode_MODE_CMS:
		return "cms"
	case pb.Mode_MODE_SPACESAVING:
		return "spacesaving"
	}
	return "exact"
}

func (h *rest) listLeaderboards(w http.ResponseWriter, r *http.Request) {
	out := []leaderboardJSON{}
	for _, c := range h.n.Leaderboards() {
		out = append(out, ConfigJSON(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"leaderboards": out})
}

func (h *rest) createLeaderboard(w http.ResponseWriter, r *http.Request) {
	var in leaderboardJSON
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeErr(w, badRequest("body", "read: %v", err))
		return
	}
	if err := strictUnmarshal(body, &in); err != nil {
		writeErr(w, badRequest("body", "malformed leaderboard JSON: %v", err))
		return
	}
	c, err := ConfigFromFields(in.Name, in.Mode, in.Windows, in.KMax, in.Clock, in.AllowedLateness, in.MaxItems, in.Epsilon, in.Delta, in.Capacity, in.FilterCells)
	if err != nil {
		writeErr(w, err)
		return
	}
	created, err := h.n.CreateLeaderboard(r.Context(), c)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ConfigJSON(created))
}

func (h *rest) describeLeaderboard(w http.ResponseWriter, r *http.Request) {
	s, err := h.n.DescribeLeaderboard(r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	wins := []map[string]any{}
	for _, ws := range s.Windows {
		wins = append(wins, map[string]any{"window": FormatWindow(ws.Window), "distinct_items": ws.PositiveItems, "late_dropped": ws.LateDropped})
	}
	writeJSON(w, http.StatusOK, map[string]any{"leaderboard": ConfigJSON(s.Config), "accepted": s.Accepted,
		"rejected": s.Rejected, "distinct_items": s.Distinct, "windows": wins})
}

func (h *rest) dropLeaderboard(w http.ResponseWriter, r *http.Request) {
	if err := h.n.DropLeaderboard(r.Context(), r.PathValue("name")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.n.Status(r.Context()))
}

// verifyReplicas answers 200 when every partition's replicas agree, else
// 409 with the same body.
func (h *rest) verifyReplicas(w http.ResponseWriter, r *http.Request) {
	res := verifyPB(h.n.VerifyReplicas(r.Context()))
	b, err := protojson.Marshal(res)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	status := http.StatusOK
	if !res.Consistent {
		status = http.StatusConflict
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
