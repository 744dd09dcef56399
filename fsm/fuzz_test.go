package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// This file fuzzes the two decoders of outside input (log commands and
// snapshot streams) and pins the corruption handling around them: CRC
// failures, the OnFatal hook and ignorable unknown commands.

const fzBaseMs = int64(1_700_000_000_000)

var fzCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// ---- command seeds ----

func fzIngestSample() *pb.IngestEntry {
	sec := fzBaseMs / 1000
	return &pb.IngestEntry{LeaderTimeMs: fzBaseMs, Parts: []*pb.ProducerPart{
		part("p1", 1, 7, deltas("default", 1, ev{"a", 3, 0}, ev{"b", -2, sec}, ev{"ü", 1 << 40, sec + 5})),
		{Boards: []*pb.LeaderboardDeltas{{Leaderboard: "x", Incarnation: 2, Items: []string{"z", "y"},
			Deltas: []int64{1, -1}, EventTimesS: []int64{0, sec}, Events: []uint32{5, 0}}}},
	}}
}

func fzEventConfig() *pb.LeaderboardConfig {
	return &pb.LeaderboardConfig{Name: "event", Incarnation: 2, Version: 3, Mode: pb.Mode_MODE_EXACT,
		Clock: pb.Clock_CLOCK_EVENT, AllowedLatenessMs: 2000, KMax: 4, MaxItems: 10,
		Windows: []*pb.WindowSpec{{DurationMs: 30_000}, {DurationMs: 120_000, BucketMs: 10_000}}}
}

// fzCommandSeeds returns valid envelopes of every type, keyed by a name.
func fzCommandSeeds() map[string][]byte {
	tickPayload, err := proto.Marshal(&pb.Tick{LeaderTimeMs: fzBaseMs, Watermarks: []*pb.Watermark{{Leaderboard: "event", Incarnation: 2, MaxEventTimeMs: fzBaseMs}}})
	if err != nil {
		panic(err)
	}
	return map[string][]byte{
		"ingest":              mustEncode(EncodeIngest(fzIngestSample())),
		"ingest-empty":        mustEncode(EncodeIngest(&pb.IngestEntry{})),
		"tick":                mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: fzBaseMs, Watermarks: []*pb.Watermark{{Leaderboard: "event", Incarnation: 2, MaxEventTimeMs: fzBaseMs - 5}}})),
		"config-default":      mustEncode(EncodeConfig(DefaultLeaderboard(1))),
		"config-event":        mustEncode(EncodeConfig(fzEventConfig())),
		"drop":                mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: "event", Incarnation: 2})),
		"checksum":            mustEncode(EncodeChecksum(&pb.Checksum{Id: 9, LeaderTimeMs: fzBaseMs})),
		"unknown-ignorable":   EncodeRaw(200, true, []byte("future command")),
		"unknown-fatal":       EncodeRaw(200, false, []byte("future command")),
		"known-flagged":       EncodeRaw(TypeTick, true, tickPayload),
		"unknown-zero-type":   EncodeRaw(0, true, nil),
		"ingest-bad-columns":  EncodeRaw(TypeIngest, false, fzMarshal(&pb.IngestEntry{Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{{Leaderboard: "d", Items: []string{"a", "b"}, Deltas: []int64{1}, EventTimesS: []int64{0, 0}}}}}})),
		"ingest-bad-events":   EncodeRaw(TypeIngest, false, fzMarshal(&pb.IngestEntry{Parts: []*pb.ProducerPart{{Boards: []*pb.LeaderboardDeltas{{Leaderboard: "d", Items: []string{"a"}, Deltas: []int64{1}, EventTimesS: []int64{0}, Events: []uint32{1, 2}}}}}})),
		"config-garbage":      EncodeRaw(TypeConfig, false, []byte{0xff, 0xff, 0xff}),
		"config-invalid-utf8": EncodeRaw(TypeConfig, false, []byte{0x0a, 0x02, 0xff, 0xfe}),
	}
}

func fzMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// fzMutations returns truncations and single-bit flips of a valid input.
func fzMutations(data []byte) [][]byte {
	var out [][]byte
	for _, n := range []int{0, 1, 7, 8, len(data) / 2, len(data) - 1} {
		if n >= 0 && n < len(data) {
			out = append(out, slices.Clone(data[:n]))
		}
	}
	for _, i := range []int{0, 1, 2, 3, 4, 8, len(data) / 2, len(data) - 1} {
		if i >= 0 && i < len(data) {
			m := slices.Clone(data)
			m[i] ^= 1 << (i % 8)
			out = append(out, m)
		}
	}
	return out
}

// fzClassifyCommand is an independent oracle for DecodeCommand written from
// the envelope layout: version 1, type, flags, reserved, CRC32C LE, payload.
// It returns nil for input that must decode, else the sentinel it must wrap.
func fzClassifyCommand(data []byte) error {
	if len(data) < 8 || data[0] != 1 {
		return ErrCorrupt
	}
	payload := data[8:]
	if crc32.Checksum(payload, fzCastagnoli) != binary.LittleEndian.Uint32(data[4:8]) {
		return ErrCorrupt
	}
	var m proto.Message
	switch data[1] {
	case 1:
		m = &pb.IngestEntry{}
	case 2:
		m = &pb.Tick{}
	case 3:
		m = &pb.LeaderboardConfig{}
	case 4:
		m = &pb.DropLeaderboard{}
	case 5:
		m = &pb.Checksum{}
	default:
		if data[2]&1 != 0 {
			return nil
		}
		return ErrUnknownCommand
	}
	if proto.Unmarshal(payload, m) != nil {
		return ErrCorrupt
	}
	if e, ok := m.(*pb.IngestEntry); ok {
		for _, p := range e.Parts {
			for _, b := range p.Boards {
				n := len(b.Items)
				if len(b.Deltas) != n || len(b.EventTimesS) != n || (len(b.Events) != 0 && len(b.Events) != n) {
					return ErrCorrupt
				}
			}
		}
	}
	return nil
}

// fzPayload returns the single decoded message of c, or nil when ignored.
func fzPayload(c Command) (proto.Message, int) {
	var m proto.Message
	n := 0
	if c.Ingest != nil {
		m, n = c.Ingest, n+1
	}
	if c.Tick != nil {
		m, n = c.Tick, n+1
	}
	if c.Config != nil {
		m, n = c.Config, n+1
	}
	if c.Drop != nil {
		m, n = c.Drop, n+1
	}
	if c.Checksum != nil {
		m, n = c.Checksum, n+1
	}
	return m, n
}

func fzReencode(c Command, payload []byte) ([]byte, error) {
	switch {
	case c.Ignored:
		return EncodeRaw(c.Type, true, payload), nil
	case c.Ingest != nil:
		return EncodeIngest(c.Ingest)
	case c.Tick != nil:
		return EncodeTick(c.Tick)
	case c.Config != nil:
		return EncodeConfig(c.Config)
	case c.Drop != nil:
		return EncodeDrop(c.Drop)
	case c.Checksum != nil:
		return EncodeChecksum(c.Checksum)
	}
	return nil, fmt.Errorf("command %+v has no payload", c)
}

func fzCheckDecode(t *testing.T, data []byte) {
	t.Helper()
	c, err := DecodeCommand(data)
	want := fzClassifyCommand(data)
	if want == nil && err != nil {
		t.Fatalf("DecodeCommand(%x) = %v, want success", data, err)
	}
	if want != nil {
		if !errors.Is(err, want) {
			t.Fatalf("DecodeCommand(%x) error = %v, want one wrapping %v", data, err, want)
		}
		if _, n := fzPayload(c); n != 0 || c.Ignored || c.Type != 0 {
			t.Fatalf("DecodeCommand(%x) failed but returned %+v, want the zero Command", data, c)
		}
		return
	}
	if got, wantT := c.Type, CommandType(data[1]); got != wantT {
		t.Fatalf("decoded type %d, envelope says %d", got, wantT)
	}
	m, n := fzPayload(c)
	switch {
	case c.Ignored && n != 0:
		t.Fatalf("ignored command %d also carries a payload %T", c.Type, m)
	case !c.Ignored && n != 1:
		t.Fatalf("command %d decoded into %d messages, want 1", c.Type, n)
	}
	re, err := fzReencode(c, data[8:])
	if err != nil {
		t.Fatalf("re-encode %+v: %v", c, err)
	}
	c2, err := DecodeCommand(re)
	if err != nil {
		t.Fatalf("decode of re-encoded command %d: %v", c.Type, err)
	}
	m2, _ := fzPayload(c2)
	if c2.Type != c.Type || c2.Ignored != c.Ignored || !proto.Equal(m, m2) {
		t.Fatalf("round trip changed the command:\n got  %d %v %v\n want %d %v %v", c2.Type, c2.Ignored, m2, c.Type, c.Ignored, m)
	}
	re2, err := fzReencode(c2, re[8:])
	if err != nil {
		t.Fatalf("second re-encode: %v", err)
	}
	if !bytes.Equal(re2, re) {
		t.Fatalf("encode(decode(encode(m))) = %x, want %x", re2, re)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	seeds := fzCommandSeeds()
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		data := seeds[name]
		f.Add(data)
		for _, m := range fzMutations(data) {
			f.Add(m)
		}
	}
	f.Fuzz(fzCheckDecode)
}

// TestFuzzDecodeCommandSeedsClassified pins the oracle on the named seeds, so
// FuzzDecodeCommand cannot pass by both sides agreeing on something wrong.
func TestFuzzDecodeCommandSeedsClassified(t *testing.T) {
	seeds := fzCommandSeeds()
	tests := []struct {
		name string
		want error
	}{
		{"ingest", nil}, {"ingest-empty", nil}, {"tick", nil}, {"config-default", nil}, {"config-event", nil},
		{"drop", nil}, {"checksum", nil}, {"unknown-ignorable", nil}, {"known-flagged", nil}, {"unknown-zero-type", nil},
		{"unknown-fatal", ErrUnknownCommand}, {"ingest-bad-columns", ErrCorrupt}, {"ingest-bad-events", ErrCorrupt},
		{"config-garbage", ErrCorrupt}, {"config-invalid-utf8", ErrCorrupt},
	}
	if len(tests) != len(seeds) {
		t.Fatalf("%d seeds, %d expectations", len(seeds), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, ok := seeds[tt.name]
			if !ok {
				t.Fatalf("no seed %q", tt.name)
			}
			_, err := DecodeCommand(data)
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("DecodeCommand = %v, want %v", err, tt.want)
			}
			if got := fzClassifyCommand(data); got != tt.want {
				t.Fatalf("oracle = %v, want %v", got, tt.want)
			}
			fzCheckDecode(t, data)
			if tt.want == nil {
				for _, m := range fzMutations(data) {
					if len(m) < len(data) || m[0] != data[0] || !bytes.Equal(m[4:], data[4:]) {
						if _, err := DecodeCommand(m); !errors.Is(err, ErrCorrupt) {
							t.Errorf("mutation %x of a valid command: error %v, want %v", m, err, ErrCorrupt)
						}
					}
				}
			}
		})
	}
}

// ---- snapshot seeds ----

func fzApply(t testing.TB, f *FSM, cmds ...[]byte) []interface{} {
	t.Helper()
	logs := make([]*raft.Log, len(cmds))
	idx := f.AppliedIndex()
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: idx + uint64(i) + 1, Term: 1, Type: raft.LogCommand, Data: c}
	}
	return f.ApplyBatch(logs)
}

func fzIngest(ms int64, parts ...*pb.ProducerPart) []byte {
	return mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: ms, Parts: parts}))
}

func fzTick(ms int64, wms ...*pb.Watermark) []byte {
	return mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: ms, Watermarks: wms}))
}

func fzWallConfig() *pb.LeaderboardConfig {
	return &pb.LeaderboardConfig{Name: "wall", Incarnation: 1, Version: 1, KMax: 3,
		Windows: []*pb.WindowSpec{{DurationMs: 10_000, BucketMs: 1000}, {DurationMs: 60_000}}}
}

// fzSnapshotLogs are small logs whose snapshots seed FuzzRestore.
func fzSnapshotLogs() map[string][][]byte {
	b, sec := fzBaseMs, fzBaseMs/1000
	wall := mustEncode(EncodeConfig(fzWallConfig()))
	event := mustEncode(EncodeConfig(fzEventConfig()))
	logs := map[string][][]byte{
		"empty": nil,
		"wall": {
			wall,
			fzIngest(b, part("", 0, 0, deltas("wall", 1, ev{"a", 3, 0}, ev{"b", 5, 0}, ev{"c", 1, sec - 20}, ev{"d", 2, sec + 3}))),
			fzTick(b + 4000),
			fzIngest(b+5000, part("", 0, 0, deltas("wall", 1, ev{"a", 4, 0}, ev{"e", 1, 0}, ev{"b", -1, 0}))),
		},
		"event": {
			event,
			fzIngest(b, part("p", 1, 1, deltas("event", 2, ev{"x", 1, sec}, ev{"y", 2, sec + 1}, ev{"z", 1, sec + 40}))),
			fzIngest(b+1, part("p", 1, 2, &pb.LeaderboardDeltas{Leaderboard: "event", Incarnation: 2, Items: []string{"x", "late"},
				Deltas: []int64{2, 7}, EventTimesS: []int64{sec + 41, sec - 100}, Events: []uint32{2, 3}})),
			fzTick(b+2, &pb.Watermark{Leaderboard: "event", Incarnation: 2, MaxEventTimeMs: (sec + 60) * 1000}),
		},
		"dedupe": {
			mustEncode(EncodeConfig(DefaultLeaderboard(1))),
			fzIngest(b, part("p1", 1, 1, deltas("default", 1, ev{"a", 1, 0})), part("p2", 4, 10, deltas("default", 1, ev{"b", 2, 0}))),
			fzIngest(b+1000, part("p1", 1, 5, deltas("default", 1, ev{"a", 1, 0})), part("p1", 1, 1, deltas("default", 1, ev{"a", 1, 0}))),
			fzIngest(b+2000, part("p2", 3, 11, deltas("default", 1, ev{"b", 1, 0})), part("p3", 1, 1, deltas("nope", 1, ev{"c", 1, 0}))),
			mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: "gone", Incarnation: 4})),
			mustEncode(EncodeDrop(&pb.DropLeaderboard{Name: "also-gone", Incarnation: 1})),
			EncodeRaw(99, true, []byte("skip me")),
			mustEncode(EncodeChecksum(&pb.Checksum{Id: 1, LeaderTimeMs: b + 3000})),
		},
		"freed": {
			wall,
			fzIngest(b, part("", 0, 0, deltas("wall", 1, ev{"x", 2, 0}, ev{"keep", 1, 0}))),
			fzIngest(b+1000, part("", 0, 0, deltas("wall", 1, ev{"x", -2, 0}))),
			fzTick(b + 120_000),
			fzIngest(b+121_000, part("", 0, 0, deltas("wall", 1, ev{"y", 1, 0}, ev{"zero", 0, 0}))),
		},
		"capped": {
			mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "capped", Incarnation: 3, Version: 1, MaxItems: 2,
				Windows: []*pb.WindowSpec{{DurationMs: 5000}}})),
			fzIngest(b, part("", 0, 0, deltas("capped", 3, ev{"a", 1, 0}, ev{"b", 1, 0}, ev{"c", 1, 0}))),
			mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "capped", Incarnation: 3, Version: 2, MaxItems: 3, KMax: 7,
				Windows: []*pb.WindowSpec{{DurationMs: 5000}}})),
		},
	}
	ssCfg := &pb.LeaderboardConfig{Name: "ss", Incarnation: 1, Version: 1, KMax: 2, Mode: pb.Mode_MODE_SPACESAVING, Capacity: 3,
		Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}}
	cmsCfg := &pb.LeaderboardConfig{Name: "cms", Incarnation: 2, Version: 1, KMax: 2, Mode: pb.Mode_MODE_CMS, Epsilon: 0.5, Delta: 0.2,
		Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}}
	apEvs := func(t int64) *pb.ProducerPart {
		return part("", 0, 0, deltas("ss", 1, ev{"a", 3, 0}, ev{"b", 1, t}, ev{"c", 2, 0}, ev{"d", 1, 0}, ev{"x", 4, 0}),
			deltas("cms", 2, ev{"a", 3, 0}, ev{"b", 1, t}, ev{"c", 2, 0}, ev{"d", 1, 0}, ev{"x", 4, 0}, ev{"n", -1, 0}))
	}
	logs["approx"] = [][]byte{
		mustEncode(EncodeConfig(ssCfg)), mustEncode(EncodeConfig(cmsCfg)),
		fzIngest(b, apEvs(0)), fzIngest(b+1000, apEvs(sec)), fzIngest(b+2000, apEvs(0)),
		fzTick(b + 4500), fzIngest(b+5000, apEvs(sec+3)),
	}
	var bigItems []ev
	for i := range chunkSize + 5 {
		bigItems = append(bigItems, ev{fmt.Sprintf("i%05d", i), int64(i%7 - 1), 0})
	}
	logs["big"] = [][]byte{
		mustEncode(EncodeConfig(&pb.LeaderboardConfig{Name: "big", Incarnation: 1, Version: 1, KMax: 5,
			Windows: []*pb.WindowSpec{{DurationMs: 60_000}}})),
		fzIngest(b, part("", 0, 0, deltas("big", 1, bigItems...))),
	}
	return logs
}

func fzSnapshotOf(t testing.TB, cmds [][]byte) []byte {
	t.Helper()
	f := New(Options{})
	fzApply(t, f, cmds...)
	return snapshotBytes(t, f)
}

// fzTarget returns an FSM with state of its own, the target of Restore calls.
func fzTarget(t testing.TB) *FSM {
	t.Helper()
	f := New(Options{})
	logs := fzSnapshotLogs()
	fzApply(t, f, logs["event"]...)
	fzApply(t, f, logs["dedupe"]...)
	return f
}

// fzTargetCache keeps one restore target and its observation between fuzz
// calls while restores fail (and so, by the property, leave it untouched).
var fzTargetCache struct {
	sync.Mutex
	f      *FSM
	before []string
}

func fzCachedTarget(t testing.TB) (*FSM, []string) {
	t.Helper()
	fzTargetCache.Lock()
	defer fzTargetCache.Unlock()
	if fzTargetCache.f == nil {
		fzTargetCache.f = fzTarget(t)
		fzTargetCache.before = fzObserve(t, fzTargetCache.f)
	}
	return fzTargetCache.f, fzTargetCache.before
}

// fzObserve renders everything a reader can see of an FSM, snapshot included.
func fzObserve(t testing.TB, f *FSM) []string {
	t.Helper()
	stats := f.Stats()
	stats.Bytes = 0 // a memory estimate: capacities differ between live and restored state
	for i := range stats.Leaderboards {
		stats.Leaderboards[i].Bytes = 0
	}
	// The checksum history comes first so callers can leave it out with [1:].
	out := []string{fmt.Sprintf("checksums %+v", f.Checksums()), fmt.Sprintf("applied %d", f.AppliedIndex()),
		fmt.Sprintf("stats %+v", stats), fmt.Sprintf("snapshot %x", snapshotBytes(t, f))}
	for _, c := range f.Leaderboards() {
		out = append(out, "config "+c.String())
		for _, w := range fzWindows(c) {
			r, err := f.TopK(c.Name, w, int(c.KMax))
			out = append(out, fmt.Sprintf("topk %s %v: %+v %v", c.Name, w, r, err))
			for _, item := range []string{"a", "b", "x", "late", "missing"} {
				r, err := f.Count(c.Name, item, w)
				out = append(out, fmt.Sprintf("count %s %s %v: %+v %v", c.Name, item, w, r, err))
			}
		}
	}
	return out
}

func fzWindows(c *pb.LeaderboardConfig) []time.Duration {
	ws := []time.Duration{0}
	for _, w := range c.Windows {
		ws = append(ws, time.Duration(w.DurationMs)*time.Millisecond)
	}
	return ws
}

func fzDiff(got, want []string) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d observations, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("got  %.300s\nwant %.300s", got[i], want[i])
		}
	}
	return ""
}

// fzCheckAnswers checks that an FSM's answers agree with each other: TopK
// against a brute-force ranking of every known item's Count, prefixes for
// smaller k, Stats' positive-item counts, and the documented errors.
func fzCheckAnswers(t testing.TB, f *FSM) {
	t.Helper()
	stats := f.Stats()
	cfgs := f.Leaderboards()
	if len(stats.Leaderboards) != len(cfgs) {
		t.Fatalf("Stats has %d leaderboards, Leaderboards() %d", len(stats.Leaderboards), len(cfgs))
	}
	for li, c := range cfgs {
		f.mu.RLock()
		lb, exact := f.st.boards[c.Name].counts.(*exactBoard)
		if !exact {
			f.mu.RUnlock()
			if !stats.Leaderboards[li].Approximate {
				t.Fatalf("leaderboard %q: not exact, but its stats are not approximate", c.Name)
			}
			fzCheckApprox(t, f, c)
			continue
		}
		items := make([]string, 0, lb.index.len())
		for id := range lb.items.len() {
			s := lb.items.get(id)
			if s == "" {
				continue // a free id
			}
			if got, ok := lb.index.get(s); !ok || got != uint32(id) {
				f.mu.RUnlock()
				t.Fatalf("leaderboard %q: index has %q as %d, %v; the item table as %d", c.Name, s, got, ok, id)
			}
			items = append(items, s)
		}
		if lb.index.len() != len(items) {
			n := lb.index.len()
			f.mu.RUnlock()
			t.Fatalf("leaderboard %q: index holds %d items, the item table %d", c.Name, n, len(items))
		}
		live := lb.live
		f.mu.RUnlock()
		ls := stats.Leaderboards[li]
		if ls.Name != c.Name || ls.DistinctItems != len(items) || live != len(items) {
			t.Fatalf("leaderboard %q: stats %q with %d distinct items, live %d, index %d", c.Name, ls.Name, ls.DistinctItems, live, len(items))
		}
		slices.Sort(items)
		for wi, w := range fzWindows(c) {
			var want []Item
			for _, s := range items {
				r, err := f.Count(c.Name, s, w)
				if err != nil {
					t.Fatalf("Count(%q, %q, %v): %v", c.Name, s, w, err)
				}
				if r.Count > 0 {
					want = append(want, ex(s, r.Count))
				}
			}
			slices.SortStableFunc(want, func(a, b Item) int {
				if a.Count != b.Count {
					if a.Count > b.Count {
						return -1
					}
					return 1
				}
				return strings.Compare(a.Item, b.Item)
			})
			if got := ls.Windows[wi].PositiveItems; got != len(want) {
				t.Fatalf("leaderboard %q window %v: Stats says %d positive items, counts say %d", c.Name, w, got, len(want))
			}
			for _, k := range []int{int(c.KMax), 1, min(10, int(c.KMax))} {
				r, err := f.TopK(c.Name, w, k)
				if err != nil {
					t.Fatalf("TopK(%q, %v, %d): %v", c.Name, w, k, err)
				}
				wk := want[:min(k, len(want))]
				if !slices.Equal(r.Items, wk) {
					t.Fatalf("TopK(%q, %v, %d) = %.400v\nwant %.400v", c.Name, w, k, r.Items, wk)
				}
				cr, _ := f.Count(c.Name, "", w)
				if r.WindowStartMs != cr.WindowStartMs || r.WindowEndMs != cr.WindowEndMs {
					t.Fatalf("TopK bounds [%d, %d], Count bounds [%d, %d]", r.WindowStartMs, r.WindowEndMs, cr.WindowStartMs, cr.WindowEndMs)
				}
			}
			for _, k := range []int{0, -1, int(c.KMax) + 1} {
				if _, err := f.TopK(c.Name, w, k); !errors.Is(err, ErrInvalidK) {
					t.Fatalf("TopK(%q, %v, %d) error %v, want %v", c.Name, w, k, err, ErrInvalidK)
				}
			}
		}
		if _, err := f.TopK(c.Name, 7*time.Millisecond, 1); !errors.Is(err, ErrUnknownWindow) {
			t.Fatalf("TopK of an unknown window: %v, want %v", err, ErrUnknownWindow)
		}
	}
}

// fzCheckApprox checks an approximate board's answers agree with each other:
// bounds ordered, ranking by estimate, smaller k a prefix, Count agreeing
// with a listed item's bounds.
func fzCheckApprox(t testing.TB, f *FSM, c *pb.LeaderboardConfig) {
	t.Helper()
	for _, w := range fzWindows(c) {
		full, err := f.TopK(c.Name, w, int(c.KMax))
		if err != nil || !full.Approximate {
			t.Fatalf("TopK(%q, %v): %v, approximate %v", c.Name, w, err, full.Approximate)
		}
		for i, it := range full.Items {
			if it.Lower < 0 || it.Lower > it.Upper || it.Count != it.Upper {
				t.Fatalf("TopK(%q, %v): item %+v", c.Name, w, it)
			}
			if i > 0 && rankAboveEst(uint64(it.Count), it.Item, uint64(full.Items[i-1].Count), full.Items[i-1].Item) {
				t.Fatalf("TopK(%q, %v): out of order %+v", c.Name, w, full.Items)
			}
			cr, err := f.Count(c.Name, it.Item, w)
			if err != nil || cr.Upper != it.Upper || cr.Lower < 0 || cr.Lower > cr.Upper {
				t.Fatalf("Count(%q, %q, %v) = %+v, %v; TopK says %+v", c.Name, it.Item, w, cr, err, it)
			}
		}
		r, err := f.TopK(c.Name, w, 1)
		if err != nil || (len(full.Items) > 0 && (len(r.Items) != 1 || r.Items[0] != full.Items[0])) {
			t.Fatalf("TopK(%q, %v, 1) = %+v, %v; k_max answer starts %+v", c.Name, w, r.Items, err, full.Items)
		}
	}
}

func fzRestore(f *FSM, data []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(data)))
}

// fzFixTrailer recomputes the CRC trailer so mutations reach the structure checks.
func fzFixTrailer(data []byte) []byte {
	n := len(data)
	if n < 5 || data[n-5] != recTrailer {
		return data
	}
	data = slices.Clone(data)
	binary.LittleEndian.PutUint32(data[n-4:], crc32.Checksum(data[:n-4], fzCastagnoli))
	return data
}

// fzContinue applies the same few commands to every FSM: a far tick with
// each leaderboard's watermark and one delta per leaderboard.
func fzContinue(t testing.TB, fs ...*FSM) {
	t.Helper()
	cfgs := fs[0].Leaderboards()
	logMs := fs[0].Stats().LogTimeMs
	var wms []*pb.Watermark
	var ds []*pb.LeaderboardDeltas
	for _, c := range cfgs {
		r, _ := fs[0].Count(c.Name, "", 0)
		wms = append(wms, &pb.Watermark{Leaderboard: c.Name, Incarnation: c.Incarnation, MaxEventTimeMs: r.WindowEndMs + 90_000})
		ds = append(ds, deltas(c.Name, c.Incarnation, ev{"fz-new", 1, 0}, ev{"a", -1, 0}))
	}
	cmds := [][]byte{fzTick(logMs+90_000, wms...), fzIngest(logMs+91_000, part("fz", 1, 1<<40, ds...))}
	for _, f := range fs {
		fzApply(t, f, cmds...)
	}
}

func fzCheckRestore(t *testing.T, data []byte, fixCRC bool) {
	if fixCRC {
		data = fzFixTrailer(data)
	}
	target, before := fzCachedTarget(t)
	err := fzRestore(target, data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Restore error %v does not wrap %v", err, ErrCorrupt)
		}
		if d := fzDiff(fzObserve(t, target), before); d != "" {
			t.Fatalf("failed Restore (%v) changed the FSM:\n%s", err, d)
		}
		return
	}
	fzTargetCache.Lock()
	fzTargetCache.f = nil // its state was replaced: build a fresh one next time
	fzTargetCache.Unlock()
	s1 := snapshotBytes(t, target)
	again := New(Options{})
	if err := fzRestore(again, s1); err != nil {
		t.Fatalf("restore of a restored FSM's own snapshot: %v", err)
	}
	if s2 := snapshotBytes(t, again); !bytes.Equal(s2, s1) {
		t.Fatalf("snapshot does not re-serialize byte-identically:\n got  %x\n want %x", s2, s1)
	}
	fzCheckAnswers(t, target)
	if d := fzDiff(fzObserve(t, again), fzObserve(t, target)); d != "" {
		t.Fatalf("FSM restored from the re-serialized snapshot answers differently:\n%s", d)
	}
	fzContinue(t, target, again)
	if a, b := snapshotBytes(t, target), snapshotBytes(t, again); !bytes.Equal(a, b) {
		t.Fatalf("after continuing, the two restored FSMs differ:\n %x\n %x", a, b)
	}
	fzCheckAnswers(t, target)
}

func FuzzRestore(f *testing.F) {
	logs := fzSnapshotLogs()
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		snap := fzSnapshotOf(f, logs[name])
		f.Add(snap, false)
		if name == "big" {
			continue
		}
		for _, m := range fzMutations(snap) {
			f.Add(m, false)
			f.Add(m, true)
		}
	}
	f.Fuzz(fzCheckRestore)
}

// TestFuzzRestoreSeedsRoundTrip pins that the FuzzRestore seeds are real,
// restorable snapshots (so the fuzzer starts from valid input), that each
// restores to the exact state it came from, and that Persist through a raft
// snapshot sink writes the same bytes.
func TestFuzzRestoreSeedsRoundTrip(t *testing.T) {
	logs := fzSnapshotLogs()
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		t.Run(name, func(t *testing.T) {
			src := New(Options{})
			fzApply(t, src, logs[name]...)
			snap := snapshotBytes(t, src)
			if got := fzPersist(t, src); !bytes.Equal(got, snap) {
				t.Fatalf("Persist wrote %d bytes that differ from the snapshot stream (%d bytes)", len(got), len(snap))
			}
			dst := fzTarget(t)
			if err := fzRestore(dst, snap); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			// Checksum records are this replica's history, not part of the state.
			if d := fzDiff(fzObserve(t, dst)[1:], fzObserve(t, src)[1:]); d != "" {
				t.Fatalf("restored FSM differs from its source:\n%s", d)
			}
			fzCheckAnswers(t, dst)
			fzCheckRestore(t, snap, false)
		})
	}
}

func fzPersist(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return detPersist(t, s, f.AppliedIndex())
}

// ---- corruption ----

// TestRestoreCorruptSnapshotEveryBit flips a bit at every byte position of a
// small snapshot and truncates it at every length: each variant must fail
// Restore (the CRC trailer covers every byte) and leave the target FSM
// exactly as it was.
func TestRestoreCorruptSnapshotEveryBit(t *testing.T) {
	logs := fzSnapshotLogs()
	snap := fzSnapshotOf(t, append(slices.Clone(logs["wall"]), logs["dedupe"]...))
	if len(snap) > 4096 {
		t.Fatalf("snapshot of %d bytes is not small", len(snap))
	}
	target := fzTarget(t)
	before := snapshotBytes(t, target)
	beforeObs := fzObserve(t, target)
	check := func(what string, data []byte) {
		t.Helper()
		err := fzRestore(target, data)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: Restore error %v, want one wrapping %v", what, err, ErrCorrupt)
		}
		if got := snapshotBytes(t, target); !bytes.Equal(got, before) {
			t.Fatalf("%s: failed Restore changed the target's snapshot", what)
		}
	}
	// Every byte position gets a flipped bit (rotating which one); the framing
	// (magic, format version, first record header, trailer) gets all eight.
	// Each Restore allocates a 1 MiB read buffer, so all 8 bits everywhere is
	// needlessly slow.
	for i := range snap {
		bits := []int{i % 8}
		if i < 16 || i >= len(snap)-8 {
			bits = []int{0, 1, 2, 3, 4, 5, 6, 7}
		}
		for _, bit := range bits {
			m := slices.Clone(snap)
			m[i] ^= 1 << bit
			check(fmt.Sprintf("bit %d of byte %d/%d", bit, i, len(snap)), m)
		}
	}
	for n := range len(snap) {
		check(fmt.Sprintf("truncated to %d/%d bytes", n, len(snap)), snap[:n])
	}
	check("trailing byte", append(slices.Clone(snap), 0))
	if d := fzDiff(fzObserve(t, target), beforeObs); d != "" {
		t.Fatalf("failed restores changed the target's answers:\n%s", d)
	}
	if err := fzRestore(target, snap); err != nil {
		t.Fatalf("the unmodified snapshot does not restore: %v", err)
	}
}

// fzRecorder is an OnFatal that records instead of crashing.
type fzRecorder struct{ errs []error }

func (r *fzRecorder) onFatal(err error) { r.errs = append(r.errs, err) }

// TestCorruptCommandCallsOnFatal applies corrupt commands through Apply with a
// recording OnFatal: each must be reported once, and the state must equal that
// of an FSM that saw a no-op at the same index.
func TestCorruptCommandCallsOnFatal(t *testing.T) {
	valid := mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: fzBaseMs + 5000,
		Parts: []*pb.ProducerPart{part("p9", 1, 1, deltas("wall", 1, ev{"a", 100, 0}, ev{"new", 1, 0}))}}))
	flipped := slices.Clone(valid)
	flipped[len(flipped)-1] ^= 0x10
	badCRC := slices.Clone(valid)
	badCRC[5] ^= 0x01
	badVersion := slices.Clone(valid)
	badVersion[0] = 2
	seeds := fzCommandSeeds()
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"payload bit flipped", flipped, ErrCorrupt},
		{"crc bit flipped", badCRC, ErrCorrupt},
		{"envelope version", badVersion, ErrCorrupt},
		{"truncated envelope", valid[:5], ErrCorrupt},
		{"truncated payload", valid[:len(valid)-3], ErrCorrupt},
		{"empty", nil, ErrCorrupt},
		{"unequal columns", seeds["ingest-bad-columns"], ErrCorrupt},
		{"undecodable payload", seeds["config-garbage"], ErrCorrupt},
		{"unknown type not ignorable", EncodeRaw(77, false, []byte("x")), ErrUnknownCommand},
		{"ignorable flag but bad crc", fzFlip(EncodeRaw(77, true, []byte("x")), 8), ErrCorrupt},
	}
	prefix := fzSnapshotLogs()["wall"]
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeCommand(tt.data); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeCommand: %v, want %v", err, tt.want)
			}
			rec := &fzRecorder{}
			f := New(Options{OnFatal: rec.onFatal})
			ref := New(Options{})
			fzApply(t, f, prefix...)
			fzApply(t, ref, prefix...)
			idx := f.AppliedIndex() + 1
			res := f.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: tt.data})
			ref.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogNoop})
			if len(rec.errs) != 1 {
				t.Fatalf("OnFatal called %d times (%v), want once", len(rec.errs), rec.errs)
			}
			if !errors.Is(rec.errs[0], tt.want) {
				t.Fatalf("OnFatal got %v, want an error wrapping %v", rec.errs[0], tt.want)
			}
			if err, ok := res.(error); !ok || !errors.Is(err, tt.want) {
				t.Fatalf("Apply returned %T %v, want an error wrapping %v", res, res, tt.want)
			}
			if d := fzDiff(fzObserve(t, f), fzObserve(t, ref)); d != "" {
				t.Fatalf("corrupt command changed the state:\n%s", d)
			}
			// The rest of the log still applies the same on both.
			fzApply(t, f, valid)
			fzApply(t, ref, valid)
			if len(rec.errs) != 1 {
				t.Fatalf("OnFatal called again: %v", rec.errs)
			}
			if d := fzDiff(fzObserve(t, f), fzObserve(t, ref)); d != "" {
				t.Fatalf("after a valid command the FSMs differ:\n%s", d)
			}
		})
	}
}

func fzFlip(b []byte, i int) []byte {
	b = slices.Clone(b)
	b[i] ^= 1
	return b
}

// TestCorruptCommandDefaultOnFatalPanics: without an OnFatal the FSM must crash
// rather than skip a command it cannot read.
func TestCorruptCommandDefaultOnFatalPanics(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"corrupt", fzFlip(mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: 5})), 9), "corrupt"},
		{"unknown", EncodeRaw(66, false, nil), "unknown command type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(Options{})
			var got any
			func() {
				defer func() { got = recover() }()
				f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: tt.data})
			}()
			if got == nil {
				t.Fatal("Apply of a bad command returned normally, want a panic")
			}
			if msg := fmt.Sprint(got); !strings.Contains(msg, tt.want) {
				t.Fatalf("panic %q, want it to mention %q", msg, tt.want)
			}
			// f.mu stays locked after the panic: the process is meant to die here.
		})
	}
}

// TestIgnorableUnknownCommand: an unknown command flagged ignorable is skipped
// and counted, also across snapshot and restore; a known type keeps its
// meaning with the flag set; an unknown type without the flag is fatal.
func TestIgnorableUnknownCommand(t *testing.T) {
	prefix := fzSnapshotLogs()["wall"]
	t.Run("skipped and counted", func(t *testing.T) {
		rec := &fzRecorder{}
		f := New(Options{OnFatal: rec.onFatal})
		ref := New(Options{})
		fzApply(t, f, prefix...)
		fzApply(t, ref, prefix...)
		before := f.Stats()
		res := fzApply(t, f, EncodeRaw(200, true, []byte("from the future")), EncodeRaw(TypeChecksum+10, true, nil))
		fzApply(t, ref, fzTick(0), fzTick(0)) // no-op commands at the same indexes
		if len(rec.errs) != 0 {
			t.Fatalf("OnFatal called: %v", rec.errs)
		}
		if res[0] != nil || res[1] != nil {
			t.Fatalf("Apply results %v, want nil", res)
		}
		got := f.Stats()
		if got.IgnoredCommands != before.IgnoredCommands+2 {
			t.Fatalf("IgnoredCommands = %d, want %d", got.IgnoredCommands, before.IgnoredCommands+2)
		}
		got.IgnoredCommands = before.IgnoredCommands
		if want := ref.Stats(); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Fatalf("ignored commands changed more than the counter:\n got  %+v\n want %+v", got, want)
		}
		restored := New(Options{})
		if err := fzRestore(restored, snapshotBytes(t, f)); err != nil {
			t.Fatal(err)
		}
		if got := restored.Stats().IgnoredCommands; got != 2 {
			t.Fatalf("restored IgnoredCommands = %d, want 2", got)
		}
	})
	t.Run("known type with the flag is applied", func(t *testing.T) {
		f := New(Options{})
		fzApply(t, f, prefix...)
		payload := fzMarshal(&pb.IngestEntry{LeaderTimeMs: fzBaseMs + 6000,
			Parts: []*pb.ProducerPart{part("", 0, 0, deltas("wall", 1, ev{"flagged", 42, 0}))}})
		res := fzApply(t, f, EncodeRaw(TypeIngest, true, payload))
		if r, ok := res[0].(*IngestResult); !ok || r.Outcomes[0].Accepted != 1 {
			t.Fatalf("Apply result %T %+v, want an ingest result with 1 accepted", res[0], res[0])
		}
		if got, _ := f.Count("wall", "flagged", 0); got.Count != 42 {
			t.Fatalf("Count(flagged) = %d, want 42", got.Count)
		}
		if got := f.Stats().IgnoredCommands; got != 0 {
			t.Fatalf("IgnoredCommands = %d, want 0", got)
		}
	})
	t.Run("unknown without the flag is fatal", func(t *testing.T) {
		rec := &fzRecorder{}
		f := New(Options{OnFatal: rec.onFatal})
		fzApply(t, f, prefix...)
		fzApply(t, f, EncodeRaw(200, false, []byte("from the future")))
		if len(rec.errs) != 1 || !errors.Is(rec.errs[0], ErrUnknownCommand) {
			t.Fatalf("OnFatal got %v, want one error wrapping %v", rec.errs, ErrUnknownCommand)
		}
		if got := f.Stats().IgnoredCommands; got != 0 {
			t.Fatalf("IgnoredCommands = %d, want 0", got)
		}
	})
}
