package rpc

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
)

// codecCheck holds protoCodec to proto.Unmarshal on b: both fail, or both
// succeed with equal messages, and the result survives overwriting b.
func codecCheck(t *testing.T, b []byte) {
	t.Helper()
	var want topkv1.IngestRequest
	werr := proto.Unmarshal(b, &want)
	data := append([]byte(nil), b...)
	var got topkv1.IngestRequest
	gerr := protoCodec{}.Unmarshal(data, &got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("Unmarshal(%x): error %v, proto.Unmarshal: %v", b, gerr, werr)
	}
	if werr != nil {
		return
	}
	for i := range data {
		data[i] = 'X' // connect reuses its buffers
	}
	if !proto.Equal(&got, &want) {
		t.Fatalf("Unmarshal(%x):\n got  %v\n want %v", b, &got, &want)
	}
}

func randRequest(r *rand.Rand) *topkv1.IngestRequest {
	m := &topkv1.IngestRequest{Leaderboard: []string{"", "default", "plays"}[r.IntN(3)], Epoch: r.Uint64N(3), Sequence: r.Uint64N(1 << 40)}
	if r.IntN(2) == 0 {
		m.ProducerId = fmt.Sprintf("producer-%d", r.IntN(9))
	}
	if r.IntN(4) > 0 {
		c := &topkv1.EventColumns{}
		n := r.IntN(300)
		for range n {
			c.Items = append(c.Items, []string{"", "a", "é🎵", fmt.Sprintf("song_%d", r.IntN(1e6)), string(make([]byte, 200))}[r.IntN(5)])
		}
		if r.IntN(2) == 0 {
			for range n {
				c.Counts = append(c.Counts, r.Int64N(100)-10)
			}
		}
		if r.IntN(2) == 0 {
			for range n {
				c.TimeUnixMs = append(c.TimeUnixMs, 1_700_000_000_000+r.Int64N(1e9))
			}
		}
		m.Columns = c
	}
	if r.IntN(5) == 0 {
		m.Events = append(m.Events, &topkv1.Event{Item: "row-wise", Count: 2})
	}
	return m
}

func TestCodecMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b, err := proto.Marshal(randRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		codecCheck(t, b)
		for range 3 { // and damaged copies
			d := append([]byte(nil), b...)
			if len(d) > 0 {
				d[r.IntN(len(d))] = byte(r.Uint32())
				codecCheck(t, d)
				codecCheck(t, d[:r.IntN(len(d))])
			}
		}
	}
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cols := func(b []byte) []byte { return protowire.AppendBytes(tag(6, protowire.BytesType), b) }
	for name, b := range map[string][]byte{
		"invalid-utf8-item":  cols(protowire.AppendString(tag(1, protowire.BytesType), "a\xff")),
		"invalid-utf8-board": protowire.AppendString(tag(1, protowire.BytesType), "\xc3"),
		"unpacked-count":     cols(protowire.AppendVarint(tag(2, protowire.VarintType), 3)),
		"unknown-field":      protowire.AppendVarint(tag(99, protowire.VarintType), 1),
		"columns-twice":      append(cols(protowire.AppendString(tag(1, protowire.BytesType), "x")), cols(protowire.AppendString(tag(1, protowire.BytesType), "y"))...),
	} {
		t.Run(name, func(t *testing.T) { codecCheck(t, b) })
	}
}

func FuzzCodec(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 10 {
		b, _ := proto.Marshal(randRequest(r))
		f.Add(b)
	}
	f.Fuzz(codecCheck)
}

func BenchmarkCodecIngest(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	m := &topkv1.IngestRequest{ProducerId: "bench-1", Sequence: 9, Columns: &topkv1.EventColumns{}}
	for range 1000 {
		m.Columns.Items = append(m.Columns.Items, fmt.Sprintf("song_%d", r.IntN(1e6)))
	}
	data, _ := proto.Marshal(m)
	b.Run("proto", func(b *testing.B) {
		for b.Loop() {
			var out topkv1.IngestRequest
			if err := proto.Unmarshal(data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("codec", func(b *testing.B) {
		for b.Loop() {
			var out topkv1.IngestRequest
			if err := (protoCodec{}).Unmarshal(data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
