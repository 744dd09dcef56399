package history

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func write(start, end int, o Outcome, adds map[string]int64) Write {
	return Write{Start: at(start), End: at(end), Outcome: o, Adds: adds}
}

func TestExactlyOnce(t *testing.T) {
	writes := []Write{
		write(0, 10, OK, map[string]int64{"a": 2, "b": 1}),
		write(5, 20, OK, map[string]int64{"a": 1}),
		write(6, 30, Unknown, map[string]int64{"a": 3, "c": 1}),
		write(7, 40, Unknown, map[string]int64{"a": 5}),
		write(8, 50, Failed, map[string]int64{"d": 4}),
		write(9, 0, Pending, map[string]int64{"e": 1}),
	}
	for _, c := range []struct {
		name  string
		final map[string]int64
		ok    bool
		lost  int64
		dup   int64
	}{
		{"acked only", map[string]int64{"a": 3, "b": 1}, true, 0, 0},
		{"with unknown subsets", map[string]int64{"a": 11, "b": 1, "c": 1, "e": 1}, true, 0, 0},
		{"one unknown of a", map[string]int64{"a": 8, "b": 1}, true, 0, 0},
		{"lost", map[string]int64{"a": 2, "b": 1}, false, 1, 0},
		{"doubled", map[string]int64{"a": 3, "b": 2}, false, 0, 1},
		{"no subset explains", map[string]int64{"a": 7, "b": 1}, false, 0, 0},
		{"failed counted", map[string]int64{"a": 3, "b": 1, "d": 4}, false, 0, 4},
		{"missing item", map[string]int64{"a": 3}, false, 1, 0},
	} {
		r := CheckExactlyOnce(writes, c.final)
		if r.OK() != c.ok || r.Lost != c.lost || r.Doubled != c.dup {
			t.Errorf("%s: %v (unexplained %v); want ok %v, lost %d, doubled %d", c.name, r, r.Unexplained, c.ok, c.lost, c.dup)
		}
		if c.name == "acked only" && r.Acked != 4 {
			t.Errorf("acked %d, want 4", r.Acked)
		}
	}
}

func TestReadsAgainstCounterModel(t *testing.T) {
	writes := []Write{
		write(0, 10, OK, map[string]int64{"a": 1}),
		write(20, 30, OK, map[string]int64{"a": 2}),
		write(25, 60, Unknown, map[string]int64{"a": 4}),
		write(26, 27, Failed, map[string]int64{"a": 8}),
	}
	read := func(start, end int, c string, v int64) Read {
		return Read{Item: "a", Consistency: c, Start: at(start), End: at(end), Value: v}
	}
	for _, c := range []struct {
		r  Read
		ok bool
	}{
		{read(15, 18, "linearizable", 1), true},
		{read(15, 18, "linearizable", 0), false}, // misses a write acknowledged before it began
		{read(15, 18, "cached", 0), true},        // stale is allowed
		{read(15, 21, "linearizable", 3), true},  // the write in flight may show
		{read(15, 18, "cached", 3), false},       // but not one not yet sent
		{read(40, 50, "linearizable", 3), true},
		{read(40, 50, "linearizable", 7), true}, // the unknown one counted
		{read(40, 50, "linearizable", 11), false},
		{read(40, 50, "linearizable", 15), false}, // the failed one never counts
	} {
		v := CheckReads(writes, []Read{c.r}, "linearizable")
		if (len(v) == 0) != c.ok {
			t.Errorf("%s %d in [%v, %v]: violations %v, want ok %v", c.r.Consistency, c.r.Value, c.r.Start.Sub(t0), c.r.End.Sub(t0), v, c.ok)
		}
	}
}

func TestGaps(t *testing.T) {
	var h History
	for _, end := range []int{100, 300, 1300, 1400} {
		w := h.Begin("p", map[string]int64{"a": 1})
		w.Start = at(end - 50)
		h.End(w, 1, OK)
		w.End = at(end)
	}
	if g := h.LongestGap(at(0), at(2000)); g != time.Second {
		t.Errorf("longest gap %v, want 1s", g)
	}
	if g := h.LongestGap(at(0), at(3000)); g != 1600*time.Millisecond {
		t.Errorf("longest gap to the end %v, want 1.6s", g)
	}
	if d, ok := h.FirstAckAfter(at(400)); !ok || d != 900*time.Millisecond {
		t.Errorf("first ack after 400ms: %v %v, want 900ms", d, ok)
	}
}

func TestLinearizable(t *testing.T) {
	writes := []Write{
		write(0, 10, OK, map[string]int64{"a": 1, "b": 1}),
		write(20, 30, OK, map[string]int64{"a": 2}),
		write(25, 0, Unknown, map[string]int64{"a": 4}),
		write(26, 27, Failed, map[string]int64{"a": 8}),
	}
	read := func(start, end int, v int64) Read {
		return Read{Item: "a", Consistency: "linearizable", Start: at(start), End: at(end), Value: v}
	}
	for _, c := range []struct {
		name  string
		reads []Read
		want  string
	}{
		{"in order", []Read{read(12, 15, 1), read(31, 32, 3), read(40, 41, 7)}, "Ok"},
		{"unknown never applied", []Read{read(31, 32, 3), read(40, 41, 3)}, "Ok"},
		{"concurrent read sees either", []Read{read(21, 22, 1), read(23, 24, 3)}, "Ok"},
		{"stale after a newer read", []Read{read(21, 22, 3), read(23, 24, 1)}, "Illegal"},
		{"unknown seen, then unseen", []Read{read(40, 41, 7), read(42, 43, 3)}, "Illegal"},
		{"failed write seen", []Read{read(40, 41, 11)}, "Illegal"},
		{"acknowledged write missed", []Read{read(12, 15, 0)}, "Illegal"},
	} {
		got, _ := CheckLinearizable(writes, c.reads, "linearizable", 10*time.Second)
		if string(got) != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
