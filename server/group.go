package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/topkd/topkd/server/raftlog"
)

// RaftPolicy is the Raft tuning shared by every group of a node.
type RaftPolicy struct {
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	CommitTimeout     time.Duration
	SnapshotThreshold uint64 // entries between snapshots
	SnapshotInterval  time.Duration
	TrailingLogs      uint64 // entries kept after a snapshot for slow followers
	SnapshotsRetained int
	// SnapshotEvents also snapshots a partition once this many events were
	// applied since its last snapshot: entries vary from one delta to 64K, so
	// an entry count alone does not bound the replay after a restart.
	SnapshotEvents uint64
}

// DefaultRaftPolicy suits a LAN and a laptop: snapshots every 8192 entries
// (an entry carries up to thousands of events), 512 trailing entries: a
// follower further behind gets a snapshot, and the log on disk stays small.
func DefaultRaftPolicy() RaftPolicy {
	return RaftPolicy{
		HeartbeatTimeout:  500 * time.Millisecond,
		ElectionTimeout:   500 * time.Millisecond,
		CommitTimeout:     5 * time.Millisecond,
		SnapshotThreshold: 8192,
		SnapshotInterval:  30 * time.Second,
		TrailingLogs:      512,
		SnapshotsRetained: 2,
		SnapshotEvents:    1_000_000,
	}
}

// readFSM is what a group needs of its state machine beyond raft.FSM.
type readFSM interface {
	raft.FSM
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, idx uint64) error
}

// logStore is a group's Raft log and stable store: a group of the node's
// shared raftlog.Store, or a raft-boltdb file of its own (the meta group,
// and partitions with --raft-log-store=per-group).
type logStore interface {
	raft.LogStore
	raft.StableStore
}

// group is one Raft group on this node: raft, its log and stable store,
// snapshots and transport over the node's mux.
type group struct {
	id        uint32
	name      string
	raft      *raft.Raft
	fsm       readFSM
	store     logStore
	ownStore  *raftboltdb.BoltStore // closed with the group; nil for a shared store
	snaps     raft.SnapshotStore
	trans     *raft.NetworkTransport
	bootIndex uint64 // last log index found at boot; reads wait for it

	// readyTerm is the term whose post-election barrier has completed while
	// this node led it; 0 while not ready. Reads check the term again after
	// VerifyLeader, so one read never spans two leaderships.
	readyTerm atomic.Uint64
	changing  atomic.Bool // a membership change of this group is in flight (its leader's reconcile)
	closed    atomic.Bool
	booted    atomic.Bool // replayed() once: the log found at boot is applied
	notify    chan bool
	stop      chan struct{}
	wg        sync.WaitGroup
	log       *slog.Logger
	onStuck   func()
}

type groupConfig struct {
	id     uint32
	name   string // "meta" or "p3"
	dir    string
	nodeID string
	layer  *Mux
	fsm    readFSM
	policy RaftPolicy
	log    *slog.Logger
	// store is the group's log store; nil opens a raft-boltdb file in dir.
	store logStore
	// onStuck reopens the group when its raft instance is stuck in a
	// leadership transfer (nil: the stuck instance is only logged).
	onStuck func()
	// floor is the applied index this node recorded for the group
	// (manifest.json): a log and snapshots ending below it lost data.
	floor uint64
	// acceptLoss starts such a group from what is left, with a warning.
	acceptLoss bool
	// storeID is the data dir's id (store-id), recorded in the group's
	// stable store on first open: a log store from another data dir is
	// refused.
	storeID string
}

// stuckTransferAfter is how long a new leadership may refuse entries
// because of a leadership transfer before the instance counts as stuck; a
// transfer that works takes an election timeout.
const stuckTransferAfter = 5 * time.Second

func hclogFor(log *slog.Logger, name string) hclog.Logger {
	std := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	return hclog.FromStandardLogger(std, &hclog.LoggerOptions{Name: name, Level: hclog.Warn})
}

// boltOptions: a log store frees whole runs of pages at every compaction, so
// the freelist is a hash map, and it is rebuilt on open instead of being
// rewritten, whole, by every commit (rqlite, Consul and etcd do the same).
// A lock held by another process answers within seconds, not never.
func boltOptions() *bbolt.Options {
	return &bbolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}
}

func openGroup(gc groupConfig) (*group, error) {
	if err := os.MkdirAll(gc.dir, 0o755); err != nil {
		return nil, fmt.Errorf("group %s: %w", gc.name, err)
	}
	store, own := gc.store, (*raftboltdb.BoltStore)(nil)
	if store == nil {
		var err error
		if own, err = openBoltStore(gc.name, filepath.Join(gc.dir, "raft.db")); err != nil {
			return nil, err
		}
		store = own
	}
	fail := func(err error) (*group, error) {
		if own != nil {
			own.Close()
		}
		return nil, fmt.Errorf("group %s: %w", gc.name, err)
	}
	if err := removeUnfinishedSnapshots(gc.dir); err != nil {
		return fail(err)
	}
	if err := resetUnfinishedBootstrap(store, gc.dir); err != nil {
		return fail(err)
	}
	hl := hclogFor(gc.log, "raft-"+gc.name)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(gc.dir, max(gc.policy.SnapshotsRetained, 1), hl)
	if err != nil {
		return fail(fmt.Errorf("snapshot store: %w", err))
	}
	// The group's directory, raft.db and snapshots/ were perhaps just
	// created: their entries must be durable before the group writes
	// anything (bbolt fsyncs the file, not its directory).
	for _, d := range []string{gc.dir, filepath.Dir(gc.dir)} {
		if err := syncDir(d); err != nil {
			return fail(err)
		}
	}
	last, err := store.LastIndex()
	if err != nil {
		return fail(fmt.Errorf("read last index: %w", err))
	}
	trans := raft.NewNetworkTransportWithLogger(gc.layer.Layer(gc.id), 3, 10*time.Second, hl)
	g := &group{id: gc.id, name: gc.name, fsm: gc.fsm, store: store, ownStore: own, snaps: snaps, trans: trans, bootIndex: last,
		notify: make(chan bool, 1), stop: make(chan struct{}), log: gc.log.With("group", gc.name), onStuck: gc.onStuck}

	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(gc.nodeID)
	cfg.Logger = hl
	cfg.HeartbeatTimeout = gc.policy.HeartbeatTimeout
	cfg.ElectionTimeout = gc.policy.ElectionTimeout
	cfg.LeaderLeaseTimeout = min(gc.policy.HeartbeatTimeout, cfg.LeaderLeaseTimeout)
	cfg.CommitTimeout = gc.policy.CommitTimeout
	cfg.SnapshotThreshold = gc.policy.SnapshotThreshold
	cfg.SnapshotInterval = gc.policy.SnapshotInterval
	cfg.TrailingLogs = gc.policy.TrailingLogs
	cfg.BatchApplyCh = true
	cfg.MaxAppendEntries = 256
	cfg.NotifyCh = g.notify
	cfg.NoLegacyTelemetry = true
	// A replica removed from its group stays open and idle (a server outside
	// the configuration never campaigns), so placement can add it back.
	cfg.ShutdownOnRemove = false
	if err := checkFloor(gc, store, snaps); err != nil {
		trans.Close()
		return fail(err)
	}
	if err := bindStore(gc, store); err != nil {
		trans.Close()
		return fail(err)
	}
	r, err := newRaft(cfg, gc, store, snaps, unpipelined{trans})
	if err != nil {
		trans.Close()
		return fail(err)
	}
	g.raft = r
	g.wg.Add(1)
	go g.watchLeadership()
	return g, nil
}

// checkFloor refuses a group whose log and newest snapshot end below the
// applied index this node recorded for it.
func checkFloor(gc groupConfig, store logStore, snaps raft.SnapshotStore) error {
	if gc.floor == 0 {
		return nil
	}
	last, err := store.LastIndex()
	if err != nil {
		return fmt.Errorf("read last index: %w", err)
	}
	have := last
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		have = max(have, list[0].Index)
	}
	if have >= gc.floor {
		return nil
	}
	msg := fmt.Sprintf("its Raft log and snapshots end at index %d, but this node had applied %d (%s): entries were lost from its log store or %s",
		have, gc.floor, manifestFile, filepath.Join(gc.dir, "snapshots"))
	if gc.acceptLoss {
		gc.log.Warn("starting a group that lost data, as --accept-data-loss asks", "group", gc.name, "lost", msg)
		return nil
	}
	return fmt.Errorf("%w: %s; restore the data directory from a backup, or start with --accept-data-loss to serve what is left (one-node clusters only)", ErrDamaged, msg)
}

// keyStoreID is the stable-store key of the data dir id a group's log
// store belongs to.
var keyStoreID = []byte("TopkdStoreID")

// bindStore records the data dir's id in a group's stable store, or checks
// it: a log store copied in from another data dir (another node's, or an
// older copy of this one's) would mix two histories.
func bindStore(gc groupConfig, store logStore) error {
	if gc.storeID == "" {
		return nil
	}
	have, err := store.Get(keyStoreID)
	if err != nil && !isKeyNotFound(err) {
		return fmt.Errorf("read store id: %w", err)
	}
	switch {
	case len(have) == 0:
		return store.Set(keyStoreID, []byte(gc.storeID))
	case string(have) != gc.storeID:
		return fmt.Errorf("%w: its Raft log store belongs to another data directory (store id %s, this one's %s in store-id): restore the data directory from one backup, not pieces of several",
			ErrDamaged, have, gc.storeID)
	}
	return nil
}

// newRaft is raft.NewRaft, whose scan of the log after the snapshot it
// restored panics on a missing entry: when the newest snapshot is damaged,
// raft falls back to an older one, which the compacted log no longer
// continues. That becomes an error naming the group.
func newRaft(cfg *raft.Config, gc groupConfig, store logStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: its Raft log does not continue the snapshot raft restored (%v): the newest snapshot in %s is probably damaged, and the log was compacted past the older one; restore the data directory from a backup",
				ErrDamaged, p, filepath.Join(gc.dir, "snapshots"))
		}
	}()
	r, err = raft.NewRaft(cfg, gc.fsm, store, store, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return r, nil
}

// openBoltStore opens a group's own raft-boltdb file, refusing a damaged one
// with a clear error before bbolt maps it.
func openBoltStore(name, path string) (*raftboltdb.BoltStore, error) {
	if err := raftlog.CheckFile(path); err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: boltOptions()})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("group %s: %s is in use by another process (is another topkd running on this data dir?)", name, path)
		}
		return nil, fmt.Errorf("group %s: open bolt store: %w", name, err)
	}
	return store, nil
}

// removeUnfinishedSnapshots deletes snapshot directories a crash left
// half-written (raft writes "<id>.tmp" and renames it when complete); raft
// never lists them, so it would never remove them either.
func removeUnfinishedSnapshots(dir string) error {
	tmps, err := filepath.Glob(filepath.Join(dir, "snapshots", "*.tmp"))
	if err != nil {
		return err
	}
	for _, t := range tmps {
		if err := os.RemoveAll(t); err != nil {
			return fmt.Errorf("remove unfinished snapshot: %w", err)
		}
	}
	return nil
}

// resetUnfinishedBootstrap undoes the first half of a bootstrap that a
// crash interrupted: raft.BootstrapCluster stores the term, then the
// configuration entry, each synced. A term with no log and no snapshot
// counts as existing state to raft, so the group would never bootstrap and
// never elect a leader. A replica that cast a vote is not such a store (a
// bootstrap votes only after its configuration entry is stored), and its
// term must stand: a reset could let it vote twice in one term.
func resetUnfinishedBootstrap(store logStore, dir string) error {
	last, err := store.LastIndex()
	if err != nil {
		return fmt.Errorf("read last index: %w", err)
	}
	term, err := store.GetUint64(keyCurrentTerm)
	if err != nil && !isKeyNotFound(err) {
		return fmt.Errorf("read current term: %w", err)
	}
	voted, err := store.Get(keyLastVoteCand)
	if err != nil && !isKeyNotFound(err) {
		return fmt.Errorf("read last vote: %w", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	if last != 0 || term == 0 || len(snaps) > 0 || len(voted) > 0 {
		return nil
	}
	if err := store.SetUint64(keyCurrentTerm, 0); err != nil {
		return fmt.Errorf("reset an unfinished bootstrap: %w", err)
	}
	slog.Warn("reset an unfinished bootstrap (term without a log, left by a crash)", "dir", dir, "term", term)
	return nil
}

// isKeyNotFound: both stores answer a missing stable key with an error whose
// text is "not found" (raft itself matches it by text).
func isKeyNotFound(err error) bool { return err != nil && err.Error() == "not found" }

// Where raft keeps its term and vote in the stable store.
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

// bootstrap makes voters the group's first configuration, exactly once: a
// group with any existing state is left alone.
func (g *group) bootstrap(voters []raft.Server) error {
	has, err := raft.HasExistingState(g.store, g.store, g.snaps)
	if err != nil {
		return fmt.Errorf("group %s: %w", g.name, err)
	}
	if has || g.bootIndex > 0 {
		return nil
	}
	f := g.raft.BootstrapCluster(raft.Configuration{Servers: voters})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("group %s: bootstrap: %w", g.name, err)
	}
	return nil
}

// watchLeadership issues a Barrier after every leadership gain, so that the
// FSM has applied every entry of earlier terms before reads are served.
func (g *group) watchLeadership() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case leader := <-g.notify:
			g.readyTerm.Store(0)
			if !leader {
				continue
			}
			var transferSince time.Time
			for {
				term := g.raft.CurrentTerm()
				err := g.raft.Barrier(10 * time.Second).Error()
				if err == nil {
					if g.raft.State() == raft.Leader && g.raft.CurrentTerm() == term {
						g.readyTerm.Store(term)
					}
					break
				}
				if g.raft.State() != raft.Leader {
					break
				}
				// hashicorp/raft #696: a leadership transfer cut short by a
				// step-down leaves its in-progress flag set, and a later
				// leadership of this instance refuses every entry. Only a new
				// raft instance clears it.
				if errors.Is(err, raft.ErrLeadershipTransferInProgress) {
					if transferSince.IsZero() {
						transferSince = time.Now()
					} else if time.Since(transferSince) > stuckTransferAfter && g.onStuck != nil {
						g.log.Error("leadership transfer stuck; reopening the raft instance", "for", time.Since(transferSince).Round(time.Second))
						go g.onStuck()
						return
					}
				} else {
					transferSince = time.Time{}
				}
				g.log.Warn("barrier after leadership gain failed; retrying", "err", err)
				select {
				case <-g.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
}

// leader names the group's current leader as this replica knows it.
func (g *group) leader() (id string, ok bool) {
	_, lid := g.raft.LeaderWithID()
	return string(lid), lid != ""
}

// servers splits the group's configuration, as this replica knows it, into
// voters and non-voters (both nil when raft cannot say).
func (g *group) servers() (voters, nonVoters []string) {
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, nil
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		} else {
			nonVoters = append(nonVoters, string(s.ID))
		}
	}
	return voters, nonVoters
}

// isLeader reports whether this node leads the group and has passed its barrier.
func (g *group) isLeader() bool {
	t := g.readyTerm.Load()
	return t != 0 && g.raft.State() == raft.Leader && g.raft.CurrentTerm() == t
}

// waitBoot blocks until the FSM applied everything committed that the log
// held at boot (replayed).
func (g *group) waitBoot(ctx context.Context) error {
	for !g.replayed() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// replayed reports whether the FSM has applied every committed entry the
// log held at boot. The log's tail at boot may never commit: a leader killed
// before its last entries reached a quorum finds them replaced by the next
// leader, so a follower waits only up to the commit index it has learned
// from a leader since boot (raft sets the last contact on the first
// AppendEntries it accepts), and until then for the whole log.
func (g *group) replayed() bool {
	if g.booted.Load() {
		return true
	}
	idx := g.bootIndex
	if g.raft.State() != raft.Leader && !g.raft.LastContact().IsZero() {
		idx = min(idx, g.raft.CommitIndex())
	}
	if idx == 0 || g.fsm.AppliedIndex() >= g.fsmTarget(idx) {
		g.booted.Store(true)
		return true
	}
	return false
}

// waitFSM waits until the FSM applied every entry up to idx that it will
// ever see.
func (g *group) waitFSM(ctx context.Context, idx uint64) error {
	if g.fsm.AppliedIndex() >= idx {
		return nil
	}
	return g.fsm.WaitApplied(ctx, g.fsmTarget(idx))
}

// fsmTarget is the last entry at or below idx that the FSM sees: raft keeps
// no-op and barrier entries from the FSM, so its applied index can stop
// short of idx. That is the last command or configuration entry.
func (g *group) fsmTarget(idx uint64) uint64 {
	if g.fsm.AppliedIndex() >= idx {
		return idx
	}
	target := idx
	var l raft.Log
	for target > 0 {
		if err := g.store.GetLog(target, &l); err != nil {
			break // compacted into a snapshot, which the FSM restored
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break
		}
		target--
	}
	return target
}

// readIndex implements a linearizable read barrier: the commit index taken
// before VerifyLeader, then a wait for the FSM to apply it.
func (g *group) readIndex(ctx context.Context) error {
	t := g.readyTerm.Load()
	if t == 0 || g.raft.State() != raft.Leader || g.raft.CurrentTerm() != t {
		return ErrNotLeader
	}
	idx := g.raft.CommitIndex()
	if err := g.raft.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	// The commit index must come from the term whose barrier ran: a
	// step-down and re-election in between would have reset readyTerm.
	if g.readyTerm.Load() != t || g.raft.CurrentTerm() != t {
		return fmt.Errorf("%w: leadership changed during the read", ErrNotLeader)
	}
	return g.waitFSM(ctx, idx)
}

// close shuts the group down; later calls return nil.
func (g *group) close() error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(g.stop)
	err := g.raft.Shutdown().Error()
	g.wg.Wait()
	g.trans.CloseStreams() // pooled outbound connections: peers' readers end with them
	if cerr := g.trans.Close(); err == nil {
		err = cerr
	}
	if g.ownStore != nil {
		if cerr := g.ownStore.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// apply proposes data (the combiner's proposer).
func (g *group) apply(data []byte, timeout time.Duration) applyFuture {
	return g.raft.Apply(data, timeout)
}

// unpipelined is the network transport without AppendEntries pipelining.
// In hashicorp/raft v1.8.0 a leader that learns of a newer term while 128
// pipelined requests to a follower are in flight stops reading their
// responses, and the sender then blocks for good on the full pipeline: the
// follower is never replicated to again by that leader, and the group's
// Shutdown never returns (seen in TestCluster* under -race). Without the
// pipeline raft sends one AppendEntries (up to MaxAppendEntries entries) at
// a time per follower.
type unpipelined struct{ *raft.NetworkTransport }

func (unpipelined) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
