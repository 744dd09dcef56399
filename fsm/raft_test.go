package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// The FSM under a real hashicorp/raft: bolt log and stable store, file
// snapshots, TCP transports on loopback. Deadlines below only guard against
// hangs; nothing asserts how long a step takes.

const raftWait = 20 * time.Second

// raftLogWriter routes raft's hclog output to t.Log until the test ends.
type raftLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func newRaftLogWriter(t testing.TB) *raftLogWriter {
	w := &raftLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *raftLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// raftRecordingFSM records what raft hands to the FSM.
type raftRecordingFSM struct {
	*FSM
	mu       sync.Mutex
	applied  []raftApplied
	restores int
	fatal    []error
}

type raftApplied struct {
	index uint64
	typ   raft.LogType
	resp  interface{}
}

var _ raft.BatchingFSM = (*raftRecordingFSM)(nil)

func newRaftRecordingFSM() *raftRecordingFSM {
	r := &raftRecordingFSM{}
	r.FSM = New(Options{OnFatal: func(err error) {
		r.mu.Lock()
		r.fatal = append(r.fatal, err)
		r.mu.Unlock()
	}})
	return r
}

func (r *raftRecordingFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := r.FSM.ApplyBatch(logs)
	r.mu.Lock()
	for i, l := range logs {
		r.applied = append(r.applied, raftApplied{index: l.Index, typ: l.Type, resp: out[i]})
	}
	r.mu.Unlock()
	return out
}

func (r *raftRecordingFSM) Restore(rc io.ReadCloser) error {
	err := r.FSM.Restore(rc)
	r.mu.Lock()
	r.restores++
	r.mu.Unlock()
	return err
}

func (r *raftRecordingFSM) seen() ([]raftApplied, int, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied), r.restores, slices.Clone(r.fatal)
}

// raftNode is one replica: raft, its stores, its transport and its FSM.
type raftNode struct {
	id    raft.ServerID
	dir   string
	fsm   *raftRecordingFSM
	store *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
	trans *raft.NetworkTransport
	r     *raft.Raft
	done  bool
}

// startRaftNode opens (or reopens) a replica in dir, listening on bind.
func startRaftNode(t *testing.T, id raft.ServerID, dir, bind string, logw io.Writer) *raftNode {
	t.Helper()
	n := &raftNode{id: id, dir: dir, fsm: newRaftRecordingFSM()}
	var err error
	n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatalf("open bolt store: %v", err)
	}
	n.snaps, err = raft.NewFileSnapshotStore(dir, 2, logw)
	if err != nil {
		n.store.Close()
		t.Fatalf("open snapshot store: %v", err)
	}
	n.trans, err = raft.NewTCPTransport(bind, nil, 3, 2*time.Second, logw)
	if err != nil {
		n.store.Close()
		t.Fatalf("listen on %s: %v", bind, err)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.HeartbeatTimeout = 200 * time.Millisecond
	conf.ElectionTimeout = 200 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 40 // only forced snapshots
	conf.SnapshotInterval = time.Hour
	conf.TrailingLogs = 8 // compact hard, so a new replica needs InstallSnapshot
	conf.LogOutput = logw
	conf.LogLevel = "INFO"
	n.r, err = raft.NewRaft(conf, n.fsm, n.store, n.store, n.snaps, n.trans)
	if err != nil {
		n.trans.Close()
		n.store.Close()
		t.Fatalf("start raft %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("cleanup of %s: %v", id, err)
		}
	})
	return n
}

func (n *raftNode) addr() raft.ServerAddress { return n.trans.LocalAddr() }

// stop shuts raft down (which closes the transport), closes pooled and
// accepted connections, and closes the stores. It is idempotent.
func (n *raftNode) stop() error {
	if n.done {
		return nil
	}
	n.done = true
	errs := []error{}
	if err := n.r.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shutdown raft %s: %w", n.id, err))
	}
	n.trans.CloseStreams()
	if err := n.trans.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close transport %s: %w", n.id, err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close bolt store %s: %w", n.id, err))
	}
	return errors.Join(errs...)
}

func raftWaitLeader(t *testing.T, nodes ...*raftNode) *raftNode {
	t.Helper()
	deadline := time.Now().Add(raftWait)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.r.State() == raft.Leader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader among %d nodes after %v", len(nodes), raftWait)
	return nil
}

// raftApplyOnLeader applies data on whichever node leads, retrying when
// leadership moves (possible once there are two voters).
func raftApplyOnLeader(t *testing.T, data []byte, nodes ...*raftNode) raft.ApplyFuture {
	t.Helper()
	for attempt := 0; ; attempt++ {
		l := raftWaitLeader(t, nodes...)
		f := l.r.Apply(data, raftWait)
		err := f.Error()
		if err == nil {
			return f
		}
		if attempt >= 5 || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)) {
			t.Fatalf("apply on %s: %v", l.id, err)
		}
		t.Logf("apply on %s: %v; retrying", l.id, err)
	}
}

// raftModel is a tiny independent model of the "default" leaderboard for
// the traffic below: untimed deltas only, log time strictly increasing, every
// event within the hour, so "all" and "1h" agree and nothing is ever late.
type raftModel struct {
	rng      *rand.Rand
	logMs    int64
	all      map[string]int64
	deltas   []raftDelta // accepted, in log order
	seq      map[string]uint64
	sent     map[string][]*pb.ProducerPart // applied parts by producer
	outcomes map[string]map[uint64]*pb.Outcome
}

type raftDelta struct {
	t     int64
	item  string
	delta int64
}

const raftBaseMs = int64(1_700_000_000_000)

func newRaftModel() *raftModel {
	return &raftModel{rng: rand.New(rand.NewPCG(7, 11)), logMs: raftBaseMs, all: map[string]int64{},
		seq: map[string]uint64{}, sent: map[string][]*pb.ProducerPart{}, outcomes: map[string]map[uint64]*pb.Outcome{}}
}

var raftItems = func() []string {
	var s []string
	for i := range 20 {
		s = append(s, fmt.Sprintf("item-%02d", i))
	}
	return s
}()

// entry builds the i-th ingest entry and the outcomes the FSM must return.
func (m *raftModel) entry(i int) (*pb.IngestEntry, []*pb.Outcome) {
	m.logMs += 1000
	e := &pb.IngestEntry{LeaderTimeMs: m.logMs}
	var want []*pb.Outcome
	nparts := 1 + m.rng.IntN(2)
	for range nparts {
		producer := fmt.Sprintf("p%d", m.rng.IntN(3))
		if m.rng.IntN(10) == 0 {
			producer = "" // at-least-once part
		}
		var seq uint64
		if producer != "" {
			m.seq[producer]++
			seq = m.seq[producer]
		}
		var evs []ev
		seen := map[string]bool{}
		for range 1 + m.rng.IntN(5) {
			item := raftItems[m.rng.IntN(len(raftItems))]
			if seen[item] {
				continue
			}
			seen[item] = true
			evs = append(evs, ev{item, []int64{1, 2, 3, 5, 8, -1, -4}[m.rng.IntN(7)], 0})
		}
		p := part(producer, 1, seq, deltas("default", 1, evs...))
		out := &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_APPLIED, Accepted: uint64(len(evs))}
		if i%13 == 5 { // a stale incarnation: rejected, counted nowhere
			p.Boards = append(p.Boards, deltas("default", 2, ev{"stale", 100, 0}, ev{"item-00", 100, 0}))
			out.Rejected = 2
		}
		for _, x := range evs {
			m.all[x.item] += x.delta
			m.deltas = append(m.deltas, raftDelta{m.logMs, x.item, x.delta})
		}
		if producer != "" {
			m.sent[producer] = append(m.sent[producer], p)
			if m.outcomes[producer] == nil {
				m.outcomes[producer] = map[uint64]*pb.Outcome{}
			}
			m.outcomes[producer][seq] = out
		}
		e.Parts = append(e.Parts, p)
		want = append(want, out)
	}
	if i%6 == 0 {
		producer := fmt.Sprintf("p%d", m.rng.IntN(3))
		r, o := m.retry(producer, m.rng.IntN(len(m.sent[producer])+1)-1)
		if r != nil {
			e.Parts = append(e.Parts, r)
			want = append(want, o)
		}
	}
	return e, want
}

// retry re-sends the n-th applied part of producer (n < 0 counts from the
// end): a duplicate that must get the original outcome back.
func (m *raftModel) retry(producer string, n int) (*pb.ProducerPart, *pb.Outcome) {
	s := m.sent[producer]
	if n < 0 {
		n += len(s)
	}
	if n < 0 || n >= len(s) {
		return nil, nil
	}
	orig := s[n]
	o := m.outcomes[producer][orig.Sequence]
	return proto.Clone(orig).(*pb.ProducerPart), &pb.Outcome{Sequence: orig.Sequence,
		Status: pb.PartStatus_PART_STATUS_DUPLICATE, Accepted: o.Accepted, Rejected: o.Rejected}
}

// topK is the model's answer: positive counts, count desc then item asc.
func raftModelTop(counts map[string]int64, k int) []Item {
	var items []Item
	for it, c := range counts {
		if c > 0 {
			items = append(items, ex(it, c))
		}
	}
	slices.SortFunc(items, func(a, b Item) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Item, b.Item)
	})
	if len(items) > k {
		items = items[:k]
	}
	return items
}

// window returns the model's counts for a sliding window with 1s buckets
// of n buckets, as of the clock reading logMs.
func (m *raftModel) window(n int64) map[string]int64 {
	start := floorDiv(m.logMs, 1000) - n + 1
	out := map[string]int64{}
	for _, d := range m.deltas {
		if floorDiv(d.t, 1000) >= start {
			out[d.item] += d.delta
		}
	}
	return out
}

// checkRaftModel compares an FSM's answers with the model.
func checkRaftModel(t *testing.T, name string, f *FSM, m *raftModel) {
	t.Helper()
	for _, tc := range []struct {
		window time.Duration
		counts map[string]int64
	}{
		{0, m.all},
		{time.Hour, m.all},
		{time.Minute, m.window(60)},
	} {
		for _, k := range []int{1, 5, 10, 1000} {
			got, err := f.TopK("default", tc.window, k)
			if err != nil {
				t.Fatalf("%s: TopK(default, %v, %d): %v", name, tc.window, k, err)
			}
			if want := raftModelTop(tc.counts, k); !slices.Equal(got.Items, want) {
				t.Errorf("%s: TopK(default, %v, %d) = %v, want %v", name, tc.window, k, got.Items, want)
			}
			if got.WindowEndMs != m.logMs {
				t.Errorf("%s: TopK(default, %v).WindowEndMs = %d, want %d", name, tc.window, got.WindowEndMs, m.logMs)
			}
		}
		for _, item := range append(slices.Clone(raftItems), "stale", "never-seen") {
			got, err := f.Count("default", item, tc.window)
			if err != nil {
				t.Fatalf("%s: Count(default, %q, %v): %v", name, item, tc.window, err)
			}
			if want := tc.counts[item]; got.Count != want {
				t.Errorf("%s: Count(default, %q, %v) = %d, want %d", name, item, tc.window, got.Count, want)
			}
		}
	}
}

// raftApplyIngests proposes entries first..last-1 as concurrent futures and
// checks each response. It returns the index of the last entry.
func raftApplyIngests(t *testing.T, n *raftNode, m *raftModel, first, last int) uint64 {
	t.Helper()
	type pending struct {
		f    raft.ApplyFuture
		want []*pb.Outcome
	}
	var ps []pending
	for i := first; i < last; i++ {
		e, want := m.entry(i)
		ps = append(ps, pending{n.r.Apply(mustEncode(EncodeIngest(e)), raftWait), want})
	}
	var idx uint64
	for i, p := range ps {
		if err := p.f.Error(); err != nil {
			t.Fatalf("apply ingest %d: %v", first+i, err)
		}
		raftCheckIngest(t, fmt.Sprintf("ingest %d", first+i), p.f.Response(), p.want)
		idx = p.f.Index()
	}
	return idx
}

func raftCheckIngest(t *testing.T, name string, resp interface{}, want []*pb.Outcome) {
	t.Helper()
	res, ok := resp.(*IngestResult)
	if !ok {
		t.Fatalf("%s: response is %T (%v), want *IngestResult", name, resp, resp)
	}
	if len(res.Outcomes) != len(want) {
		t.Fatalf("%s: %d outcomes, want %d", name, len(res.Outcomes), len(want))
	}
	for j, got := range res.Outcomes {
		if !proto.Equal(got, want[j]) {
			t.Errorf("%s part %d: outcome %v, want %v", name, j, got, want[j])
		}
	}
}

func raftCheckNoFatal(t *testing.T, n *raftNode) {
	t.Helper()
	if _, _, fatal := n.fsm.seen(); len(fatal) > 0 {
		t.Errorf("%s: FSM reported fatal errors: %v", n.id, fatal)
	}
}

func TestRaftRestartAndJoin(t *testing.T) {
	logw := newRaftLogWriter(t) // its cleanup runs last
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	dir1 := t.TempDir()
	n1 := startRaftNode(t, "n1", dir1, "127.0.0.1:0", logw)
	bind1 := string(n1.addr())
	boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n1.id, Address: n1.addr()}}}
	if err := n1.r.BootstrapCluster(boot).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	raftWaitLeader(t, n1)

	m := newRaftModel()
	cf := n1.r.Apply(mustEncode(EncodeConfig(DefaultLeaderboard(1))), raftWait)
	if err := cf.Error(); err != nil {
		t.Fatalf("apply config: %v", err)
	}
	if resp := cf.Response(); resp != nil {
		t.Fatalf("config response = %v, want nil", resp)
	}

	// The bootstrap configuration entry reached ApplyBatch and was skipped.
	applied, _, _ := n1.fsm.seen()
	if len(applied) == 0 || applied[0].index != 1 || applied[0].typ != raft.LogConfiguration || applied[0].resp != nil {
		t.Fatalf("first entries through ApplyBatch: %+v, want index 1 LogConfiguration with a nil response", applied)
	}
	if got := n1.fsm.Stats(); got.IgnoredCommands != 0 || got.ConfigRejected != 0 {
		t.Fatalf("after bootstrap + config: IgnoredCommands %d, ConfigRejected %d, want 0, 0", got.IgnoredCommands, got.ConfigRejected)
	}
	if got, want := len(n1.fsm.Leaderboards()), 1; got != want {
		t.Fatalf("leaderboards after config: %d, want %d", got, want)
	}

	// Phase 1, a forced snapshot, phase 2.
	raftApplyIngests(t, n1, m, 0, 60)
	sf := n1.r.Snapshot()
	if err := sf.Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	meta, rc, err := sf.Open()
	if err != nil {
		t.Fatalf("open snapshot: %v", err)
	}
	rc.Close()
	snapIndex := meta.Index
	lastIndex := raftApplyIngests(t, n1, m, 60, 100)
	if snapIndex <= 2 || snapIndex >= lastIndex {
		t.Fatalf("snapshot index %d, want inside (2, %d)", snapIndex, lastIndex)
	}
	if err := n1.r.Barrier(raftWait).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	checkRaftModel(t, "n1 before restart", n1.fsm.FSM, m)
	before := snapshotBytes(t, n1.fsm.FSM)
	raftCheckNoFatal(t, n1)
	if err := n1.stop(); err != nil {
		t.Fatalf("stop n1: %v", err)
	}

	// Reopen from the same dirs (and address) with a new FSM: restore the
	// snapshot, then replay exactly the entries after it.
	n1 = startRaftNode(t, "n1", dir1, bind1, logw)
	raftWaitLeader(t, n1)
	if err := n1.r.Barrier(raftWait).Error(); err != nil {
		t.Fatalf("barrier after restart: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), raftWait)
	defer cancel()
	if err := n1.fsm.WaitApplied(ctx, lastIndex); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got := n1.fsm.AppliedIndex(); got != lastIndex {
		t.Fatalf("after restart: AppliedIndex %d, want %d", got, lastIndex)
	}
	applied, restores, _ := n1.fsm.seen()
	if restores != 1 {
		t.Errorf("after restart: %d restores, want 1", restores)
	}
	var replayed []uint64
	for _, a := range applied {
		replayed = append(replayed, a.index)
	}
	var wantReplay []uint64
	for i := snapIndex + 1; i <= lastIndex; i++ {
		wantReplay = append(wantReplay, i)
	}
	if !slices.Equal(replayed, wantReplay) {
		t.Errorf("after restart: replayed indexes %v, want %v", replayed, wantReplay)
	}
	checkRaftModel(t, "n1 after restart", n1.fsm.FSM, m)
	if after := snapshotBytes(t, n1.fsm.FSM); string(after) != string(before) {
		t.Errorf("after restart: snapshot of %d bytes differs from the %d bytes before", len(after), len(before))
	}

	// The dedupe table survived: retries of parts from before the snapshot
	// and from the replayed tail are duplicates with their original outcomes.
	for _, n := range []int{0, -1} {
		r, want := m.retry("p0", n)
		if r == nil {
			t.Fatal("model has no part of p0 to retry")
		}
		m.logMs += 1000
		f := n1.r.Apply(mustEncode(EncodeIngest(&pb.IngestEntry{LeaderTimeMs: m.logMs, Parts: []*pb.ProducerPart{r}})), raftWait)
		if err := f.Error(); err != nil {
			t.Fatalf("apply retry: %v", err)
		}
		raftCheckIngest(t, fmt.Sprintf("retry of %s/%d after restart", r.ProducerId, r.Sequence), f.Response(), []*pb.Outcome{want})
	}
	raftApplyIngests(t, n1, m, 100, 120)
	checkRaftModel(t, "n1 after restart and more traffic", n1.fsm.FSM, m)

	// A second replica joins as a non-voter, catches up (through
	// InstallSnapshot: the log before the snapshot is compacted), then votes.
	n2 := startRaftNode(t, "n2", t.TempDir(), "127.0.0.1:0", logw)
	if err := n1.r.AddNonvoter(n2.id, n2.addr(), 0, raftWait).Error(); err != nil {
		t.Fatalf("add non-voter: %v", err)
	}
	if err := n1.r.Barrier(raftWait).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	leaderIdx := n1.fsm.AppliedIndex()
	if err := n2.fsm.WaitApplied(ctx, leaderIdx); err != nil {
		t.Fatalf("non-voter catching up: %v", err)
	}
	if _, restores, _ := n2.fsm.seen(); restores < 1 {
		t.Errorf("n2 restores = %d, want at least 1 (InstallSnapshot)", restores)
	}
	if err := n1.r.AddVoter(n2.id, n2.addr(), 0, raftWait).Error(); err != nil {
		t.Fatalf("promote n2: %v", err)
	}
	cfut := raftWaitLeader(t, n1, n2).r.GetConfiguration()
	if err := cfut.Error(); err != nil {
		t.Fatalf("get configuration: %v", err)
	}
	voters := 0
	for _, s := range cfut.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters != 2 {
		t.Fatalf("configuration %+v: %d voters, want 2", cfut.Configuration(), voters)
	}

	// A checksum at one log index gives the same digest on both replicas.
	m.logMs += 1000
	csf := raftApplyOnLeader(t, mustEncode(EncodeChecksum(&pb.Checksum{Id: 42, LeaderTimeMs: m.logMs})), n1, n2)
	rec, ok := csf.Response().(ChecksumRecord)
	if !ok || rec.ID != 42 || rec.Index != csf.Index() {
		t.Fatalf("checksum response %T %+v, want ChecksumRecord{ID: 42, Index: %d}", csf.Response(), csf.Response(), csf.Index())
	}
	for _, n := range []*raftNode{n1, n2} {
		if err := n.fsm.WaitApplied(ctx, csf.Index()); err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
		if got := n.fsm.AppliedIndex(); got != csf.Index() {
			t.Fatalf("%s: AppliedIndex %d, want %d", n.id, got, csf.Index())
		}
	}
	c1, c2 := n1.fsm.Checksums(), n2.fsm.Checksums()
	if len(c1) == 0 || len(c2) == 0 || c1[len(c1)-1] != rec || c2[len(c2)-1] != rec {
		t.Errorf("checksums: n1 %+v, n2 %+v, want both to end with %+v", c1, c2, rec)
	}
	checkRaftModel(t, "n1 with two voters", n1.fsm.FSM, m)
	checkRaftModel(t, "n2 with two voters", n2.fsm.FSM, m)
	for _, w := range []time.Duration{0, time.Minute, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour} {
		a, err1 := n1.fsm.TopK("default", w, DefaultKMax)
		b, err2 := n2.fsm.TopK("default", w, DefaultKMax)
		if err1 != nil || err2 != nil {
			t.Fatalf("TopK(%v): n1 %v, n2 %v", w, err1, err2)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("TopK(%v): n1 %+v, n2 %+v", w, a, b)
		}
	}
	if a, b := snapshotBytes(t, n1.fsm.FSM), snapshotBytes(t, n2.fsm.FSM); string(a) != string(b) {
		t.Errorf("snapshots differ: n1 %d bytes, n2 %d bytes", len(a), len(b))
	}
	raftCheckNoFatal(t, n1)
	raftCheckNoFatal(t, n2)

	for _, n := range []*raftNode{n2, n1} {
		if err := n.stop(); err != nil {
			t.Errorf("stop %s: %v", n.id, err)
		}
	}
}
