package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/topkd/topkd/fsm"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Part is one partition's share of an ingest request, with what the
// partition needs to know about the whole request: a partition that
// receives no events of an event-clock leaderboard still learns how far its
// clock has come from the parts it does receive.
type Part struct {
	*pb.ProducerPart
	// MaxEventMs is the latest event time of the whole request (ms).
	MaxEventMs int64
}

// Replica is one partition as the coordinator sees it: this node's replica
// (localReplica) or, in a cluster, a peer's.
type Replica interface {
	// Submit proposes the part and returns once it is committed and applied.
	Submit(ctx context.Context, part Part) (*pb.Outcome, error)
	// TopK reads the partition's top k of a window at consistency c.
	TopK(ctx context.Context, lb string, window time.Duration, k int, c Consistency) (fsm.TopKResult, error)
	// Count reads one item's count at consistency c.
	Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (fsm.CountResult, error)
	// Distinct is the number of items the partition holds for a leaderboard
	// incarnation, and whether it holds each of items (max_items).
	Distinct(ctx context.Context, lb string, inc uint64, items []string) (uint64, []bool, error)
}

// localReplica is this node's replica of one partition: its Raft group,
// state machine and combiner. The group and state machine are replaced
// together when the replica is reopened (reopenPartition): a dropped
// replica's data, or a raft instance stuck in a leadership transfer.
type localReplica struct {
	id   int
	cur  atomic.Pointer[incarnation]
	comb *combiner
	wm   *watermarks
	ack  ackTracker
	rate rateMeter // accepted events per second, for status and rebalancing

	snapAccepted atomic.Uint64 // AcceptedEvents at the last snapshot this node asked for
	pushing      atomic.Bool   // a config push to this partition is in flight (reconcile)
	reopening    sync.Mutex    // one reopenPartition at a time
	dropping     atomic.Bool   // its data is about to be deleted (dropReplicas): never caught up
}

var _ Replica = (*localReplica)(nil)

// incarnation is one opening of a replica: a raft instance and the state
// machine it applies to, never mixed with another opening's.
type incarnation struct {
	g   *group
	fsm *fsm.FSM
}

func (r *localReplica) group() *group  { return r.cur.Load().g }
func (r *localReplica) fsm() *fsm.FSM  { return r.cur.Load().fsm }
func (r *localReplica) isLeader() bool { return r.group().isLeader() }

// apply proposes on the current incarnation (the combiner's proposer).
func (r *localReplica) apply(data []byte, timeout time.Duration) applyFuture {
	return r.group().apply(data, timeout)
}

func (r *localReplica) Submit(ctx context.Context, part Part) (*pb.Outcome, error) {
	if part.MaxEventMs > 0 && len(part.Boards) > 0 {
		r.wm.observe(part.Boards[0].Leaderboard, part.Boards[0].Incarnation, part.MaxEventMs)
	}
	return r.comb.submit(ctx, part.ProducerPart)
}

func (r *localReplica) TopK(ctx context.Context, lb string, window time.Duration, k int, c Consistency) (fsm.TopKResult, error) {
	if err := r.readBarrier(ctx, c); err != nil {
		return fsm.TopKResult{}, err
	}
	return r.fsm().TopK(lb, window, k)
}

func (r *localReplica) Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (fsm.CountResult, error) {
	if err := r.readBarrier(ctx, c); err != nil {
		return fsm.CountResult{}, err
	}
	return r.fsm().Count(lb, item, window)
}

func (r *localReplica) Distinct(_ context.Context, lb string, inc uint64, items []string) (uint64, []bool, error) {
	var in []bool
	if len(items) > 0 {
		in = make([]bool, len(items))
		for i, it := range items {
			in[i] = r.fsm().ContainsAt(lb, inc, it)
		}
	}
	return uint64(r.fsm().DistinctAt(lb, inc)), in, nil
}

// readBarrier waits until a read at c may be served here. Every read waits
// for the log found at boot to be applied first.
func (r *localReplica) readBarrier(ctx context.Context, c Consistency) error {
	if err := r.group().waitBoot(ctx); err != nil {
		return fmt.Errorf("%w: replaying: %v", ErrNotReady, err)
	}
	switch c {
	case Linearizable:
		return r.group().readIndex(ctx)
	case Leader:
		if !r.group().isLeader() {
			return ErrNotLeader
		}
	}
	return nil
}

// tick proposes a tick if this replica leads and was idle for every, or
// when there are watermarks to spread.
func (r *localReplica) tick(now time.Time, every time.Duration, wms []*pb.Watermark) {
	if !r.group().isLeader() || (now.Sub(r.comb.lastProposal()) < every && len(wms) == 0) {
		return
	}
	data, err := fsm.EncodeTick(&pb.Tick{LeaderTimeMs: now.UnixMilli(), Watermarks: wms})
	if err != nil {
		return
	}
	r.group().raft.Apply(data, every)
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

// proposer is what a combiner needs of its Raft group.
type proposer interface {
	isLeader() bool
	apply(data []byte, timeout time.Duration) applyFuture
}

// applyFuture is raft.ApplyFuture, narrowed to what the combiner reads.
type applyFuture interface {
	Error() error
	Response() interface{}
	Index() uint64
}

// combinerDeps are a combiner's dependencies, passed in.
type combinerDeps struct {
	partition int
	policy    IngestPolicy
	clock     Clock
	metrics   *metrics
	group     proposer
	stop      <-chan struct{} // closed when the node stops
	// committed is told of every applied entry: its index, when, and the
	// events accepted in it.
	committed func(index uint64, at time.Time, accepted uint64)
}

// combiner coalesces the parts queued for one partition into Raft entries.
type combiner struct {
	combinerDeps
	in       chan *pendingPart // buffered: the bounded ingest queue
	inflight chan struct{}     // semaphore of entries in flight
	last     time.Time         // last proposal, for idle ticks
	mu       sync.Mutex
	wg       sync.WaitGroup
}

func newCombiner(d combinerDeps) *combiner {
	return &combiner{combinerDeps: d, in: make(chan *pendingPart, d.policy.QueueParts),
		inflight: make(chan struct{}, d.policy.MaxInFlight)}
}

func (c *combiner) submit(ctx context.Context, part *pb.ProducerPart) (*pb.Outcome, error) {
	if !c.group.isLeader() {
		return nil, ErrNotLeader
	}
	pp := &pendingPart{part: part, size: len(part.Boards[0].Items), done: make(chan partResult, 1)}
	select {
	case c.in <- pp:
	default:
		c.metrics.rejections.WithLabelValues("queue_full").Inc()
		return nil, fmt.Errorf("%w: partition %d ingest queue is full (%d parts)", ErrOverloaded, c.partition, cap(c.in))
	}
	select {
	case r := <-pp.done:
		return r.out, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	case <-c.stop:
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
	pol := c.policy
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *pendingPart
		select {
		case <-c.stop:
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
	pol := c.policy
	c.inflight <- struct{}{}
	leaderMs := c.clock.Now().UnixMilli()
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
				pp.done <- partResult{err: fmt.Errorf("partition %d: part cannot be encoded: %w", c.partition, perr)}
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
	c.last = c.clock.Now()
	c.mu.Unlock()
	m := c.metrics
	m.ingestEntries.Inc()
	m.ingestParts.Add(float64(len(batch)))
	size := 0
	for _, pp := range batch {
		size += pp.size
	}
	m.entryEvents.Observe(float64(size))
	start := time.Now()
	f := c.group.apply(data, pol.ApplyTimeout)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := f.Error(); err != nil {
			fail(raftErr(err))
			return
		}
		res, ok := f.Response().(*fsm.IngestResult)
		if !ok || len(res.Outcomes) != len(batch) {
			fail(fmt.Errorf("partition %d: unexpected apply response %T", c.partition, f.Response()))
			return
		}
		now := c.clock.Now()
		m.commitLatency.Observe(time.Since(start).Seconds())
		var accepted uint64
		for i, pp := range batch {
			if out := res.Outcomes[i]; out.Status == pb.PartStatus_PART_STATUS_APPLIED {
				m.ingestEvents.WithLabelValues(pp.part.Boards[0].Leaderboard).Add(float64(out.Accepted))
				accepted += out.Accepted
			}
		}
		if c.committed != nil {
			c.committed(f.Index(), now, accepted)
		}
		for i, pp := range batch {
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
