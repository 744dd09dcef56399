package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/fsm"
	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
	"github.com/topkd/topkd/ring"
	"github.com/topkd/topkd/server/security"
)

// DefaultPartitions is P for a new cluster. With the shared Raft log a node
// pays one commit for all its partitions, so 8 cost one node 0.80-1.13x of
// 4's throughput at 4 producers and 0.69-0.96x at 16, and let a cluster
// spread leaders over up to 8 nodes (3/3/2 on three nodes, not 2/1/1).
// P is fixed at creation (server/DESIGN.md, "Partitions").
const DefaultPartitions = 8

// Config configures a node.
type Config struct {
	NodeID     string
	DataDir    string
	RaftAddr   string // advertised and listened on
	HTTPAddr   string // advertised to peers
	GossipAddr string
	// Join lists members to join (HTTP addresses, comma-separated), used
	// only by a node without state: a node with state rejoins from it.
	Join       string
	Partitions int
	// Replicas is R, each partition's replicas once there are that many
	// nodes (DefaultReplicas when 0).
	Replicas int
	// MetaVoters is how many members vote in the meta group (DefaultMetaVoters when 0).
	MetaVoters int
	// DeadNodeGrace is how long gossip must see a member dead before its
	// replicas are re-created elsewhere (DefaultDeadNodeGrace when 0).
	DeadNodeGrace time.Duration
	// MaxLeaderboards caps the leaderboards a new one may join
	// (DefaultMaxLeaderboards when 0).
	MaxLeaderboards int
	// MaxMoves caps the partition moves in flight cluster-wide
	// (DefaultMaxMoves when 0); a node receives one new replica at a time.
	MaxMoves int
	Raft     RaftPolicy
	Ingest   IngestPolicy
	// MemoryHighWater rejects ingest with ErrOverloaded above this heap size (bytes); 0 disables.
	MemoryHighWater uint64
	CacheRefresh    time.Duration
	Clock           Clock
	Logger          *slog.Logger
	// RaftListener overrides listening on RaftAddr (tests).
	RaftListener net.Listener
	RaftDialer   Dialer
	// TLS, when set, secures the Raft port (mutual TLS: only peers with a
	// node certificate connect) and this node's calls to other nodes.
	TLS *security.Certs
	// GossipKeys encrypt gossip; the first is used to send. A keyring a
	// rotation saved in the data dir takes precedence.
	GossipKeys [][]byte
	// LogStore is where partitions keep their Raft logs: LogStoreShared
	// (the default) or LogStorePerGroup.
	LogStore string
	// AcceptDataLoss starts groups whose log and snapshots end below what
	// this node recorded applying, serving what is left. Refused for a node
	// that has been in a cluster of more than one member.
	AcceptDataLoss bool
	// Fatal is called once when the shared Raft log cannot commit (a failed
	// fsync): the store is stopped by then and the process should exit.
	// Without it the node stays up with every write failing.
	Fatal func(error)

	// InitialCluster creates a cluster whose first members start together
	// (etcd's --initial-cluster): every group of a node without state is
	// bootstrapped with all of them as voters. This node must be among them.
	// Empty: a node without state creates a one-node cluster.
	InitialCluster []Member
}

// Member is a node as the cluster records it.
type Member struct {
	ID, RaftAddr, HTTPAddr, GossipAddr string
}

func (m Member) pb() *metapb.Node {
	return &metapb.Node{Id: m.ID, RaftAddr: m.RaftAddr, HttpAddr: m.HTTPAddr, GossipAddr: m.GossipAddr}
}

// Node is one topkd process: the meta group, the partition groups, the
// ingest combiners and the query path.
type Node struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	mux   *Mux

	meta    *group
	metaFSM *metaFSM
	logs    *partitionLogs
	storeID string
	// manifest records how far each group applied (manifest.go).
	manifest *manifest
	// lastMembers is the member list last written to the members file (reconcileLoop only).
	lastMembers string
	// deadSince is when the meta leader last saw each member alive in gossip (reconcileLoop only).
	deadSince map[string]time.Time
	// planning: the meta leader's move planner is running (reconcileMoves).
	planning  atomic.Bool
	parts     []*localReplica // by partition: this node's replicas
	nparts    int
	coord     *coordinator
	peers     *peers
	gossip    *gossip // nil without a gossip address
	metrics   *metrics
	mem       *memoryGuard
	watermark *watermarks

	stop chan struct{}
	wg   sync.WaitGroup
	// pushes are reconcile's config pushes; Close waits for them after the
	// groups shut down, which ends any that a stuck FSM still holds.
	pushes sync.WaitGroup
}

// Open starts a node; a node with no data bootstraps a single-node cluster.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("node id is empty")
	}
	if len(cfg.InitialCluster) > 0 && !slices.ContainsFunc(cfg.InitialCluster, func(m Member) bool { return m.ID == cfg.NodeID }) {
		return nil, fmt.Errorf("initial cluster does not list this node (%s)", cfg.NodeID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = WallClock
	}
	if cfg.Raft == (RaftPolicy{}) {
		cfg.Raft = DefaultRaftPolicy()
	}
	cfg.Ingest = cfg.Ingest.withDefaults()
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.MetaVoters <= 0 {
		cfg.MetaVoters = DefaultMetaVoters
	}
	if cfg.DeadNodeGrace <= 0 {
		cfg.DeadNodeGrace = DefaultDeadNodeGrace
	}
	if cfg.MaxMoves <= 0 {
		cfg.MaxMoves = DefaultMaxMoves
	}
	if cfg.MaxLeaderboards <= 0 {
		cfg.MaxLeaderboards = DefaultMaxLeaderboards
	}
	if cfg.CacheRefresh <= 0 {
		cfg.CacheRefresh = time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	storeID, err := loadStoreID(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	man, err := loadManifest(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.AcceptDataLoss {
		// A replica that lost its log (or its term and vote) must not rejoin
		// its group under its old identity: it could vote twice or lose
		// entries the others count on.
		if ms := readMembers(cfg.DataDir); len(ms) > 1 {
			return nil, fmt.Errorf("--accept-data-loss: this node has been one of %d members; a member that lost data must not rejoin as itself: remove it (topkctl leave --force %s, on another member) and start it with an empty data dir and a new --node-id",
				len(ms), cfg.NodeID)
		}
	}
	ln := cfg.RaftListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
			return nil, fmt.Errorf("listen raft: %w", err)
		}
	}
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = ln.Addr().String()
	}
	dial := cfg.RaftDialer
	var peerTLS *tls.Config
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS.RaftServerConfig())
		dial = tlsDialer(dial, cfg.TLS.ClientConfig())
		peerTLS = cfg.TLS.ClientConfig()
	}
	n := &Node{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, stop: make(chan struct{}), watermark: newWatermarks(),
		storeID: storeID, manifest: man, peers: newPeers(peerTLS)}
	n.mux = NewMux(ln, dial, cfg.Logger)
	if cfg.GossipAddr != "" {
		keys, saved, err := loadGossipKeys(cfg.DataDir, cfg.GossipKeys)
		if err != nil {
			n.mux.Close()
			return nil, err
		}
		if saved && len(cfg.GossipKeys) > 0 && !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, cfg.GossipKeys[0]) }) {
			cfg.Logger.Warn("the configured gossip key is not in the keyring a rotation saved; using the saved keyring",
				"key", security.GossipKeyID(cfg.GossipKeys[0]), "file", filepath.Join(cfg.DataDir, gossipKeyringFile))
		}
		g, err := startGossip(cfg.NodeID, cfg.GossipAddr, cfg.HTTPAddr, cfg.RaftAddr, keys, filepath.Join(cfg.DataDir, gossipKeyringFile), cfg.Logger)
		if err != nil {
			n.mux.Close()
			return nil, err
		}
		n.gossip = g
		n.cfg.GossipAddr = g.addr() // the port, when the address asked for 0
	}
	n.metrics = newMetrics(n)
	logs, err := openPartitionLogs(cfg.DataDir, cfg.LogStore, n.metrics, cfg.Fatal, cfg.Logger)
	if err != nil {
		n.closeGossip()
		n.mux.Close()
		return nil, err
	}
	n.logs = logs
	if err := n.openMeta(ctx); err != nil {
		if n.meta != nil {
			n.meta.close() // releases its bolt file: a later Open in this process must not hang on it
		}
		n.logs.close()
		n.closeGossip()
		n.mux.Close()
		return nil, err
	}
	if err := n.openPartitions(ctx); err != nil {
		n.Close()
		return nil, err
	}
	n.mem = newMemoryGuard(cfg.MemoryHighWater)
	replicas := make([]Replica, len(n.parts))
	for i, p := range n.parts {
		replicas[i] = &routedReplica{p: i, self: cfg.NodeID, local: p, leader: n.partitionLeader, peers: n.peers, hosts: n.hosts,
			replicated: n.replicated, forwarded: n.metrics.forwarded}
	}
	n.coord = newCoordinator(coordDeps{policy: cfg.Ingest, clock: cfg.Clock, metrics: n.metrics, mem: n.mem,
		boards: n.leaderboard, replicas: replicas, ready: n.Ready, nodeID: cfg.NodeID}, cfg.CacheRefresh, n.observeFreshness)
	n.start(n.reconcileLoop)
	n.start(n.tickLoop)
	n.start(n.snapshotLoop)
	n.start(n.floorLoop)
	if cfg.AcceptDataLoss {
		// What was accepted is the new record.
		if err := n.manifest.set(n.applied()); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.start(func() { n.periodic(time.Second, n.mem.sample) })
	n.start(func() { n.periodic(cfg.CacheRefresh, n.coord.cache.refresh) })
	return n, nil
}

func (n *Node) start(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) groupConfig(id uint32, name string, f readFSM) groupConfig {
	return groupConfig{id: id, name: name, dir: filepath.Join(n.cfg.DataDir, name), nodeID: n.cfg.NodeID,
		layer: n.mux, fsm: f, policy: n.cfg.Raft, log: n.log, floor: n.manifest.floor(name), acceptLoss: n.cfg.AcceptDataLoss, storeID: n.storeID}
}

// applied is each open group's applied index, by group name.
func (n *Node) applied() map[string]uint64 {
	out := map[string]uint64{}
	if n.meta != nil && n.meta.raft != nil {
		out["meta"] = n.meta.raft.AppliedIndex()
	}
	for _, p := range n.parts {
		if inc := p.cur.Load(); inc != nil && inc.g.raft != nil {
			out[partitionName(p.id)] = inc.g.raft.AppliedIndex()
		}
	}
	return out
}

// floorLoop raises the manifest's floors as the groups apply.
func (n *Node) floorLoop() {
	n.periodic(5*time.Second, func() {
		if err := n.manifest.raise(n.applied()); err != nil {
			n.log.Warn("record applied indexes", "file", manifestFile, "err", err)
		}
	})
}

func (n *Node) openMeta(ctx context.Context) error {
	n.metaFSM = newMetaFSM()
	g, err := openGroup(n.groupConfig(MetaGroup, "meta", n.metaFSM))
	if err != nil {
		return err
	}
	n.meta = g
	has, err := raft.HasExistingState(g.store, g.store, g.snaps)
	if err != nil {
		return fmt.Errorf("group meta: %w", err)
	}
	joining := !has && n.cfg.Join != ""
	switch {
	case joining:
		// Groups start empty and wait to be added as non-voters: a node that
		// bootstrapped its own would make split-brain groups.
		if err := n.join(ctx); err != nil {
			return err
		}
	case !has:
		if err := g.bootstrap(n.voters()); err != nil {
			return err
		}
	default:
		if n.cfg.Join != "" {
			n.log.Info("this node has cluster state; rejoining from it and ignoring --join", "join", n.cfg.Join)
		}
		n.start(n.refreshSelf)
		n.start(n.rejoinGossip)
	}
	// Wait for a leader, then initialize the cluster once, on the leader.
	if err := n.waitLeader(ctx, g); err != nil {
		return err
	}
	if err := g.waitBoot(ctx); err != nil {
		return err
	}
	st, changed := n.metaFSM.state()
	for st.Partitions == 0 && !g.isLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the meta leader to initialize the cluster: %w", ctx.Err())
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
		st, changed = n.metaFSM.state()
	}
	if st.Partitions == 0 {
		// Partition data without cluster metadata: a new cluster, possibly of
		// another partition count, would place items elsewhere and answer
		// silently wrong counts.
		if where, ok := n.logs.hasData(); ok {
			return fmt.Errorf("%s holds partition data (%s) but no initialized meta group: refusing to create a new cluster over it; restore %s or start from an empty data dir",
				n.cfg.DataDir, where, filepath.Join(n.cfg.DataDir, "meta"))
		}
		p := n.cfg.Partitions
		if p <= 0 {
			p = DefaultPartitions
		}
		init := &metapb.InitCluster{ClusterId: n.cfg.NodeID + "-" + strconv.FormatInt(n.clock.Now().UnixNano(), 36),
			Partitions: uint32(p), FirstNode: n.self()}
		for _, m := range n.cfg.InitialCluster {
			if m.ID != n.cfg.NodeID {
				init.OtherNodes = append(init.OtherNodes, m.pb())
			}
		}
		cmd := &metapb.Command{Cmd: &metapb.Command_Init{Init: init}}
		if _, err := n.applyMeta(ctx, cmd); err != nil {
			return fmt.Errorf("initialize cluster: %w", err)
		}
		n.log.Info("initialized a new cluster", "partitions", p, "node", n.cfg.NodeID)
	} else if n.cfg.Partitions > 0 && uint32(n.cfg.Partitions) != st.Partitions {
		n.log.Warn("partition count is fixed at creation; ignoring the flag", "flag", n.cfg.Partitions, "cluster", st.Partitions)
	}
	return nil
}

// waitLeader waits until g has a leader and this replica applied the log
// found at boot: when this node leads, until its post-election barrier ran,
// which completes only once the FSM has applied the whole log. The wait
// includes the replay: it gives up after 30 s without progress, not 30 s in
// all, and reports the replay as it goes.
func (n *Node) waitLeader(ctx context.Context, g *group) error {
	const stall = 30 * time.Second
	start := time.Now()
	applied, progressed, logged := g.fsm.AppliedIndex(), start, start
	led := func() bool {
		if g.isLeader() {
			return true
		}
		id, ok := g.leader()
		return ok && id != n.cfg.NodeID && g.replayed()
	}
	for !led() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %s: no leader: %w", g.name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		now := time.Now()
		if a := g.fsm.AppliedIndex(); a != applied {
			applied, progressed = a, now
		}
		if now.Sub(progressed) > stall {
			return fmt.Errorf("group %s: no leader after %v, nothing applied for %v", g.name, now.Sub(start).Round(time.Second), stall)
		}
		if now.Sub(logged) > 3*time.Second && g.bootIndex > 0 {
			logged = now
			g.log.Info("replaying the log", "applied", applied, "index", g.bootIndex, "elapsed", now.Sub(start).Round(time.Second))
		}
	}
	return nil
}

func (n *Node) applyMeta(ctx context.Context, c *metapb.Command) (interface{}, error) {
	data, err := encodeMeta(c)
	if err != nil {
		return nil, err
	}
	if !n.meta.isLeader() {
		return nil, ErrNotLeader
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := n.meta.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, raftErr(err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// raftErr maps raft errors: before enqueue it is a plain "not leader",
// afterwards the outcome is unknown.
func raftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %v", ErrNotReady, err)
	default:
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
}

func (n *Node) openPartitions(ctx context.Context) error {
	st, _ := n.metaFSM.state()
	n.nparts = int(st.Partitions)
	// Open the groups in parallel: each restores its snapshot and replays its
	// log inside raft.NewRaft, which is most of a restart.
	parts := make([]*localReplica, n.nparts)
	errs := make([]error, n.nparts)
	var wg sync.WaitGroup
	for p := range n.nparts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inc, err := n.openIncarnation(p)
			if err != nil {
				errs[p] = err
				return
			}
			parts[p] = &localReplica{id: p, wm: n.watermark}
			parts[p].cur.Store(inc)
			if n.bootstrapsGroups(st) {
				errs[p] = inc.g.bootstrap(n.voters())
			}
		}()
	}
	wg.Wait()
	for _, part := range parts {
		if part != nil {
			n.parts = append(n.parts, part) // Close shuts down whatever opened
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, part := range n.parts {
		part.comb = newCombiner(combinerDeps{partition: part.id, policy: n.cfg.Ingest, clock: n.clock, metrics: n.metrics,
			group: part, stop: n.stop, committed: func(index uint64, at time.Time, accepted uint64) {
				part.ack.acked(index, at)
				part.rate.add(at, accepted)
			}})
		n.start(part.comb.run)
	}
	for _, p := range n.parts {
		if !n.hosts(p.id) {
			continue // placement puts this partition elsewhere: nobody will lead it here
		}
		if err := n.waitLeader(ctx, p.group()); err != nil {
			return err
		}
		if err := p.group().waitBoot(ctx); err != nil {
			return err
		}
		p.snapAccepted.Store(p.fsm().AcceptedEvents())
	}
	// Serve only once every partition holds every leaderboard definition.
	n.reconcile(st)
	want := map[string]uint64{}
	for _, c := range st.Leaderboards {
		want[c.Name] = c.Incarnation
	}
	return n.waitPartitions(ctx, func(p *localReplica) bool {
		got := 0
		for _, c := range p.fsm().Leaderboards() {
			if inc, ok := want[c.Name]; ok && inc == c.Incarnation {
				got++
			}
		}
		return got == len(want)
	})
}

// Ready reports whether every group here has applied the log found at boot.
// Leadership is checked per read (readBarrier), not here.
func (n *Node) Ready(ctx context.Context) error {
	if err := n.meta.waitBoot(ctx); err != nil {
		return fmt.Errorf("%w: meta replaying: %v", ErrNotReady, err)
	}
	for _, p := range n.parts {
		if err := p.group().waitBoot(ctx); err != nil {
			return fmt.Errorf("%w: partition %d replaying: %v", ErrNotReady, p.id, err)
		}
	}
	return nil
}

// Partitions is P.
func (n *Node) Partitions() int { return n.nparts }

// PartitionOf maps a (leaderboard, item) to its partition (ring.Partition).
func PartitionOf(leaderboard, item string, p int) int { return ring.Partition(leaderboard, item, p) }

// GossipAddr is the address the node's gossip listens on ("" without gossip).
func (n *Node) GossipAddr() string { return n.cfg.GossipAddr }

func (n *Node) closeGossip() {
	if n.gossip != nil {
		n.gossip.close()
		n.gossip = nil
	}
}

// self is this node as the meta group records it.
func (n *Node) self() *metapb.Node {
	return &metapb.Node{Id: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, HttpAddr: n.cfg.HTTPAddr, GossipAddr: n.cfg.GossipAddr,
		StoreId: n.storeID}
}

// bootstrapsGroups: only the node that created the cluster (or the
// members of an initial cluster) bootstraps its partition groups, once;
// every other node starts them empty and waits to be added as a replica.
func (n *Node) bootstrapsGroups(st *metapb.State) bool {
	if len(n.cfg.InitialCluster) > 0 {
		return true
	}
	if len(st.Nodes) == 0 {
		return false
	}
	first := st.Nodes[0]
	return first.Id == n.cfg.NodeID && (first.StoreId == "" || first.StoreId == n.storeID)
}

// voters is the first configuration of a group this node bootstraps.
func (n *Node) voters() []raft.Server {
	members := n.cfg.InitialCluster
	if len(members) == 0 {
		members = []Member{{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr}}
	}
	out := make([]raft.Server, len(members))
	for i, m := range members {
		out[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)}
	}
	return out
}

// partitionLeader names where a call for partition p's leader should go:
// the leader this node's replica last heard of, while this node is one of
// the group's replicas; else the replicas placement lists, one per attempt.
func (n *Node) partitionLeader(p, attempt int) (id, httpAddr string, ok bool) {
	if p < len(n.parts) && n.hosts(p) {
		if id, ok := n.parts[p].group().leader(); ok {
			return id, n.memberHTTP(id), true
		}
	}
	st, _ := n.metaFSM.state()
	if p >= len(st.Placement) || len(st.Placement[p].Nodes) == 0 {
		return "", "", false
	}
	cands := st.Placement[p].Nodes
	id = cands[attempt%len(cands)]
	return id, n.memberHTTP(id), true
}

// replicated refuses ingest into partition p with ErrNotReady (which the
// routed replica retries until the caller's deadline) while placement holds
// fewer replicas of it than min(R, live members): as a cluster grows from
// one node, an event acknowledged by a partition still on one node would be
// lost with that node although others were there to hold it. Only growth
// toward R holds writes: a dead or leaving replica stays in placement until
// it is replaced.
func (n *Node) replicated(p int) error {
	st, _ := n.metaFSM.state()
	if p >= len(st.Placement) {
		return nil
	}
	// Without a missing replica to wait for (the usual case, and every
	// part of a single node's ingest), skip asking gossip who is alive.
	have := len(st.Placement[p].Nodes)
	if have >= n.cfg.Replicas || have >= len(st.Nodes) {
		return nil
	}
	var alive map[string]bool
	if n.gossip != nil {
		alive = n.gossip.alive()
	}
	live := 0
	for _, m := range st.Nodes {
		if !m.Down && !m.Leaving && (alive == nil || alive[m.Id] || m.Id == n.cfg.NodeID) {
			live++
		}
	}
	if want := min(n.cfg.Replicas, live); have < want {
		return fmt.Errorf("%w: partition %d has %d of its %d replicas; ingest waits for the move that adds them",
			ErrNotReady, p, have, want)
	}
	return nil
}

// hosts reports whether placement puts a replica of p on this node (every
// partition, before the first placement table).
func (n *Node) hosts(p int) bool {
	st, _ := n.metaFSM.state()
	if p >= len(st.Placement) {
		return true
	}
	return slices.Contains(st.Placement[p].Nodes, n.cfg.NodeID)
}

// LocalReplica is this node's replica of partition p, for peers' calls: it
// never forwards, so a call that reaches the wrong node fails rather than
// travels on.
func (n *Node) LocalReplica(p int) (Replica, error) {
	if p < 0 || p >= len(n.parts) {
		return nil, fmt.Errorf("%w: partition %d", ErrNotHosted, p)
	}
	return n.parts[p], nil
}

// Ingest validates a batch, splits it by partition and returns once every
// part is committed (coordinator.Ingest).
func (n *Node) Ingest(ctx context.Context, req IngestRequest) (IngestResult, error) {
	return n.coord.Ingest(ctx, req)
}

// TopK answers a top-k query at the requested consistency.
func (n *Node) TopK(ctx context.Context, q TopKQuery) (TopKAnswer, error) {
	return n.coord.TopK(ctx, q)
}

// Count answers one item's count in a window.
func (n *Node) Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (CountAnswer, error) {
	return n.coord.Count(ctx, lb, item, window, c)
}

// observeFreshness measures, for each local partition, the time from its
// last acknowledged entry to an answer in the cache that reflects it.
func (n *Node) observeFreshness(a TopKAnswer) {
	if len(a.Applied) != len(n.parts) {
		return
	}
	now := n.clock.Now()
	for i, p := range n.parts {
		if d, ok := p.ack.visible(a.Applied[i], now); ok {
			n.metrics.freshness.Observe(d.Seconds())
		}
	}
}

// Close stops the node gracefully: combiners drain, groups shut down.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
	}
	close(n.stop)
	n.wg.Wait()
	n.closeGossip()
	// Background changes (config pushes, moves, drops) see stop and end
	// while their groups still run: an entry queued in a raft instance that
	// is shutting down is never answered (its apply channel is buffered and
	// not drained), so a change that proposed one would never return. One
	// held by a stuck state machine is ended by the shutdown below instead.
	waitTimeout(&n.pushes, 5*time.Second)
	var errs []error
	if err := n.manifest.raise(n.applied()); err != nil {
		errs = append(errs, fmt.Errorf("record applied indexes: %w", err))
	}
	for _, p := range n.parts {
		p.reopening.Lock() // a reopen in progress finishes first; later ones see stop
		errs = append(errs, p.group().close())
		p.reopening.Unlock()
	}
	if n.meta != nil {
		errs = append(errs, n.meta.close())
	}
	n.pushes.Wait()
	if n.peers != nil {
		n.peers.close()
	}
	errs = append(errs, n.logs.close())
	errs = append(errs, n.mux.Close())
	return errors.Join(errs...)
}

// leaderboard returns the meta group's definition of a leaderboard.
func (n *Node) leaderboard(name string) (*pb.LeaderboardConfig, error) {
	st, _ := n.metaFSM.state()
	for _, c := range st.Leaderboards {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w %q", fsm.ErrUnknownLeaderboard, name)
}

// reconcileLoop pushes leaderboard definitions from the meta group to every
// partition this node leads, as versioned config and drop commands.
func (n *Node) reconcileLoop() {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		st, changed := n.metaFSM.state()
		n.reconcile(st)
		n.reconcileMembership(st)
		n.writeMembers(st)
		// While moves are in flight, their steps are taken and observed
		// every 50 ms rather than every second.
		every := time.Second
		if len(st.Moves) > 0 {
			every = 50 * time.Millisecond
		}
		t.Reset(every)
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// Each partition's push runs on its own goroutine, one at a time per
// partition: a partition whose FSM is stuck delays only its own configs.
func (n *Node) reconcile(st *metapb.State) {
	for _, p := range n.parts {
		if !p.group().isLeader() || !p.pushing.CompareAndSwap(false, true) {
			continue
		}
		have := map[string]*pb.LeaderboardConfig{}
		for _, c := range p.fsm().Leaderboards() {
			have[c.Name] = c
		}
		var cmds [][]byte
		for _, c := range st.Leaderboards {
			h := have[c.Name]
			if h != nil && (h.Incarnation > c.Incarnation || (h.Incarnation == c.Incarnation && h.Version >= c.Version)) {
				continue
			}
			// max_items: the ingest path refuses new items once the leaderboard's
			// total reaches it (ResourceExhausted, before proposal); each FSM
			// enforces the same number as a hard cap on its own memory, so skew
			// between partitions never rejects an item below the total.
			data, err := fsm.EncodeConfig(c)
			if err == nil {
				cmds = append(cmds, data)
			}
		}
		for _, t := range st.Tombstones {
			if h := have[t.Name]; h != nil && h.Incarnation <= t.Incarnation {
				if data, err := fsm.EncodeDrop(&pb.DropLeaderboard{Name: t.Name, Incarnation: t.Incarnation}); err == nil {
					cmds = append(cmds, data)
				}
			}
		}
		if len(cmds) == 0 {
			p.pushing.Store(false)
			continue
		}
		n.pushes.Add(1)
		go func() {
			defer n.pushes.Done()
			defer p.pushing.Store(false)
			for _, c := range cmds {
				if err := p.group().raft.Apply(c, 5*time.Second).Error(); err != nil {
					n.log.Warn("push leaderboard config", "partition", p.id, "err", err)
				}
			}
		}()
	}
}

// snapshotLoop bounds the log a restart must replay by work, not entries:
// a partition that applied Raft.SnapshotEvents events since its last
// snapshot here is snapshotted now.
func (n *Node) snapshotLoop() {
	every := n.cfg.Raft.SnapshotEvents
	if every == 0 {
		return
	}
	n.periodic(5*time.Second, func() {
		for _, p := range n.parts {
			acc := p.fsm().AcceptedEvents()
			if acc < p.snapAccepted.Load()+every {
				continue
			}
			start := time.Now()
			if err := p.group().raft.Snapshot().Error(); err != nil {
				n.log.Warn("snapshot", "partition", p.id, "err", err)
				continue
			}
			n.log.Info("snapshot", "partition", p.id, "events_since_last", acc-p.snapAccepted.Load(), "took", time.Since(start).Round(time.Millisecond))
			p.snapAccepted.Store(acc)
		}
	})
}

// periodic runs f every d until the node stops.
func (n *Node) periodic(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			f()
		}
	}
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
