package server

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/server/raftlog"
)

// metrics are the node's Prometheus metrics (names topkd_*). Hot-path
// counters are updated inline; Raft and FSM state is read at scrape time
// (raft's own go-metrics are process-wide, so each group's Stats() is used).
type metrics struct {
	reg           *prometheus.Registry
	ingestEvents  *prometheus.CounterVec
	ingestEntries prometheus.Counter
	ingestParts   prometheus.Counter
	ingestReqs    prometheus.Counter
	forwarded     prometheus.Counter
	rejections    *prometheus.CounterVec
	commitLatency prometheus.Histogram
	entryEvents   prometheus.Histogram
	snapshotDur   *prometheus.HistogramVec
	freshness     prometheus.Histogram
	queryLatency  *prometheus.HistogramVec
	logCommits    prometheus.Counter
	logGroups     prometheus.Histogram
	logEntries    prometheus.Histogram
	logLatency    prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.ingestEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "topkd_ingest_events_total",
		Help: "Events accepted into Raft proposals by this node, by leaderboard."}, []string{"leaderboard"})
	m.ingestEntries = prometheus.NewCounter(prometheus.CounterOpts{Name: "topkd_ingest_entries_total",
		Help: "Ingest entries proposed to partition groups led by this node."})
	m.ingestParts = prometheus.NewCounter(prometheus.CounterOpts{Name: "topkd_ingest_parts_total",
		Help: "Producer parts coalesced into ingest entries."})
	m.ingestReqs = prometheus.NewCounter(prometheus.CounterOpts{Name: "topkd_ingest_requests_total",
		Help: "Ingest requests received from clients (REST and Connect); events per request is the clients' batch size on the wire."})
	m.forwarded = prometheus.NewCounter(prometheus.CounterOpts{Name: "topkd_ingest_forwarded_parts_total",
		Help: "Parts of ingest requests this node sent on to another node's replica (the partition's leader is elsewhere)."})
	m.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "topkd_ingest_rejections_total",
		Help: "Ingest requests refused before proposal, by reason."}, []string{"reason"})
	m.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_ingest_commit_seconds",
		Help: "Time from proposing an ingest entry to its commit and apply.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)})
	m.entryEvents = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_ingest_entry_deltas",
		Help: "Deltas per ingest entry (combiner effectiveness).", Buckets: prometheus.ExponentialBuckets(1, 4, 10)})
	m.snapshotDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "topkd_snapshot_seconds",
		Help:    "Raft snapshot durations, by phase (capture on the apply goroutine, persist, restore: at start or installed from the leader).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, []string{"phase"})
	m.freshness = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_cache_freshness_seconds",
		Help:    "Time from acknowledging an ingest entry to its visibility in the cached answer.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)})
	m.queryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "topkd_query_seconds",
		Help: "Top-K query latency inside the node, by consistency.", Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12)},
		[]string{"consistency"})
	m.logCommits = prometheus.NewCounter(prometheus.CounterOpts{Name: "topkd_raftlog_commits_total",
		Help: "Commits of the node's shared Raft log (one transaction and one pair of fdatasync calls each)."})
	m.logGroups = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_raftlog_commit_groups",
		Help: "Raft groups written by one commit of the shared Raft log.", Buckets: prometheus.ExponentialBuckets(1, 2, 8)})
	m.logEntries = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_raftlog_commit_entries",
		Help: "Raft entries stored by one commit of the shared Raft log.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)})
	m.logLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "topkd_raftlog_commit_seconds",
		Help: "Duration of one commit of the shared Raft log, fdatasync included.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.reg.MustRegister(m.logCommits, m.logGroups, m.logEntries, m.logLatency)
	m.reg.MustRegister(m.ingestEvents, m.ingestEntries, m.ingestParts, m.ingestReqs, m.forwarded, m.rejections, m.commitLatency, m.entryEvents,
		m.snapshotDur, m.freshness, m.queryLatency, &stateCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveCommit records one commit of the shared Raft log (raftlog.Observer).
func (m *metrics) ObserveCommit(st raftlog.CommitStats) {
	m.logCommits.Inc()
	m.logGroups.Observe(float64(st.Groups))
	m.logEntries.Observe(float64(st.Entries))
	m.logLatency.Observe(st.Duration.Seconds())
}

// Registry is the node's metrics registry, for /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.metrics.reg }

var (
	descRaftState = prometheus.NewDesc("topkd_raft_state", "Raft state of this replica (1 for the current state).",
		[]string{"group", "state"}, nil)
	descRaftIndex = prometheus.NewDesc("topkd_raft_index", "Raft indexes of this replica.", []string{"group", "kind"}, nil)
	descQueue     = prometheus.NewDesc("topkd_ingest_queue_parts", "Parts waiting in a partition's combiner queue.", []string{"partition"}, nil)
	descInflight  = prometheus.NewDesc("topkd_ingest_inflight_entries", "Ingest entries proposed and not yet applied.", []string{"partition"}, nil)
	descLate      = prometheus.NewDesc("topkd_late_dropped_events", "Events too late for a window, by leaderboard and window.", []string{"leaderboard", "window"}, nil)
	descDup       = prometheus.NewDesc("topkd_duplicate_parts", "Producer parts recognized as duplicates.", []string{"partition"}, nil)
	descRejected  = prometheus.NewDesc("topkd_rejected_events", "Events rejected in the state machine (stale incarnation or max_items).", []string{"leaderboard", "reason"}, nil)
	descBytes     = prometheus.NewDesc("topkd_state_bytes", "Estimated counting-state memory, by partition.", []string{"partition"}, nil)
	descCacheAge  = prometheus.NewDesc("topkd_cache_age_seconds", "Age of the oldest cached top-K answer.", nil, nil)
	descHeap      = prometheus.NewDesc("topkd_heap_bytes", "Live heap plus the FSMs' off-heap arrays, as sampled by the memory guard.", nil, nil)
	descLogFile   = prometheus.NewDesc("topkd_raftlog_file_bytes", "The shared Raft log's file: its size, and the bytes of its free pages (reused before it grows).", []string{"kind"}, nil)
)

type stateCollector struct{ n *Node }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftIndex, descQueue, descInflight, descLate, descDup, descRejected, descBytes, descCacheAge, descHeap, descLogFile} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	groups := append([]*group{n.meta}, func() []*group {
		var gs []*group
		for _, p := range n.parts {
			gs = append(gs, p.group())
		}
		return gs
	}()...)
	for _, g := range groups {
		st := g.raft.State()
		for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
			v := 0.0
			if s == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, g.name, s.String())
		}
		stats := g.raft.Stats()
		for _, k := range []string{"commit_index", "applied_index", "last_log_index", "last_snapshot_index", "term"} {
			v, _ := strconv.ParseFloat(stats[k], 64)
			ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, v, g.name, k)
		}
		ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(g.fsm.AppliedIndex()), g.name, "fsm_applied_index")
	}
	late := map[[2]string]uint64{}
	rejected := map[[2]string]uint64{}
	for _, p := range n.parts {
		id := strconv.Itoa(p.id)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(p.comb.in)), id)
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(len(p.comb.inflight)), id)
		s := p.fsm().Stats()
		ch <- prometheus.MustNewConstMetric(descDup, prometheus.CounterValue, float64(s.Duplicates), id)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes), id)
		rejected[[2]string{"", "stale_incarnation"}] += s.RejectedStale
		for _, l := range s.Leaderboards {
			rejected[[2]string{l.Name, "max_items"}] += l.RejectedMaxItems
			for _, w := range l.Windows[1:] {
				late[[2]string{l.Name, fsm.FormatWindow(w.Window)}] += w.LateDropped
			}
		}
	}
	for k, v := range late {
		ch <- prometheus.MustNewConstMetric(descLate, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	for k, v := range rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(descCacheAge, prometheus.GaugeValue, n.coord.cache.age().Seconds())
	ch <- prometheus.MustNewConstMetric(descHeap, prometheus.GaugeValue, float64(n.mem.HeapBytes()))
	if n.logs.shared != nil {
		if fs, err := n.logs.shared.FileStats(); err == nil {
			ch <- prometheus.MustNewConstMetric(descLogFile, prometheus.GaugeValue, float64(fs.Size), "size")
			ch <- prometheus.MustNewConstMetric(descLogFile, prometheus.GaugeValue, float64(fs.FreePages*fs.PageSize), "free")
		}
	}
}

// ackTracker remembers a partition's last acknowledged entry so the cache
// refresh can measure freshness.
type ackTracker struct {
	mu    sync.Mutex
	index uint64
	at    time.Time
	seen  bool
}

func (a *ackTracker) acked(index uint64, at time.Time) {
	a.mu.Lock()
	a.index, a.at, a.seen = index, at, false
	a.mu.Unlock()
}

// visible returns how long ago the last ack happened if appliedIndex covers it
// and it was not reported before.
func (a *ackTracker) visible(applied uint64, now time.Time) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen || a.index == 0 || applied < a.index {
		return 0, false
	}
	a.seen = true
	return now.Sub(a.at), true
}

// timedFSM times a partition FSM's snapshots.
type timedFSM struct {
	readFSM
	m *metrics
}

// ApplyBatch keeps the wrapped FSM batching (raft checks for raft.BatchingFSM).
func (t *timedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	return t.readFSM.(raft.BatchingFSM).ApplyBatch(logs)
}

func (t *timedFSM) Snapshot() (raft.FSMSnapshot, error) {
	start := time.Now()
	s, err := t.readFSM.Snapshot()
	t.m.snapshotDur.WithLabelValues("capture").Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	return &timedSnapshot{FSMSnapshot: s, m: t.m}, nil
}

func (t *timedFSM) Restore(rc io.ReadCloser) error {
	start := time.Now()
	err := t.readFSM.Restore(rc)
	t.m.snapshotDur.WithLabelValues("restore").Observe(time.Since(start).Seconds())
	return err
}

type timedSnapshot struct {
	raft.FSMSnapshot
	m *metrics
}

func (s *timedSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	err := s.FSMSnapshot.Persist(sink)
	s.m.snapshotDur.WithLabelValues("persist").Observe(time.Since(start).Seconds())
	return err
}

// rateMeter is a cheap moving rate: events counted into one-second slots,
// averaged over the last ten complete seconds.
type rateMeter struct {
	mu    sync.Mutex
	slots [11]uint64
	sec   int64 // unix second of the current slot
}

func (r *rateMeter) roll(now int64) {
	if now <= r.sec {
		return
	}
	for s := r.sec + 1; s <= now && s <= r.sec+int64(len(r.slots)); s++ {
		r.slots[s%int64(len(r.slots))] = 0
	}
	r.sec = now
}

func (r *rateMeter) add(now time.Time, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(now.Unix())
	r.slots[r.sec%int64(len(r.slots))] += n
}

func (r *rateMeter) perSecond(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(now.Unix())
	var sum uint64
	for i, v := range r.slots {
		if int64(i) != r.sec%int64(len(r.slots)) {
			sum += v
		}
	}
	return float64(sum) / float64(len(r.slots)-1)
}
