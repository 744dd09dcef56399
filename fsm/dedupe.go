package fsm

import (
	"cmp"
	"slices"
	"strings"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// dedupeWindow is how many recent sequences per producer are remembered
// (with their outcomes) below the highest one; gaps are allowed inside it.
const dedupeWindow = 256

// producer is one row of the deduplication table.
type producer struct {
	id       string
	epoch    uint64
	high     uint64
	seen     [dedupeWindow / 64]uint64 // bit d: sequence high-d was applied
	lastSeen int64                     // log time, ms
	any      bool                      // high is meaningful
	// The outcomes of recent sequences: a few inline (most producers send
	// few batches within the TTL: 100k one-shot producers cost 233 MiB
	// per partition with a full ring each), then a ring indexed by
	// sequence % dedupeWindow. Either answers the same.
	few  []*pb.Outcome
	ring *[dedupeWindow]*pb.Outcome
}

// maxFewOutcomes is how many outcomes a producer keeps before its ring.
const maxFewOutcomes = 8

// outcome is the recorded outcome of seq, or nil.
func (p *producer) outcome(seq uint64) *pb.Outcome {
	if p.ring != nil {
		if o := p.ring[seq%dedupeWindow]; o != nil && o.Sequence == seq {
			return o
		}
		return nil
	}
	for _, o := range p.few {
		if o.Sequence == seq {
			return o
		}
	}
	return nil
}

// setOutcome records o (for o.Sequence), replacing whatever held its ring
// slot, as the ring would.
func (p *producer) setOutcome(o *pb.Outcome) {
	slot := o.Sequence % dedupeWindow
	if p.ring != nil {
		p.ring[slot] = o
		return
	}
	p.few = slices.DeleteFunc(p.few, func(x *pb.Outcome) bool { return x.Sequence%dedupeWindow == slot })
	if len(p.few) < maxFewOutcomes {
		p.few = append(p.few, o)
		return
	}
	p.ring = new([dedupeWindow]*pb.Outcome)
	for _, x := range p.few {
		p.ring[x.Sequence%dedupeWindow] = x
	}
	p.ring[slot] = o
	p.few = nil
}

type dedupeTable struct {
	ttlMs     int64
	maxRows   int // tuning.maxProducers
	producers map[string]*producer
}

func newDedupeTable(ttlMs int64, maxRows int) *dedupeTable {
	return &dedupeTable{ttlMs: ttlMs, maxRows: maxRows, producers: make(map[string]*producer)}
}

// check decides what to do with a part. It returns a non-nil outcome when the
// part must not be applied (duplicate, too old, stale epoch), and otherwise the
// producer row to record into (nil for parts without a producer id).
func (t *dedupeTable) check(part *pb.ProducerPart, logMs int64) (*producer, *pb.Outcome) {
	if part.ProducerId == "" {
		return nil, nil
	}
	p := t.producers[part.ProducerId]
	if p == nil {
		id := strings.Clone(part.ProducerId) // decoded ids alias the log entry
		p = &producer{id: id, epoch: part.Epoch}
		t.producers[id] = p
	}
	p.lastSeen = logMs
	seq := part.Sequence
	switch {
	case part.Epoch < p.epoch:
		return nil, &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_STALE_EPOCH}
	case part.Epoch > p.epoch:
		*p = producer{id: p.id, epoch: part.Epoch, lastSeen: logMs}
	}
	if !p.any || seq > p.high {
		return p, nil
	}
	d := p.high - seq
	if d >= dedupeWindow {
		return nil, &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_SEQUENCE_TOO_OLD}
	}
	if p.seen[d/64]&(1<<(d%64)) != 0 {
		orig := p.outcome(seq)
		out := &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_DUPLICATE}
		if orig != nil {
			out.Accepted, out.Rejected, out.Late = orig.Accepted, orig.Rejected, orig.Late
		}
		return nil, out
	}
	return p, nil
}

// record marks seq applied with its outcome (whose Sequence is seq).
func (p *producer) record(seq uint64, out *pb.Outcome) {
	if !p.any || seq > p.high {
		shift := uint64(dedupeWindow)
		if p.any {
			shift = seq - p.high
		}
		p.shift(shift)
		p.high, p.any = seq, true
	}
	d := p.high - seq
	p.seen[d/64] |= 1 << (d % 64)
	p.setOutcome(out) // out.Sequence == seq
}

// shift moves the seen bitmap n sequences down (older).
func (p *producer) shift(n uint64) {
	if n >= dedupeWindow {
		p.seen = [dedupeWindow / 64]uint64{}
		return
	}
	words, rem := int(n/64), n%64
	var out [dedupeWindow / 64]uint64
	for i := len(out) - 1; i >= words; i-- {
		v := p.seen[i-words] << rem
		if rem != 0 && i-words-1 >= 0 {
			v |= p.seen[i-words-1] >> (64 - rem)
		}
		out[i] = v
	}
	p.seen = out
}

// expire drops producers idle for longer than the TTL in log time, then,
// above maxRows rows, the least recently seen (ties by id) down to 90%
// of it. An evicted producer's retry is counted as new: its exactly-once
// window ended early, as it does after the TTL.
func (t *dedupeTable) expire(logMs int64) {
	for id, p := range t.producers {
		if logMs-p.lastSeen > t.ttlMs {
			delete(t.producers, id)
		}
	}
	if len(t.producers) <= t.maxRows {
		return
	}
	rows := make([]*producer, 0, len(t.producers))
	for _, p := range t.producers {
		rows = append(rows, p)
	}
	slices.SortFunc(rows, func(a, b *producer) int {
		if c := cmp.Compare(a.lastSeen, b.lastSeen); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, p := range rows[:len(rows)-t.maxRows*9/10] {
		delete(t.producers, p.id)
	}
}

func (t *dedupeTable) sortedIDs() []string {
	ids := make([]string, 0, len(t.producers))
	for id := range t.producers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
