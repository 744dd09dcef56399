package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

var (
	ErrUnknownLeaderboard = errors.New("unknown leaderboard")
	ErrUnknownWindow      = errors.New("unknown window")
	ErrInvalidK           = errors.New("invalid k")
)

// Options configure an FSM. Every replica of a partition must use the same.
type Options struct {
	// DedupeTTL drops a producer's deduplication row after this much idle log time.
	DedupeTTL time.Duration
	// OnFatal is called when a command cannot be applied safely (corrupt or
	// unknown). It must not return normally in production; the default panics.
	OnFatal func(error)
	// ChecksumHistory is how many checksum digests are kept for Checksums().
	ChecksumHistory int
	// tune: defaultTuning when nil (tests set it).
	tune *tuning
}

// DefaultDedupeTTL is how long an idle producer's dedupe row is kept.
const DefaultDedupeTTL = 24 * time.Hour

// FSM is one partition's counting state machine.
type FSM struct {
	opts Options

	mu sync.RWMutex // guards st; apply holds it per batch
	st *state

	applied atomic.Uint64
	waitMu  sync.Mutex
	waitCh  chan struct{} // closed and replaced after each batch
}

// state is everything a snapshot captures, plus what is rebuilt from it.
type state struct {
	appliedIndex uint64
	logMs        int64
	boards       map[string]*leaderboard
	names        []string // sorted keys of boards: iteration order never comes from the map
	tombstones   map[string]uint64
	dedupe       *dedupeTable
	tune         *tuning // the FSM's; shared by its leaderboards
	counters     pb.SnapshotCounters
	checksums    []ChecksumRecord
}

// ChecksumRecord is a digest of the canonical state at a checksum command.
type ChecksumRecord struct {
	ID     uint64
	Index  uint64
	Digest uint64
}

// IngestResult is the Apply response of an ingest entry: one outcome per part.
type IngestResult struct {
	Outcomes []*pb.Outcome
}

// New returns an empty FSM.
func New(opts Options) *FSM {
	if opts.DedupeTTL <= 0 {
		opts.DedupeTTL = DefaultDedupeTTL
	}
	if opts.OnFatal == nil {
		opts.OnFatal = func(err error) { panic(fmt.Sprintf("topkd fsm: %v", err)) }
	}
	if opts.ChecksumHistory <= 0 {
		opts.ChecksumHistory = 16
	}
	if opts.tune == nil {
		t := defaultTuning
		opts.tune = &t
	}
	f := &FSM{opts: opts, waitCh: make(chan struct{})}
	f.st = f.newState()
	return f
}

func (f *FSM) newState() *state {
	return &state{
		boards:     make(map[string]*leaderboard),
		tombstones: make(map[string]uint64),
		dedupe:     newDedupeTable(f.opts.DedupeTTL.Milliseconds(), f.opts.tune.maxProducers),
		tune:       f.opts.tune,
	}
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM. Configuration and other non-command
// entries only advance the applied index.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	// Decoding needs no state: done before the lock, readers wait less.
	type decoded struct {
		c   Command
		err error
	}
	cmds := make([]decoded, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			cmds[i].c, cmds[i].err = decodeCommand(l.Data, f.opts.tune.protoIngest)
		}
	}
	f.mu.Lock()
	st := f.st
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = f.applyDecoded(st, l, cmds[i].c, cmds[i].err)
		}
		if l.Index > st.appliedIndex {
			st.appliedIndex = l.Index
		}
	}
	for _, name := range st.sortedBoards() {
		st.boards[name].counts.settle()
	}
	if checked {
		checkBatch(st)
	}
	idx := st.appliedIndex
	f.mu.Unlock()
	f.publish(idx)
	return out
}

func (f *FSM) publish(idx uint64) {
	f.applied.Store(idx)
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// applyDecoded applies the command decoded from l (or fails on its decoding error).
func (f *FSM) applyDecoded(st *state, l *raft.Log, c Command, err error) interface{} {
	if err != nil {
		err = fmt.Errorf("apply index %d: %w", l.Index, err)
		f.opts.OnFatal(err)
		return err
	}
	switch {
	case c.Ignored:
		st.counters.IgnoredCommands++
		return nil
	case c.Ingest != nil:
		return st.applyIngest(c.Ingest)
	case c.Tick != nil:
		st.applyTick(c.Tick)
		return nil
	case c.Config != nil:
		st.setLogTime(0)
		if err := st.applyConfig(c.Config); err != nil {
			st.counters.ConfigRejected++
			return err
		}
		return nil
	case c.Drop != nil:
		st.applyDrop(c.Drop)
		return nil
	case c.Checksum != nil:
		st.setLogTime(c.Checksum.LeaderTimeMs)
		st.advanceAll() // wall clocks follow log time, as for ticks
		d, err := st.digest(l.Index)
		if err != nil {
			f.opts.OnFatal(err)
			return err
		}
		rec := ChecksumRecord{ID: c.Checksum.Id, Index: l.Index, Digest: d}
		st.checksums = append(st.checksums, rec)
		if n := len(st.checksums) - f.opts.ChecksumHistory; n > 0 {
			st.checksums = slices.Delete(st.checksums, 0, n)
		}
		return rec
	}
	return nil
}

// setLogTime clamps log time monotonic, advances wall-clock windows and
// sweeps the dedupe table once per log-time minute.
func (st *state) setLogTime(ms int64) {
	prev := st.logMs
	if ms > st.logMs {
		st.logMs = ms
	}
	if st.logMs/60_000 != prev/60_000 {
		st.dedupe.expire(st.logMs)
	}
}

func (st *state) advanceAll() {
	for _, name := range st.sortedBoards() {
		st.boards[name].advance(st.logMs)
	}
}

// sortedBoards returns the leaderboard names in order; callers must not modify it.
func (st *state) sortedBoards() []string { return st.names }

// setBoard adds or replaces a leaderboard, keeping names sorted.
func (st *state) setBoard(name string, lb *leaderboard) {
	if _, ok := st.boards[name]; !ok {
		i, _ := slices.BinarySearch(st.names, name)
		st.names = slices.Insert(st.names, i, name)
	}
	st.boards[name] = lb
}

func (st *state) dropBoard(name string) {
	delete(st.boards, name)
	if i, ok := slices.BinarySearch(st.names, name); ok {
		st.names = slices.Delete(st.names, i, i+1)
	}
}

func (st *state) applyIngest(e *pb.IngestEntry) *IngestResult {
	st.setLogTime(e.LeaderTimeMs)
	res := &IngestResult{Outcomes: make([]*pb.Outcome, len(e.Parts))}
	for i, part := range e.Parts {
		p, dup := st.dedupe.check(part, st.logMs)
		if dup != nil {
			switch dup.Status {
			case pb.PartStatus_PART_STATUS_DUPLICATE:
				st.counters.Duplicates++
			case pb.PartStatus_PART_STATUS_SEQUENCE_TOO_OLD:
				st.counters.TooOld++
			case pb.PartStatus_PART_STATUS_STALE_EPOCH:
				st.counters.StaleEpoch++
			}
			res.Outcomes[i] = dup
			continue
		}
		out := &pb.Outcome{Sequence: part.Sequence, Status: pb.PartStatus_PART_STATUS_APPLIED}
		for _, d := range part.Boards {
			lb := st.boards[d.Leaderboard]
			if lb == nil || lb.cfg.Incarnation != d.Incarnation {
				n := eventsIn(d)
				st.counters.RejectedStale += n
				out.Rejected += n
				continue
			}
			lb.applyDeltas(d, st.logMs, out)
		}
		if p != nil {
			p.record(part.Sequence, out)
		}
		res.Outcomes[i] = out
	}
	st.advanceAll()
	return res
}

func eventsIn(d *pb.LeaderboardDeltas) uint64 {
	var n uint64
	for i := range d.Items {
		n += eventsAt(d, i)
	}
	return n
}

func (st *state) applyTick(t *pb.Tick) {
	st.setLogTime(t.LeaderTimeMs)
	for _, w := range t.Watermarks {
		if lb := st.boards[w.Leaderboard]; lb != nil && lb.cfg.Incarnation == w.Incarnation && w.MaxEventTimeMs > lb.maxEventMs {
			lb.maxEventMs = w.MaxEventTimeMs
		}
	}
	st.advanceAll()
}

func (st *state) applyConfig(c *pb.LeaderboardConfig) error {
	if err := NormalizeConfig(c); err != nil {
		return err
	}
	if inc, ok := st.tombstones[c.Name]; ok && c.Incarnation <= inc {
		return fmt.Errorf("leaderboard %q: incarnation %d was dropped", c.Name, c.Incarnation)
	}
	lb := st.boards[c.Name]
	switch {
	case lb == nil || c.Incarnation > lb.cfg.Incarnation:
		lb = newLeaderboard(c, st.tune)
		lb.advance(st.logMs)
		st.setBoard(c.Name, lb)
		return nil
	case c.Incarnation < lb.cfg.Incarnation:
		return fmt.Errorf("leaderboard %q: incarnation %d is older than %d", c.Name, c.Incarnation, lb.cfg.Incarnation)
	case c.Version <= lb.cfg.Version:
		return nil // replayed or stale update: already applied
	default:
		if err := lb.update(c); err != nil {
			return err
		}
		lb.advance(st.logMs)
		return nil
	}
}

func (st *state) applyDrop(d *pb.DropLeaderboard) {
	if lb := st.boards[d.Name]; lb != nil && d.Incarnation >= lb.cfg.Incarnation {
		st.dropBoard(d.Name)
	}
	if d.Incarnation > st.tombstones[d.Name] {
		st.tombstones[d.Name] = d.Incarnation
	}
}

// ---- reads ----

// Item is one ranked item. In exact mode Lower == Count == Upper; in the
// approximate modes Count is the estimate (== Upper) and Lower..Upper
// holds the true count, deterministically.
type Item struct {
	Item  string
	Count int64
	Lower int64
	Upper int64
}

// TopKResult answers TopK. Windows are bucket-aligned: the window holds the
// buckets from WindowStartMs on, as of the clock reading WindowEndMs.
type TopKResult struct {
	Leaderboard   string
	Incarnation   uint64
	Window        time.Duration // 0: all
	WindowStartMs int64         // 0 for "all"
	WindowEndMs   int64         // log time or watermark
	Items         []Item
	AppliedIndex  uint64
	// Approximate answers carry Rest: an upper bound on the count of any
	// item not in Items (0: no other item can count).
	Approximate bool
	Rest        int64
}

// CountResult answers Count.
type CountResult struct {
	Incarnation   uint64
	Count         int64
	Lower         int64
	Upper         int64
	Approximate   bool
	WindowStartMs int64
	WindowEndMs   int64
	AppliedIndex  uint64
}

func (f *FSM) lookup(leaderboard string, window time.Duration) (*leaderboard, int, error) {
	lb := f.st.boards[leaderboard]
	if lb == nil {
		return nil, 0, fmt.Errorf("%w %q", ErrUnknownLeaderboard, leaderboard)
	}
	wi, ok := lb.windowIndex(window)
	if !ok {
		return nil, 0, fmt.Errorf("%w %v for leaderboard %q", ErrUnknownWindow, window, leaderboard)
	}
	return lb, wi, nil
}

// TopK returns the k highest-count items of a window (count desc, then item
// asc), only items with a positive count. k must be in [1, K_max].
func (f *FSM) TopK(leaderboard string, window time.Duration, k int) (TopKResult, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	lb, wi, err := f.lookup(leaderboard, window)
	if err != nil {
		return TopKResult{}, err
	}
	if k <= 0 || k > int(lb.cfg.KMax) {
		return TopKResult{}, fmt.Errorf("%w: k=%d, leaderboard %q answers 1..%d", ErrInvalidK, k, leaderboard, lb.cfg.KMax)
	}
	res := TopKResult{Leaderboard: leaderboard, Incarnation: lb.cfg.Incarnation, Window: window,
		AppliedIndex: f.st.appliedIndex, Approximate: lb.approximate()}
	res.Items, res.Rest = lb.counts.top(wi, k)
	res.WindowStartMs, res.WindowEndMs = lb.bounds(wi)
	return res, nil
}

// Count returns one item's count in a window (0 when absent).
func (f *FSM) Count(leaderboard, item string, window time.Duration) (CountResult, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	lb, wi, err := f.lookup(leaderboard, window)
	if err != nil {
		return CountResult{}, err
	}
	res := CountResult{AppliedIndex: f.st.appliedIndex, Incarnation: lb.cfg.Incarnation}
	res.WindowStartMs, res.WindowEndMs = lb.bounds(wi)
	it := lb.counts.count(wi, item)
	res.Count, res.Lower, res.Upper, res.Approximate = it.Count, it.Lower, it.Upper, lb.approximate()
	return res, nil
}

// Leaderboards returns copies of the configs, sorted by name.
func (f *FSM) Leaderboards() []*pb.LeaderboardConfig {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pb.LeaderboardConfig
	for _, n := range f.st.sortedBoards() {
		out = append(out, cloneConfig(f.st.boards[n].cfg))
	}
	return out
}

// AppliedIndex is the last log index the FSM applied (not raft's AppliedIndex).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied blocks until the FSM has applied index idx or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for applied index %d (at %d): %w", idx, f.applied.Load(), ctx.Err())
		}
	}
}

// Checksums returns the most recent checksum digests, oldest first.
func (f *FSM) Checksums() []ChecksumRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.checksums)
}

// Snapshot implements raft.FSM. It runs on the apply goroutine and only
// freezes copy-on-write arrays; Persist does the streaming.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.capture(), nil
}

// Restore implements raft.FSM: it builds fresh state from the stream and
// swaps it in only if the whole stream checks out.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := f.readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.st = st
	idx := st.appliedIndex
	f.mu.Unlock()
	f.publish(idx)
	return nil
}

// DistinctAt is the number of live items of a leaderboard's incarnation (0:
// any; 0 items when unknown): a partition still holding an older
// incarnation holds none of the newer one's items.
func (f *FSM) DistinctAt(leaderboard string, incarnation uint64) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if lb := f.st.boards[leaderboard]; lb != nil && (incarnation == 0 || lb.cfg.Incarnation == incarnation) {
		return lb.counts.distinct()
	}
	return 0
}

// ContainsAt reports whether a leaderboard's incarnation (0: any) holds the item.
func (f *FSM) ContainsAt(leaderboard string, incarnation uint64, item string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if lb := f.st.boards[leaderboard]; lb != nil && (incarnation == 0 || lb.cfg.Incarnation == incarnation) {
		return lb.counts.contains(item)
	}
	return false
}

// AcceptedEvents is the number of events accepted over all leaderboards,
// a cheap measure of apply work (the server snapshots by it).
func (f *FSM) AcceptedEvents() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var n uint64
	for _, lb := range f.st.boards {
		n += lb.accepted
	}
	return n
}
