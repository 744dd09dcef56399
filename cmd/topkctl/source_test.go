package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

func readAll(t *testing.T, data []byte, path string, m mapping) ([]client.Event, error) {
	t.Helper()
	in, err := openInput("", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	src, err := newSource(in, path, m)
	if err != nil {
		return nil, err
	}
	var out []client.Event
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestSources(t *testing.T) {
	t0 := time.Date(2010, 12, 1, 8, 26, 0, 0, time.UTC)
	def := mapping{format: "auto", itemCol: "item", itemSep: "-", timeFormat: "rfc3339"}
	with := func(f func(*mapping)) mapping { m := def; f(&m); return m }
	tests := []struct {
		name    string
		data    []byte
		path    string
		m       mapping
		want    []client.Event
		wantErr string
	}{
		{"csv items only", []byte("item\na\nb\n"), "", def, []client.Event{{Item: "a"}, {Item: "b"}}, ""},
		{"csv joined columns", []byte("o,d\nLAX,SFO\n"), "x.csv",
			with(func(m *mapping) { m.itemCol = "o+d" }), []client.Event{{Item: "LAX-SFO"}}, ""},
		{"csv quoted commas and a Go layout", []byte("StockCode,Description,Quantity,InvoiceDate\n85123A,\"WHITE, HANGING\",6,2010-12-01 08:26:00\n"), "",
			with(func(m *mapping) {
				m.itemCol, m.countCol, m.timeCol, m.timeFormat = "StockCode", "Quantity", "InvoiceDate", "2006-01-02 15:04:05"
			}),
			[]client.Event{{Item: "85123A", Count: 6, Time: t0}}, ""},
		{"gzip csv by magic", gz("item,ts\na,1291191960\n"), "",
			with(func(m *mapping) { m.timeCol, m.timeFormat = "ts", "unix-s" }), []client.Event{{Item: "a", Time: t0}}, ""},
		{"ndjson by content", []byte("{\"item\":\"a\",\"ms\":1291191960000}\n"), "",
			with(func(m *mapping) { m.timeCol, m.timeFormat = "ms", "unix-ms" }), []client.Event{{Item: "a", Time: t0}}, ""},
		{"ndjson numbers as items", []byte("{\"id\":42}\n{\"id\":\"x\"}\n"), "e.jsonl",
			with(func(m *mapping) { m.itemCol = "id" }), []client.Event{{Item: "42"}, {Item: "x"}}, ""},
		{"forced ndjson", []byte("{\"item\":\"a\"}"), "data.txt", with(func(m *mapping) { m.format = "ndjson" }),
			[]client.Event{{Item: "a"}}, ""},
		{"missing column", []byte("a,b\n1,2\n"), "", def, nil, `column "item" is not in the header (a,b)`},
		{"bad count", []byte("item,n\na,x\n"), "", with(func(m *mapping) { m.countCol = "n" }), nil, `line 2: --count-col n: "x" is not a whole number`},
		{"empty item", []byte("item\n\"\"\n"), "", def, nil, "empty item"},
		{"ndjson missing key", []byte("{\"x\":1}\n"), "", def, nil, `line 1: --item-col: no key "item"`},
		{"ndjson object item", []byte("{\"item\":{}}\n"), "", def, nil, "not a string or number"},
		{"bad format flag", []byte("item\na\n"), "", with(func(m *mapping) { m.format = "xml" }), nil, "--format"},
		{"empty csv", nil, "", def, nil, "header row is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, tt.data, tt.path, tt.m)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Item != w.Item || g.Count != w.Count || !g.Time.Equal(w.Time) {
					t.Errorf("event %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	if s.P50 != 50*time.Millisecond || s.P90 != 90*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("summarize = %+v, want 50/90/99/100 ms", s)
	}
	if (summarize(nil) != latencySummary{}) {
		t.Error("summarize(nil) is not zero")
	}
}
