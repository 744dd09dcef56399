package rpc

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func TestDuplicateKey(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1,"b":2}`:                       "",
		`{"a":1,"a":2}`:                       "a",
		`[{"item":"x","count":1,"item":"y"}]`: "item",
		`{"a":{"b":1},"c":{"b":2}}`:           "",
		`{"a":{"b":1,"b":2}}`:                 "b",
		`{"a":"}","a":1}`:                     "a",
		`{"a\"b":1,"a\"b":2}`:                 `a"b`,
		`{"\u0061":1,"a":2}`:                  "a",
		`{"x":["a","a"],"y":"a"}`:             "",
		`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k1":0}`: "k1",
	} {
		got, dup := duplicateKey([]byte(in))
		if got != want || dup != (want != "") {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q", in, got, dup, want)
		}
	}
}

// BenchmarkDuplicateKey: the check against decoding the same 1,000-event
// body, to keep its cost in view.
func BenchmarkDuplicateKey(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"item":"song-` + strconv.Itoa(i) + `","count":1,"time":1733390000000}`)
	}
	buf.WriteByte(']')
	data := buf.Bytes()
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if _, dup := duplicateKey(data); dup {
				b.Fatal("dup")
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var evs []eventJSON
			if err := json.Unmarshal(data, &evs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
