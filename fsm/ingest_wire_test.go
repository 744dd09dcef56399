package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// wireCheck holds decodeIngest to proto.Unmarshal's answer on b: both fail,
// or both succeed with equal messages (unknown fields aside).
func wireCheck(t *testing.T, b []byte) {
	t.Helper()
	var want pb.IngestEntry
	werr := proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, &want)
	got, gerr := decodeIngest(b)
	switch {
	case (werr == nil) != (gerr == nil):
		t.Fatalf("decodeIngest(%x): error %v, proto.Unmarshal: %v", b, gerr, werr)
	case werr == nil && !proto.Equal(got, &want):
		t.Fatalf("decodeIngest(%x):\n got  %v\n want %v", b, got, &want)
	}
}

// randEntry builds an entry with empty, long, multi-byte and repeated items.
func randEntry(r *rand.Rand) *pb.IngestEntry {
	e := &pb.IngestEntry{LeaderTimeMs: r.Int64N(1<<42) - 1<<20}
	for range r.IntN(4) {
		p := &pb.ProducerPart{Epoch: r.Uint64N(3), Sequence: r.Uint64()}
		if r.IntN(2) == 0 {
			p.ProducerId = fmt.Sprintf("producer-%d", r.IntN(5))
		}
		for range r.IntN(3) {
			d := &pb.LeaderboardDeltas{Leaderboard: []string{"", "default", "plays"}[r.IntN(3)], Incarnation: r.Uint64N(4)}
			withEvents := r.IntN(2) == 0
			for range r.IntN(40) {
				d.Items = append(d.Items, []string{"", "a", "é🎵", strings.Repeat("long-item-", 1+r.IntN(5)), fmt.Sprint(r.IntN(100))}[r.IntN(5)])
				d.Deltas = append(d.Deltas, r.Int64N(1<<40)-1<<39)
				d.EventTimesS = append(d.EventTimesS, r.Int64N(1<<35)-r.Int64N(1<<10))
				if withEvents {
					d.Events = append(d.Events, r.Uint32())
				}
			}
			p.Boards = append(p.Boards, d)
		}
		e.Parts = append(e.Parts, p)
	}
	return e
}

// unpacked encodes e with every repeated number as its own field, items
// interleaved with them, and unknown fields of every wire type: valid
// encodings proto.Marshal never produces.
func unpacked(e *pb.IngestEntry) []byte {
	unknown := func(b []byte) []byte {
		b = protowire.AppendTag(b, 99, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 7)
		b = protowire.AppendTag(b, 98, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0xff, 0xfe})
		b = protowire.AppendTag(b, 97, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 5)
		return protowire.AppendTag(b, 97, protowire.EndGroupType)
	}
	var b []byte
	b = unknown(b)
	for _, p := range e.Parts {
		var pb []byte
		for _, d := range p.Boards {
			var db []byte
			db = protowire.AppendTag(db, 2, protowire.VarintType)
			db = protowire.AppendVarint(db, d.Incarnation)
			for i, it := range d.Items {
				db = protowire.AppendTag(db, 4, protowire.VarintType)
				db = protowire.AppendVarint(db, protowire.EncodeZigZag(d.Deltas[i]))
				db = protowire.AppendTag(db, 3, protowire.BytesType)
				db = protowire.AppendString(db, it)
				db = protowire.AppendTag(db, 5, protowire.VarintType)
				db = protowire.AppendVarint(db, uint64(d.EventTimesS[i]))
				if len(d.Events) > 0 {
					db = protowire.AppendTag(db, 6, protowire.VarintType)
					db = protowire.AppendVarint(db, uint64(d.Events[i]))
				}
			}
			db = unknown(db)
			db = protowire.AppendTag(db, 1, protowire.BytesType)
			db = protowire.AppendString(db, d.Leaderboard)
			pb = protowire.AppendTag(pb, 4, protowire.BytesType)
			pb = protowire.AppendBytes(pb, db)
		}
		pb = protowire.AppendTag(pb, 3, protowire.VarintType)
		pb = protowire.AppendVarint(pb, p.Sequence)
		pb = protowire.AppendTag(pb, 1, protowire.BytesType)
		pb = protowire.AppendString(pb, p.ProducerId)
		pb = protowire.AppendTag(pb, 2, protowire.VarintType)
		pb = protowire.AppendVarint(pb, p.Epoch)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, pb)
	}
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(e.LeaderTimeMs))
}

func TestDecodeIngestMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		e := randEntry(r)
		m, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		wireCheck(t, m)
		u := unpacked(e)
		wireCheck(t, u)
		got, err := decodeIngest(u)
		if err != nil || !proto.Equal(got, e) {
			t.Fatalf("unpacked encoding decoded to %v, %v; want %v", got, err, e)
		}
	}
}

// Known fields with an unexpected wire type are unknown fields to protobuf;
// invalid UTF-8 in a known string field is an error.
func TestDecodeIngestEdges(t *testing.T) {
	board := func(fields ...[]byte) []byte {
		d := bytes.Join(fields, nil)
		p := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), d)
		return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), p)
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	for name, b := range map[string][]byte{
		"items-as-varint":   board(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1)),
		"deltas-as-fixed64": board(protowire.AppendFixed64(protowire.AppendTag(nil, 4, protowire.Fixed64Type), 1)),
		"invalid-utf8-item": board(str(3, "a\xffb")),
		"invalid-utf8-lb":   board(str(1, "\xc3")),
		"truncated-packed":  board(protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), []byte{0x80})),
		"overlong-varint":   board(protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), bytes.Repeat([]byte{0xff}, 11))),
		"field-zero":        {0x02, 0x01, 0x00},
		"time-as-bytes":     str(1, "x"),
		"truncated-part":    {0x12, 0x05, 0x0a},
		"group-unclosed":    protowire.AppendTag(nil, 9, protowire.StartGroupType),
	} {
		t.Run(name, func(t *testing.T) { wireCheck(t, b) })
	}
}

func FuzzDecodeIngest(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		e := randEntry(r)
		m, _ := proto.Marshal(e)
		f.Add(m)
		f.Add(unpacked(e))
	}
	f.Fuzz(wireCheck)
}

// Decoded items alias the log entry. Overwriting every entry after it is
// applied must leave the state the same as applying entries nobody touches:
// whatever the FSM keeps (items, producer ids, summaries) is its own copy.
func TestAppliedEntriesMayBeReused(t *testing.T) {
	cfgs := []*pb.LeaderboardConfig{
		{Name: "exact", Incarnation: 1, Version: 1, KMax: 5, Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}},
		{Name: "ss", Incarnation: 2, Version: 1, KMax: 3, Mode: pb.Mode_MODE_SPACESAVING, Capacity: 8,
			Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}},
		{Name: "cms", Incarnation: 3, Version: 1, KMax: 3, Mode: pb.Mode_MODE_CMS, Epsilon: 0.1, Delta: 0.1,
			Windows: []*pb.WindowSpec{{DurationMs: 4000, BucketMs: 1000}}},
	}
	var logs [][]byte
	for _, c := range cfgs {
		logs = append(logs, mustEncode(EncodeConfig(c)))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 60 {
		var ds []*pb.LeaderboardDeltas
		for _, c := range cfgs {
			var evs []ev
			for range 20 {
				n := r.IntN(30)
				item := fmt.Sprintf("item-%d", n) // short: inline in the index
				if n%3 == 0 {
					item = fmt.Sprintf("a-longer-item-name-%d", n) // long: kept as a string
				}
				evs = append(evs, ev{item, 1 + r.Int64N(3), int64(i / 3)})
			}
			ds = append(ds, deltas(c.Name, c.Incarnation, evs...))
		}
		logs = append(logs, fzIngest(int64(i)*300, part(fmt.Sprintf("producer-%d", i%4), 1, uint64(i), ds...)))
	}
	apply := func(scribble bool) *FSM {
		f := New(Options{})
		for i, data := range logs {
			data = bytes.Clone(data)
			f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
			if scribble {
				for j := range data {
					data[j] = 'X'
				}
			}
		}
		return f
	}
	clean, reused := apply(false), apply(true)
	if !bytes.Equal(snapshotBytes(t, clean), snapshotBytes(t, reused)) {
		t.Fatal("overwriting applied entries changed the state")
	}
	for _, c := range cfgs {
		a, err := clean.TopK(c.Name, 0, 3)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := reused.TopK(c.Name, 0, 3)
		if len(a.Items) == 0 || fmt.Sprint(a.Items) != fmt.Sprint(b.Items) {
			t.Fatalf("%s: top-3 %v after overwriting entries, want %v", c.Name, b.Items, a.Items)
		}
	}
}

// BenchmarkDecodeIngest decodes the apply benchmark's entries (1,000 Zipf
// events over 1M items, about 530 deltas) with protobuf's generated decoder
// and with decodeIngest, side by side.
func BenchmarkDecodeIngest(b *testing.B) {
	z := rand.NewZipf(rand.New(rand.NewPCG(7, 8)), benchZipfS, 1, 1<<20-1)
	var payloads [][]byte
	var deltas int
	for sec := range int64(64) {
		cnt := map[uint64]uint32{}
		var order []uint64
		for range benchEventsPerEntry {
			it := z.Uint64()
			if cnt[it] == 0 {
				order = append(order, it)
			}
			cnt[it]++
		}
		d := newDeltas(len(order))
		var name []byte
		for _, it := range order {
			var s string
			name, s = benchItem(name, int(it))
			d.Items = append(d.Items, s)
			d.Deltas = append(d.Deltas, int64(cnt[it]))
			d.EventTimesS = append(d.EventTimesS, 1_700_000_000+sec)
			d.Events = append(d.Events, cnt[it])
		}
		deltas += len(order)
		e := &pb.IngestEntry{LeaderTimeMs: (1_700_000_000 + sec) * 1000, Parts: []*pb.ProducerPart{
			{ProducerId: "bench-producer-0", Epoch: 1, Sequence: uint64(sec + 1), Boards: []*pb.LeaderboardDeltas{d}}}}
		m, err := proto.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		payloads = append(payloads, m)
	}
	for _, dec := range []struct {
		name string
		fn   func([]byte) error
	}{
		{"proto", func(p []byte) error { return proto.Unmarshal(p, &pb.IngestEntry{}) }},
		{"alias", func(p []byte) error { _, err := decodeIngest(p); return err }},
	} {
		b.Run(dec.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if err := dec.fn(payloads[i%len(payloads)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(deltas)/float64(len(payloads))), "ns/delta")
		})
	}
}

// TestDecodeIngestAllocations: decoding sizes every column once, so an
// entry of 1,000 deltas allocates as often as one of 10. The items column
// follows the leaderboard and incarnation fields on the wire, so it is
// sized where its run starts; sized only at the start of the part, it grew
// by doubling (18 allocations instead of 9 at 530 deltas).
func TestDecodeIngestAllocations(t *testing.T) {
	entry := func(n int) []byte {
		d := newDeltas(n)
		for i := range n {
			d.Items = append(d.Items, fmt.Sprintf("item-%d", i))
			d.Deltas = append(d.Deltas, int64(i%7+1))
			d.EventTimesS = append(d.EventTimesS, 1_700_000_000)
			d.Events = append(d.Events, uint32(i%7+1))
		}
		b, err := proto.Marshal(&pb.IngestEntry{LeaderTimeMs: 1_700_000_000_000, Parts: []*pb.ProducerPart{
			{ProducerId: "p", Epoch: 1, Sequence: 1, Boards: []*pb.LeaderboardDeltas{d}}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	allocs := func(b []byte) float64 {
		return testing.AllocsPerRun(20, func() {
			if _, err := decodeIngest(b); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(entry(10)), allocs(entry(1000))
	if large != small {
		t.Fatalf("decoding 1,000 deltas took %v allocations, 10 deltas %v: a column grows instead of being sized once", large, small)
	}
}
