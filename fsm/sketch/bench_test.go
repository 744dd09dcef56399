package sketch

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// benchEvents is a Zipf(1.0) stream over 1M distinct items, the strings
// made before any timing. Built once, only when a benchmark asks. Every
// event gets its own copy of the item string, allocated in stream order,
// as the FSM's decoded commands would be: reading an event's bytes is then
// not a cache miss into a 1M-item table, which would dominate the timings.
var benchEvents = sync.OnceValue(func() []string {
	const distinct, events = 1 << 20, 1 << 21
	items := zipfItems(distinct, 11)
	z := newZipf(distinct, 1.0, 11)
	ev := make([]string, events)
	for i := range ev {
		ev[i] = strings.Clone(items[z.next()])
	}
	return ev
})

// BenchmarkSummaryAdd reports ns per event (one Add per op) in steady
// state: the summary has seen the whole stream once before timing.
func BenchmarkSummaryAdd(b *testing.B) {
	ev := benchEvents()
	mask := len(ev) - 1
	for _, capacity := range []int{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("capacity=%d", capacity), func(b *testing.B) {
			s := NewSummary(capacity)
			for _, x := range ev {
				s.Add(x, 1)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Add(ev[i&mask], 1)
				i++
			}
			perEvent(b)
		})
	}
}

func BenchmarkCMSTopKAdd(b *testing.B) {
	ev := benchEvents()
	mask := len(ev) - 1
	w, d := CountMinSize(0.001, 0.01)
	t := NewCMSTopK(1000, w, d, 1)
	for _, x := range ev {
		t.Add(x, 1)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t.Add(ev[i&mask], 1)
		i++
	}
	perEvent(b)
}

// perEvent restates ns/op as ns/event for benchmarks doing one Add per op.
func perEvent(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

// BenchmarkMerge merges two full summaries of capacity 5000 built from the
// even and odd events of the stream.
func BenchmarkMerge(b *testing.B) {
	ev := benchEvents()
	x, y := NewSummary(5000), NewSummary(5000)
	for i, e := range ev {
		if i%2 == 0 {
			x.Add(e, 1)
		} else {
			y.Add(e, 1)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		Merge(5000, x, y)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(x.Len()+y.Len())), "ns/counter")
}

func BenchmarkSummaryResult(b *testing.B) {
	ev := benchEvents()
	s := NewSummary(5000)
	for _, e := range ev {
		s.Add(e, 1)
	}
	for _, k := range []int{10, 1000} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Result(k)
			}
		})
	}
}

var sinkLoc Loc

func BenchmarkCountMinLocate(b *testing.B) {
	ev := benchEvents()
	mask := len(ev) - 1
	w, d := CountMinSize(0.001, 0.01)
	c := NewCountMin(w, d, 1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sinkLoc = c.Locate(ev[i&mask])
		i++
	}
}
