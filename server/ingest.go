package server

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/topkd/topkd/fsm"
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
	ProducerID  string // empty: at-least-once
	Epoch       uint64
	Sequence    uint64
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
func (n *Node) Ingest(ctx context.Context, req IngestRequest) (IngestResult, error) {
	if req.Leaderboard == "" {
		req.Leaderboard = "default"
	}
	cfg, err := n.leaderboard(req.Leaderboard)
	if err != nil {
		return IngestResult{}, err
	}
	parts, maxEvent, err := n.split(cfg, req)
	if err != nil {
		n.metrics.rejections.WithLabelValues("invalid").Inc()
		return IngestResult{}, err
	}
	events, limit := int64(len(req.Events)), int64(n.cfg.Ingest.MaxPendingEvents)
	if pending := n.pendingEvents.Add(events); pending > limit && pending != events {
		n.pendingEvents.Add(-events)
		n.metrics.rejections.WithLabelValues("pending_events").Inc()
		return IngestResult{}, fmt.Errorf("%w: %d events of other requests are in progress on this node (limit %d)", ErrOverloaded, pending-events, limit)
	}
	defer n.pendingEvents.Add(-events)
	if err := n.mem.check(); err != nil {
		n.metrics.rejections.WithLabelValues("memory").Inc()
		return IngestResult{}, err
	}
	if err := n.checkMaxItems(cfg, req); err != nil {
		n.metrics.rejections.WithLabelValues("max_items").Inc()
		return IngestResult{}, err
	}
	if cfg.Clock == pb.Clock_CLOCK_EVENT {
		n.watermark.observe(cfg.Name, cfg.Incarnation, maxEvent)
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
			out, err := n.parts[p].comb.submit(ctx, part)
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
			res.Duplicate = true
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
func (n *Node) split(cfg *pb.LeaderboardConfig, req IngestRequest) ([]*pb.ProducerPart, int64, error) {
	pol := n.cfg.Ingest
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
		case req.Sequence == 0:
			// 0 would make every later batch a duplicate of the first.
			return nil, 0, invalid("sequence", "must be at least 1 when producer_id is set")
		}
	}
	now := n.clock.Now().UnixMilli()
	horizon := now + pol.MaxFutureSkew.Milliseconds()
	// Events aggregate per (item, second) in first-seen order, then each
	// distinct pair is hashed to its partition once.
	tab := getAggTable(len(req.Events))
	aggs := tab.aggs[:0]
	defer func() { putAggTable(tab, aggs) }()
	var maxEvent int64
	for i, e := range req.Events {
		switch {
		case e.Item == "":
			return nil, 0, invalid(fmt.Sprintf("events[%d].item", i), "empty item")
		case len(e.Item) > pol.MaxItemBytes:
			return nil, 0, invalid(fmt.Sprintf("events[%d].item", i), "%d bytes exceed the limit of %d", len(e.Item), pol.MaxItemBytes)
		case !utf8.ValidString(e.Item):
			return nil, 0, invalid(fmt.Sprintf("events[%d].item", i), "not valid UTF-8")
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
	counts := make([]int32, n.nparts)
	for i := range aggs {
		aggs[i].part = int32(PartitionOf(cfg.Name, aggs[i].item, n.nparts))
		counts[aggs[i].part]++
	}
	parts := make([]*pb.ProducerPart, n.nparts)
	for p, c := range counts {
		if c > 0 {
			parts[p] = &pb.ProducerPart{ProducerId: req.ProducerID, Epoch: req.Epoch, Sequence: req.Sequence,
				Boards: []*pb.LeaderboardDeltas{{Leaderboard: cfg.Name, Incarnation: cfg.Incarnation,
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
func (n *Node) checkMaxItems(cfg *pb.LeaderboardConfig, req IngestRequest) error {
	if cfg.MaxItems == 0 {
		return nil
	}
	var total uint64
	for _, p := range n.parts {
		total += uint64(p.fsm.DistinctAt(cfg.Name, cfg.Incarnation))
	}
	if total < cfg.MaxItems {
		return nil
	}
	for _, e := range req.Events {
		p := n.parts[PartitionOf(cfg.Name, e.Item, n.nparts)]
		if !p.fsm.ContainsAt(cfg.Name, cfg.Incarnation, e.Item) {
			return fmt.Errorf("%w: leaderboard %q holds its max_items of %d distinct items", ErrOverloaded, cfg.Name, cfg.MaxItems)
		}
	}
	return nil
}

// ---- combiner ----

type pendingPart struct {
	part *pb.ProducerPart
	size int
	done chan partResult // buffered 1: the responder never blocks
}

type partResult struct {
	out *pb.Outcome
	err error
}

// combiner coalesces the parts queued for one partition into Raft entries.
type combiner struct {
	n        *Node
	p        *partition
	in       chan *pendingPart // buffered: the bounded ingest queue
	inflight chan struct{}     // semaphore of entries in flight
	last     time.Time         // last proposal, for idle ticks
	mu       sync.Mutex
	wg       sync.WaitGroup
}

func newCombiner(n *Node, p *partition) *combiner {
	pol := n.cfg.Ingest
	return &combiner{n: n, p: p, in: make(chan *pendingPart, pol.QueueParts), inflight: make(chan struct{}, pol.MaxInFlight)}
}

func (c *combiner) submit(ctx context.Context, part *pb.ProducerPart) (*pb.Outcome, error) {
	if !c.p.g.isLeader() {
		return nil, ErrNotLeader
	}
	pp := &pendingPart{part: part, size: len(part.Boards[0].Items), done: make(chan partResult, 1)}
	select {
	case c.in <- pp:
	default:
		c.n.metrics.rejections.WithLabelValues("queue_full").Inc()
		return nil, fmt.Errorf("%w: partition %d ingest queue is full (%d parts)", ErrOverloaded, c.p.id, cap(c.in))
	}
	select {
	case r := <-pp.done:
		return r.out, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	case <-c.n.stop:
		// The combiner may have drained before this part was queued, and
		// nobody would answer it; if it was proposed, its outcome is unknown.
		select {
		case r := <-pp.done:
			return r.out, r.err
		default:
			return nil, fmt.Errorf("%w: node shutting down", ErrUnknownOutcome)
		}
	}
}

func (c *combiner) run() {
	defer c.wg.Wait()
	pol := c.n.cfg.Ingest
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *pendingPart
		select {
		case <-c.n.stop:
			c.drain()
			return
		case first = <-c.in:
		}
		batch := []*pendingPart{first}
		size := first.size
		timer.Reset(pol.Linger)
	collect:
		for size < pol.MaxEntryDeltas {
			select {
			case pp := <-c.in:
				batch = append(batch, pp)
				size += pp.size
			case <-timer.C:
				break collect
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		c.propose(batch)
	}
}

func (c *combiner) propose(batch []*pendingPart) {
	pol := c.n.cfg.Ingest
	c.inflight <- struct{}{}
	leaderMs := c.n.clock.Now().UnixMilli()
	entryOf := func(batch []*pendingPart) *pb.IngestEntry {
		entry := &pb.IngestEntry{LeaderTimeMs: leaderMs, Parts: make([]*pb.ProducerPart, len(batch))}
		for i, pp := range batch {
			entry.Parts[i] = pp.part
		}
		return entry
	}
	data, err := fsm.EncodeIngest(entryOf(batch))
	if err != nil {
		// Validation should have refused such a part; if one slips through,
		// only its own caller fails, not its neighbours in the entry.
		kept := make([]*pendingPart, 0, len(batch))
		for _, pp := range batch {
			if _, perr := fsm.EncodeIngest(entryOf([]*pendingPart{pp})); perr != nil {
				pp.done <- partResult{err: fmt.Errorf("partition %d: part cannot be encoded: %w", c.p.id, perr)}
				continue
			}
			kept = append(kept, pp)
		}
		batch = kept
		if len(batch) > 0 {
			data, err = fsm.EncodeIngest(entryOf(batch))
		}
		if len(batch) == 0 || err != nil {
			for _, pp := range batch {
				pp.done <- partResult{err: err}
			}
			<-c.inflight
			return
		}
	}
	fail := func(err error) {
		for _, pp := range batch {
			pp.done <- partResult{err: err}
		}
		<-c.inflight
	}
	c.mu.Lock()
	c.last = c.n.clock.Now()
	c.mu.Unlock()
	m := c.n.metrics
	m.ingestEntries.Inc()
	m.ingestParts.Add(float64(len(batch)))
	size := 0
	for _, pp := range batch {
		size += pp.size
	}
	m.entryEvents.Observe(float64(size))
	start := time.Now()
	f := c.p.g.raft.Apply(data, pol.ApplyTimeout)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := f.Error(); err != nil {
			fail(raftErr(err))
			return
		}
		res, ok := f.Response().(*fsm.IngestResult)
		if !ok || len(res.Outcomes) != len(batch) {
			fail(fmt.Errorf("partition %d: unexpected apply response %T", c.p.id, f.Response()))
			return
		}
		now := c.n.clock.Now()
		m.commitLatency.Observe(time.Since(start).Seconds())
		c.p.ack.acked(f.Index(), now)
		for i, pp := range batch {
			if out := res.Outcomes[i]; out.Status == pb.PartStatus_PART_STATUS_APPLIED {
				m.ingestEvents.WithLabelValues(pp.part.Boards[0].Leaderboard).Add(float64(out.Accepted))
				c.p.rate.add(now, out.Accepted)
			}
			pp.done <- partResult{out: res.Outcomes[i]}
		}
		<-c.inflight
	}()
}

func (c *combiner) drain() {
	for {
		select {
		case pp := <-c.in:
			pp.done <- partResult{err: fmt.Errorf("%w: node shutting down", ErrNotReady)}
		default:
			return
		}
	}
}

func (c *combiner) lastProposal() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
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
			if !p.g.isLeader() || (now.Sub(p.comb.lastProposal()) < every && len(wms) == 0) {
				continue
			}
			data, err := fsm.EncodeTick(&pb.Tick{LeaderTimeMs: now.UnixMilli(), Watermarks: wms})
			if err != nil {
				continue
			}
			p.g.raft.Apply(data, every)
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
