package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/topkd/topkd/fsm"
	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// CreateLeaderboard defines a leaderboard and returns once every partition has it.
func (n *Node) CreateLeaderboard(ctx context.Context, c *pb.LeaderboardConfig) (*pb.LeaderboardConfig, error) {
	c = proto.Clone(c).(*pb.LeaderboardConfig)
	c.Incarnation, c.Version = 1, 1 // placeholders for validation; the meta group assigns them
	fsm.FillNewDefaults(c)
	if err := fsm.NormalizeConfig(c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := fsm.CheckNewConfig(c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// Checked here for a clear answer, and again by the meta group, which
	// alone sees concurrent creations in order.
	if st, _ := n.metaFSM.state(); len(st.Leaderboards) >= n.cfg.MaxLeaderboards {
		return nil, leaderboardLimit(len(st.Leaderboards))
	}
	if err := n.mem.check(); err != nil {
		return nil, fmt.Errorf("%w: no new leaderboard above the memory high-water mark", err)
	}
	r, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_PutLeaderboard{
		PutLeaderboard: &metapb.PutLeaderboard{Config: c, CreateOnly: true, MaxLeaderboards: uint32(n.cfg.MaxLeaderboards)}}})
	if err != nil {
		return nil, err
	}
	created := r.(*pb.LeaderboardConfig)
	return created, n.waitPartitions(ctx, func(p *localReplica) bool {
		for _, have := range p.fsm().Leaderboards() {
			if have.Name == created.Name && have.Incarnation == created.Incarnation {
				return true
			}
		}
		return false
	})
}

// DefaultMaxLeaderboards is how many leaderboards a cluster holds at most
// unless Config.MaxLeaderboards says otherwise.
const DefaultMaxLeaderboards = 1000

func leaderboardLimit(have int) error {
	return fmt.Errorf("%w: the cluster holds %d leaderboards, its limit (--max-leaderboards); drop one first", ErrInvalid, have)
}

// waitPartitions polls until ok holds on every partition.
func (n *Node) waitPartitions(ctx context.Context, ok func(*localReplica) bool) error {
	for _, p := range n.parts {
		for n.hosts(p.id) && !ok(p) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("partition %d did not take the change: %w", p.id, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// Leaderboards lists the definitions.
func (n *Node) Leaderboards() []*pb.LeaderboardConfig {
	st, _ := n.metaFSM.state()
	return st.Leaderboards
}

// DropLeaderboard removes a leaderboard and its counts everywhere.
func (n *Node) DropLeaderboard(ctx context.Context, name string) error {
	if name == "default" {
		return invalid("name", "the default leaderboard always exists")
	}
	if _, err := n.leaderboard(name); err != nil {
		return err
	}
	if _, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_DropLeaderboard{
		DropLeaderboard: &metapb.DropLeaderboard{Name: name}}}); err != nil {
		return err
	}
	return n.waitPartitions(ctx, func(p *localReplica) bool {
		for _, have := range p.fsm().Leaderboards() {
			if have.Name == name {
				return false
			}
		}
		return true
	})
}

// LeaderboardStats sums a leaderboard's statistics over partitions.
type LeaderboardStats struct {
	Config   *pb.LeaderboardConfig
	Accepted uint64
	Rejected uint64
	Distinct uint64
	Windows  []fsm.WindowStats // "all" first; PositiveItems summed
}

// DescribeLeaderboard returns the definition and statistics.
func (n *Node) DescribeLeaderboard(name string) (LeaderboardStats, error) {
	cfg, err := n.leaderboard(name)
	if err != nil {
		return LeaderboardStats{}, err
	}
	out := LeaderboardStats{Config: cfg}
	for _, p := range n.parts {
		for _, ls := range p.fsm().Stats().Leaderboards {
			if ls.Name != name || ls.Incarnation != cfg.Incarnation {
				continue
			}
			out.Accepted += ls.Accepted
			out.Rejected += ls.RejectedMaxItems
			out.Distinct += uint64(ls.DistinctItems)
			for i, w := range ls.Windows {
				if i >= len(out.Windows) {
					out.Windows = append(out.Windows, fsm.WindowStats{Window: w.Window, Bucket: w.Bucket})
				}
				out.Windows[i].PositiveItems += w.PositiveItems
				out.Windows[i].LateDropped += w.LateDropped
				out.Windows[i].Buckets = max(out.Windows[i].Buckets, w.Buckets)
				out.Windows[i].BucketEntries += w.BucketEntries
			}
		}
	}
	return out, nil
}

// PartitionStatus describes this node's replica of a partition.
type PartitionStatus struct {
	Partition         int    `json:"partition"`
	State             string `json:"state"`
	Leader            string `json:"leader"`
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	LastSnapshotIndex uint64 `json:"last_snapshot_index"`
	DistinctItems     uint64 `json:"distinct_items"`
	StateBytes        int64  `json:"state_bytes"`
	// IngestEventsPerSecond is the recent accepted-event rate (10 s moving average).
	IngestEventsPerSecond float64 `json:"ingest_events_per_second"`
	// Placement lists the replicas the meta group places (preferred leader
	// first); Voters and NonVoters the group's configuration as this
	// node's replica knows it.
	Placement []string `json:"placement"`
	Voters    []string `json:"voters"`
	NonVoters []string `json:"non_voters,omitempty"`
	// LocalAppliedIndex is this node's replica's applied index: 0 when it
	// holds no data. For a partition placed elsewhere (State "NotPlaced")
	// the fields above are its leader's.
	LocalAppliedIndex uint64 `json:"local_applied_index"`
}

// Status describes the node.
type Status struct {
	NodeID     string            `json:"node_id"`
	RaftAddr   string            `json:"raft_addr"`
	HTTPAddr   string            `json:"http_addr"`
	Ready      bool              `json:"ready"`
	Partitions []PartitionStatus `json:"partitions"`
	MetaLeader string            `json:"meta_leader"`
	HeapBytes  uint64            `json:"heap_bytes"`
	Members    []MemberStatus    `json:"members"`
	Moves      []MoveStatus      `json:"moves"` // in flight, from the meta state
	// Limits are this node's ingest limits, for clients that split
	// batches by partition and must not split one a node would refuse.
	Limits IngestLimits `json:"ingest_limits"`
}

// IngestLimits are the per-request and per-event limits of ingest.
type IngestLimits struct {
	MaxBatchEvents int           `json:"max_batch_events"`
	MaxItemBytes   int           `json:"max_item_bytes"`
	MaxFutureSkew  time.Duration `json:"max_future_skew"`
}

// MoveStatus is a partition move in flight.
type MoveStatus struct {
	Partition int       `json:"partition"`
	From      []string  `json:"from"`
	To        []string  `json:"to"`
	Step      string    `json:"step"` // adding (new replicas catching up) or promoted (old ones being removed)
	Started   time.Time `json:"started"`
}

// MemberStatus is a cluster member as this node sees it.
type MemberStatus struct {
	ID        string `json:"id"`
	HTTPAddr  string `json:"http_addr"`
	RaftAddr  string `json:"raft_addr"`
	Alive     bool   `json:"alive"` // in this node's gossip (false without gossip)
	Leaving   bool   `json:"leaving"`
	Down      bool   `json:"down"`
	MetaVoter bool   `json:"meta_voter"`
	Replicas  int    `json:"replicas"` // placed on it
}

// Status returns this node's view.
func (n *Node) Status(ctx context.Context) Status {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	s := Status{NodeID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr, Ready: n.Ready(rctx) == nil,
		HeapBytes: n.mem.HeapBytes()}
	s.Limits = IngestLimits{MaxBatchEvents: n.cfg.Ingest.MaxBatchEvents, MaxItemBytes: n.cfg.Ingest.MaxItemBytes,
		MaxFutureSkew: n.cfg.Ingest.MaxFutureSkew}
	_, id := n.meta.raft.LeaderWithID()
	s.MetaLeader = string(id)
	meta, _ := n.metaFSM.state()
	s.Members = n.members(meta)
	for _, mv := range meta.Moves {
		step := "adding"
		if mv.Step == metapb.MoveStep_MOVE_STEP_PROMOTED {
			step = "promoted"
		}
		s.Moves = append(s.Moves, MoveStatus{Partition: int(mv.Partition), From: mv.From, To: mv.To, Step: step,
			Started: time.UnixMilli(mv.StartedMs)})
	}
	for _, p := range n.parts {
		_, lid := p.group().raft.LeaderWithID()
		st := p.fsm().Stats()
		ps := PartitionStatus{Partition: p.id, State: p.group().raft.State().String(), Leader: string(lid),
			CommitIndex: p.group().raft.CommitIndex(), AppliedIndex: p.fsm().AppliedIndex(), StateBytes: st.Bytes,
			IngestEventsPerSecond: p.rate.perSecond(n.clock.Now()), LocalAppliedIndex: p.fsm().AppliedIndex()}
		ps.LastSnapshotIndex = parseUint(p.group().raft.Stats()["last_snapshot_index"])
		if p.id < len(meta.Placement) {
			ps.Placement = meta.Placement[p.id].Nodes
		}
		ps.Voters, ps.NonVoters = p.group().servers()
		for _, l := range st.Leaderboards {
			ps.DistinctItems += uint64(l.DistinctItems)
		}
		s.Partitions = append(s.Partitions, ps)
	}
	n.remoteStatus(ctx, s.Partitions)
	return s
}

// remoteStatus fills in, for the partitions placed only on other nodes,
// what their leaders report, so that status from any node shows every
// partition's leader, indexes and ingest rate. It waits at most
// remoteStatusWait; a leader that does not answer in time leaves its
// partition's fields empty.
func (n *Node) remoteStatus(ctx context.Context, parts []PartitionStatus) {
	ctx, cancel := context.WithTimeout(ctx, remoteStatusWait)
	defer cancel()
	var wg sync.WaitGroup
	for i := range parts {
		ps := &parts[i]
		if n.hosts(ps.Partition) {
			continue
		}
		*ps = PartitionStatus{Partition: ps.Partition, State: "NotPlaced", Placement: ps.Placement,
			LocalAppliedIndex: ps.LocalAppliedIndex}
		wg.Go(func() {
			gs, err := n.groupStatus(ctx, ps.Partition)
			if err != nil {
				return
			}
			ps.Leader = gs.NodeId
			ps.CommitIndex, ps.AppliedIndex = gs.LastIndex, gs.AppliedIndex
			ps.IngestEventsPerSecond = gs.IngestEventsPerSecond
			ps.Voters, ps.NonVoters = gs.Voters, gs.NonVoters
		})
	}
	wg.Wait()
}

// remoteStatusWait bounds how long a status call waits for other nodes.
const remoteStatusWait = 500 * time.Millisecond

func parseUint(s string) uint64 {
	var v uint64
	fmt.Sscan(s, &v)
	return v
}

// Voters counts the voters of each group this node holds, as its replicas
// know the groups' configurations (meta first, then partitions).
func (n *Node) Voters() []int {
	groups := []*group{n.meta}
	for _, p := range n.parts {
		groups = append(groups, p.group())
	}
	out := make([]int, 0, len(groups))
	for _, g := range groups {
		v, _ := g.servers()
		out = append(out, len(v))
	}
	return out
}

func (n *Node) members(st *metapb.State) []MemberStatus {
	var alive map[string]bool
	if n.gossip != nil {
		alive = n.gossip.alive()
	}
	voters, _ := n.meta.servers()
	held := map[string]int{}
	for _, p := range st.Placement {
		for _, id := range p.Nodes {
			held[id]++
		}
	}
	out := make([]MemberStatus, 0, len(st.Nodes))
	for _, m := range st.Nodes {
		out = append(out, MemberStatus{ID: m.Id, HTTPAddr: m.HttpAddr, RaftAddr: m.RaftAddr, Alive: alive[m.Id],
			Leaving: m.Leaving, Down: m.Down, MetaVoter: slices.Contains(voters, m.Id), Replicas: held[m.Id]})
	}
	return out
}
