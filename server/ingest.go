package server

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// IngestPolicy bounds the ingest path.
type IngestPolicy struct {
	Linger         time.Duration // how long a combiner waits to fill an entry
	MaxEntryDeltas int           // deltas per Raft entry
	QueueParts     int           // queued parts per partition before ErrOverloaded
	MaxInFlight    int           // Raft entries in flight per partition
	MaxBatchEvents int           // events per request
	MaxItemBytes   int           // bytes per item id
	MaxFutureSkew  time.Duration // how far ahead of this node's clock an event time may be
	ApplyTimeout   time.Duration
	// MaxPendingEvents bounds the events of all requests in progress on the
	// node (validated, queued or awaiting commit): the queues count parts,
	// and a part may hold up to MaxBatchEvents events.
	MaxPendingEvents int
}

func (p IngestPolicy) withDefaults() IngestPolicy {
	d := IngestPolicy{Linger: time.Millisecond, MaxEntryDeltas: 1 << 16, QueueParts: 4096, MaxInFlight: 8,
		MaxBatchEvents: 100_000, MaxItemBytes: 512, MaxFutureSkew: 10 * time.Minute, ApplyTimeout: 10 * time.Second,
		MaxPendingEvents: 4_000_000}
	if p.Linger > 0 {
		d.Linger = p.Linger
	}
	if p.MaxEntryDeltas > 0 {
		d.MaxEntryDeltas = p.MaxEntryDeltas
	}
	if p.QueueParts > 0 {
		d.QueueParts = p.QueueParts
	}
	if p.MaxInFlight > 0 {
		d.MaxInFlight = p.MaxInFlight
	}
	if p.MaxBatchEvents > 0 {
		d.MaxBatchEvents = p.MaxBatchEvents
	}
	if p.MaxItemBytes > 0 {
		d.MaxItemBytes = p.MaxItemBytes
	}
	if p.MaxFutureSkew > 0 {
		d.MaxFutureSkew = p.MaxFutureSkew
	}
	if p.ApplyTimeout > 0 {
		d.ApplyTimeout = p.ApplyTimeout
	}
	if p.MaxPendingEvents > 0 {
		d.MaxPendingEvents = p.MaxPendingEvents
	}
	return d
}

// Event is one occurrence to count.
type Event struct {
	Item   string
	Count  int64 // 0 means 1
	TimeMs int64 // 0: stamped on arrival
}

// IngestRequest is one producer batch.
type IngestRequest struct {
	Leaderboard string
	Events      []Event
	// ProducerID, Epoch and Sequence make a retry count once. Empty: the
	// receiving node assigns them (producerLanes), so its own retries
	// count once, and a client's retry is a new request (at-least-once).
	ProducerID string
	Epoch      uint64
	Sequence   uint64
}

// IngestResult sums the outcomes of a batch's parts.
type IngestResult struct {
	Accepted  uint64 // events counted in "all"
	Rejected  uint64
	Duplicate bool // some part had been applied before: its original outcome is included
	Late      map[time.Duration]uint64
}

// MaxEventCount bounds one event's count: a request of 100,000 such
// events still sums within the FSM's delta range (fsm.MaxDelta).
const MaxEventCount = 1 << 40

// MaxProducerIDBytes bounds a producer id: every part and every
// deduplication row carries it.
const MaxProducerIDBytes = 128

// FieldError is a validation failure naming the offending field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Ingest validates the whole batch, splits it by partition, and returns once
// every part is committed. A retry with the same (producer, epoch, sequence)
// completes a partially committed batch and never counts a part twice.
func (co *coordinator) Ingest(ctx context.Context, req IngestRequest) (IngestResult, error) {
	co.metrics.ingestReqs.Inc()
	if req.Leaderboard == "" {
		req.Leaderboard = "default"
	}
	cfg, err := co.boards(req.Leaderboard)
	if err != nil {
		return IngestResult{}, err
	}
	parts, maxEvent, err := co.split(cfg, req)
	if err != nil {
		co.metrics.rejections.WithLabelValues("invalid").Inc()
		return IngestResult{}, err
	}
	events, limit := int64(len(req.Events)), int64(co.policy.MaxPendingEvents)
	if pending := co.pending.Add(events); pending > limit && pending != events {
		co.pending.Add(-events)
		co.metrics.rejections.WithLabelValues("pending_events").Inc()
		return IngestResult{}, refusedWhole{fmt.Errorf("%w: %d events of other requests are in progress on this node (limit %d)", ErrOverloaded, pending-events, limit)}
	}
	defer co.pending.Add(-events)
	if err := co.mem.check(); err != nil {
		co.metrics.rejections.WithLabelValues("memory").Inc()
		return IngestResult{}, refusedWhole{err}
	}
	if err := co.checkMaxItems(ctx, cfg, req); err != nil {
		co.metrics.rejections.WithLabelValues("max_items").Inc()
		return IngestResult{}, refusedWhole{err}
	}
	if cfg.Clock != pb.Clock_CLOCK_EVENT {
		maxEvent = 0 // only an event clock advances with event times
	}
	assigned := req.ProducerID == ""
	if assigned {
		ln := co.lanes.get()
		defer co.lanes.put(ln)
		for _, part := range parts {
			if part != nil {
				part.ProducerId, part.Epoch, part.Sequence = ln.id, co.lanes.epoch, ln.seq
			}
		}
	}
	type result struct {
		out *pb.Outcome
		err error
	}
	results := make([]result, len(parts))
	var wg sync.WaitGroup
	for p, part := range parts {
		if part == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := co.replicas[p].Submit(ctx, Part{ProducerPart: part, MaxEventMs: maxEvent})
			results[p] = result{out, err}
		}()
	}
	wg.Wait()
	res := IngestResult{}
	var errs []error
	for p, r := range results {
		if parts[p] == nil {
			continue
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p, r.err))
			continue
		}
		switch r.out.Status {
		case pb.PartStatus_PART_STATUS_DUPLICATE:
			res.Duplicate = !assigned // else a retry of this node's own, counted once
		case pb.PartStatus_PART_STATUS_SEQUENCE_TOO_OLD:
			errs = append(errs, fmt.Errorf("partition %d: %w: sequence %d is older than the deduplication window", p, ErrInvalid, req.Sequence))
			continue
		case pb.PartStatus_PART_STATUS_STALE_EPOCH:
			errs = append(errs, fmt.Errorf("partition %d: %w: epoch %d is older than the producer's current epoch", p, ErrInvalid, req.Epoch))
			continue
		}
		res.Accepted += r.out.Accepted
		res.Rejected += r.out.Rejected
		for _, l := range r.out.Late {
			if int(l.Window) < len(cfg.Windows) {
				if res.Late == nil {
					res.Late = map[time.Duration]uint64{}
				}
				res.Late[time.Duration(cfg.Windows[l.Window].DurationMs)*time.Millisecond] += l.Events
			}
		}
	}
	if len(errs) > 0 {
		return res, errors.Join(errs...)
	}
	return res, nil
}

// split validates every event and builds one pre-aggregated part per
// partition: identical (item, second) pairs become one delta.
func (co *coordinator) split(cfg *pb.LeaderboardConfig, req IngestRequest) ([]*pb.ProducerPart, int64, error) {
	pol := co.policy
	if len(req.Events) == 0 {
		return nil, 0, invalid("events", "empty batch")
	}
	if len(req.Events) > pol.MaxBatchEvents {
		return nil, 0, invalid("events", "%d events exceed the batch limit of %d", len(req.Events), pol.MaxBatchEvents)
	}
	// The producer id rides in every part: one that cannot be encoded
	// would fail the whole Raft entry, other producers' parts with it.
	if req.ProducerID != "" {
		switch {
		case len(req.ProducerID) > MaxProducerIDBytes:
			return nil, 0, invalid("producer_id", "%d bytes exceed the limit of %d", len(req.ProducerID), MaxProducerIDBytes)
		case !utf8.ValidString(req.ProducerID):
			return nil, 0, invalid("producer_id", "not valid UTF-8")
		case strings.HasPrefix(req.ProducerID, AssignedProducerPrefix):
			return nil, 0, invalid("producer_id", "ids starting with %q are reserved for the ids nodes assign", AssignedProducerPrefix)
		case req.Sequence == 0:
			// 0 would make every later batch a duplicate of the first.
			return nil, 0, invalid("sequence", "must be at least 1 when producer_id is set")
		}
	}
	now := co.clock.Now().UnixMilli()
	horizon := now + pol.MaxFutureSkew.Milliseconds()
	// Events aggregate per (item, second) in first-seen order, then each
	// distinct pair is hashed to its partition once.
	tab := getAggTable(len(req.Events))
	aggs := tab.aggs[:0]
	defer func() { putAggTable(tab, aggs) }()
	var maxEvent int64
	for i, e := range req.Events {
		if err := checkItem(e.Item, pol.MaxItemBytes); err != "" {
			return nil, 0, invalid(fmt.Sprintf("events[%d].item", i), "%s", err)
		}
		c := e.Count
		if c == 0 {
			c = 1
		}
		if c > MaxEventCount || c < -MaxEventCount {
			return nil, 0, invalid(fmt.Sprintf("events[%d].count", i), "%d is beyond the limit of ±%d", c, int64(MaxEventCount))
		}
		if c < 0 && cfg.Mode != pb.Mode_MODE_EXACT {
			return nil, 0, invalid(fmt.Sprintf("events[%d].count", i), "negative counts are not supported in mode %s", modeName(cfg.Mode))
		}
		t := e.TimeMs
		if t == 0 {
			t = now
		}
		if t < 1000 {
			return nil, 0, invalid(fmt.Sprintf("events[%d].time", i), "must be after 1970-01-01T00:00:01Z")
		}
		if t > horizon {
			return nil, 0, invalid(fmt.Sprintf("events[%d].time", i), "%s is more than %v ahead of this node's clock",
				time.UnixMilli(t).UTC().Format(time.RFC3339), pol.MaxFutureSkew)
		}
		maxEvent = max(maxEvent, t)
		if j := tab.row(aggs, e.Item, t/1000); j >= 0 {
			aggs[j].delta += c
			aggs[j].events++
			continue
		}
		aggs = append(aggs, agg{item: e.Item, sec: t / 1000, delta: c, events: 1})
	}
	// Columns are sized exactly: count each partition's rows first.
	nparts := len(co.replicas)
	counts := make([]int32, nparts)
	for i := range aggs {
		aggs[i].part = int32(PartitionOf(cfg.Name, aggs[i].item, nparts))
		counts[aggs[i].part]++
	}
	parts := make([]*pb.ProducerPart, nparts)
	for p, c := range counts {
		if c > 0 {
			parts[p] = &pb.ProducerPart{ProducerId: req.ProducerID, Epoch: req.Epoch, Sequence: req.Sequence,
				Boards: []*pb.LeaderboardDeltas{{Leaderboard: cfg.Name, Incarnation: cfg.Incarnation, MaxEventTimeMs: maxEvent,
					Items: make([]string, 0, c), Deltas: make([]int64, 0, c), EventTimesS: make([]int64, 0, c), Events: make([]uint32, 0, c)}}}
		}
	}
	for _, a := range aggs {
		d := parts[a.part].Boards[0]
		d.Items = append(d.Items, a.item)
		d.Deltas = append(d.Deltas, a.delta)
		d.EventTimesS = append(d.EventTimesS, a.sec)
		d.Events = append(d.Events, a.events)
	}
	return parts, maxEvent, nil
}

func modeName(m pb.Mode) string {
	switch m {
	case pb.Mode_MODE_CMS:
		return "cms"
	case pb.Mode_MODE_SPACESAVING:
		return "spacesaving"
	default:
		return "exact"
	}
}

// checkMaxItems answers ResourceExhausted before proposal when the
// leaderboard is full and the batch brings new items.
func (co *coordinator) checkMaxItems(ctx context.Context, cfg *pb.LeaderboardConfig, req IngestRequest) error {
	if cfg.MaxItems == 0 {
		return nil
	}
	var total uint64
	for _, r := range co.replicas {
		n, _, err := r.Distinct(ctx, cfg.Name, cfg.Incarnation, nil)
		if err != nil {
			return err
		}
		total += n
	}
	if total < cfg.MaxItems {
		return nil
	}
	byPart := make([][]string, len(co.replicas))
	for _, e := range req.Events {
		p := PartitionOf(cfg.Name, e.Item, len(co.replicas))
		byPart[p] = append(byPart[p], e.Item)
	}
	for p, items := range byPart {
		if len(items) == 0 {
			continue
		}
		_, in, err := co.replicas[p].Distinct(ctx, cfg.Name, cfg.Incarnation, items)
		if err != nil {
			return err
		}
		for _, ok := range in {
			if !ok {
				return fmt.Errorf("%w: leaderboard %q holds its max_items of %d distinct items", ErrOverloaded, cfg.Name, cfg.MaxItems)
			}
		}
	}
	return nil
}

// ---- watermarks and ticks ----

type watermarks struct {
	mu sync.Mutex
	m  map[string]*pb.Watermark
}

func newWatermarks() *watermarks { return &watermarks{m: map[string]*pb.Watermark{}} }

func (w *watermarks) observe(lb string, inc uint64, t int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.m[lb]
	switch {
	case cur == nil || inc > cur.Incarnation:
		w.m[lb] = &pb.Watermark{Leaderboard: lb, Incarnation: inc, MaxEventTimeMs: t}
	case inc == cur.Incarnation:
		cur.MaxEventTimeMs = max(cur.MaxEventTimeMs, t)
	}
	// An older incarnation (ingest racing a re-create) never replaces a newer one.
}

// prune drops the watermarks of leaderboards no longer defined at their
// incarnation, so dropped leaderboards stop riding in every tick.
func (w *watermarks) prune(defined func(lb string, inc uint64) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for lb, x := range w.m {
		if !defined(lb, x.Incarnation) {
			delete(w.m, lb)
		}
	}
}

func (w *watermarks) list() []*pb.Watermark {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*pb.Watermark, 0, len(w.m))
	for _, x := range w.m {
		out = append(out, &pb.Watermark{Leaderboard: x.Leaderboard, Incarnation: x.Incarnation, MaxEventTimeMs: x.MaxEventTimeMs})
	}
	return out
}

// tickLoop proposes a tick on every led partition that was idle for a
// second, so windows keep sliding and event-clock watermarks spread.
func (n *Node) tickLoop() {
	const every = time.Second
	n.periodic(every, func() {
		n.watermark.prune(func(lb string, inc uint64) bool {
			cfg, err := n.leaderboard(lb)
			return err == nil && cfg.Incarnation == inc
		})
		wms := n.watermark.list()
		now := n.clock.Now()
		for _, p := range n.parts {
			p.tick(now, every, wms)
		}
	})
}

// agg is one (item, second) of a request with its summed delta.
type agg struct {
	item   string
	sec    int64
	delta  int64
	events uint32
	part   int32
}

// aggTable finds a request's (item, second) rows with one hash per event and
// no allocation: open addressing over row numbers, pooled between requests.
type aggTable struct {
	seed  maphash.Seed
	slots []int32 // row+1; 0 is empty
	mask  uint64
	aggs  []agg // the rows, kept for the next request
}

// maxPooledSlots keeps a 100,000-event request's table out of the pool.
const maxPooledSlots = 1 << 14

var aggTables = sync.Pool{New: func() any { return &aggTable{seed: maphash.MakeSeed()} }}

func getAggTable(events int) *aggTable {
	t := aggTables.Get().(*aggTable)
	size := 16
	for size < 2*events {
		size <<= 1
	}
	if cap(t.slots) >= size {
		t.slots = t.slots[:size]
		clear(t.slots)
	} else {
		t.slots = make([]int32, size)
	}
	t.mask = uint64(size - 1)
	return t
}

// putAggTable pools t with the rows' backing array, emptied so it holds no
// request's strings.
func putAggTable(t *aggTable, aggs []agg) {
	if cap(t.slots) <= maxPooledSlots {
		clear(aggs)
		t.aggs = aggs[:0]
		aggTables.Put(t)
	}
}

// row returns the row of (item, sec) in aggs, or -1 after reserving a slot
// for it as row len(aggs), which the caller appends next.
func (t *aggTable) row(aggs []agg, item string, sec int64) int {
	h := maphash.String(t.seed, item) ^ uint64(sec)*0x9e3779b97f4a7c15
	h ^= h >> 29
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := t.slots[i]
		if s == 0 {
			t.slots[i] = int32(len(aggs)) + 1
			return -1
		}
		if a := &aggs[s-1]; a.sec == sec && a.item == item {
			return int(s - 1)
		}
	}
}

// checkItem is the one rule for item ids, in ingest and in reads: what
// ingest refuses is never a valid id to ask about. It returns what is
// wrong, or "".
func checkItem(item string, maxBytes int) string {
	switch {
	case item == "":
		return "empty item"
	case len(item) > maxBytes:
		return fmt.Sprintf("%d bytes exceed the limit of %d", len(item), maxBytes)
	case !utf8.ValidString(item):
		return "not valid UTF-8"
	}
	return ""
}
