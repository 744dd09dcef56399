// Package history records what a fault test's clients did and saw, and
// checks it against topkd's guarantees: every acknowledged event counted
// exactly once, and linearizable reads inside the bounds of Jepsen's
// counter model.
//
// The unit of checking is the item. A batch's events of one item all fall
// in one partition, which commits its part of the batch or not as a whole,
// so each batch adds to an item all of its events for that item or none.
package history

import (
	"slices"
	"sync"
	"time"
)

// Outcome is how a write ended as its producer saw it.
type Outcome int

const (
	// Pending: no final answer yet (the run ended first); treated as Unknown.
	Pending Outcome = iota
	// OK: acknowledged; every event must be counted exactly once.
	OK
	// Failed: refused before anything was proposed; nothing may be counted.
	Failed
	// Unknown: may or may not have been counted, but at most once.
	Unknown
)

func (o Outcome) String() string {
	return [...]string{"pending", "ok", "failed", "unknown"}[o]
}

// Write is one ingest batch: the events it adds to each item.
type Write struct {
	Producer string
	Sequence uint64
	Adds     map[string]int64
	Start    time.Time // first attempt sent
	End      time.Time // final answer received (zero while pending)
	Outcome  Outcome
}

// Read is one count of an item, from a Count or a TopK answer.
type Read struct {
	Item        string
	Consistency string
	Start, End  time.Time
	Value       int64
}

// History is safe for concurrent use by the clients of a test.
type History struct {
	mu     sync.Mutex
	writes []*Write
	reads  []Read
}

// Begin records a write about to be sent and returns it for End.
func (h *History) Begin(producer string, adds map[string]int64) *Write {
	w := &Write{Producer: producer, Adds: adds, Start: time.Now()}
	h.mu.Lock()
	h.writes = append(h.writes, w)
	h.mu.Unlock()
	return w
}

// End records the write's final answer.
func (h *History) End(w *Write, seq uint64, o Outcome) {
	now := time.Now()
	h.mu.Lock()
	w.Sequence, w.End, w.Outcome = seq, now, o
	h.mu.Unlock()
}

// AddRead records a read.
func (h *History) AddRead(r Read) {
	h.mu.Lock()
	h.reads = append(h.reads, r)
	h.mu.Unlock()
}

// Writes returns a copy of the writes recorded so far.
func (h *History) Writes() []Write {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Write, len(h.writes))
	for i, w := range h.writes {
		out[i] = *w
	}
	return out
}

// Reads returns a copy of the reads recorded so far.
func (h *History) Reads() []Read {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Read(nil), h.reads...)
}

// Tally counts writes by outcome and their events.
type Tally struct {
	Writes, OK, Failed, Unknown int
	EventsAcked, EventsUnknown  int64
}

// Tally sums the writes recorded so far.
func (h *History) Tally() Tally {
	var t Tally
	for _, w := range h.Writes() {
		t.Writes++
		var n int64
		for _, v := range w.Adds {
			n += v
		}
		switch w.Outcome {
		case OK:
			t.OK++
			t.EventsAcked += n
		case Failed:
			t.Failed++
		default:
			t.Unknown++
			t.EventsUnknown += n
		}
	}
	return t
}

// LongestGap is the longest time between two consecutive acknowledgements
// within [from, to] (the write unavailability), counting from from and up
// to to when no write was acknowledged at the edges.
func (h *History) LongestGap(from, to time.Time) time.Duration {
	var ends []time.Time
	for _, w := range h.Writes() {
		if w.Outcome == OK && !w.End.Before(from) && !w.End.After(to) {
			ends = append(ends, w.End)
		}
	}
	slices.SortFunc(ends, time.Time.Compare)
	prev, gap := from, time.Duration(0)
	for _, e := range ends {
		gap = max(gap, e.Sub(prev))
		prev = e
	}
	return max(gap, to.Sub(prev))
}

// FirstAckAfter is how long after t the first write that started after t
// was acknowledged; false when none was.
func (h *History) FirstAckAfter(t time.Time) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for _, w := range h.Writes() {
		if w.Outcome == OK && !w.Start.Before(t) && (!ok || w.End.Sub(t) < best) {
			best, ok = w.End.Sub(t), true
		}
	}
	return best, ok
}
