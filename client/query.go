package client

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
)

// Consistency is the read level of a query.
type Consistency int

const (
	// DefaultConsistency lets the server choose (leader for the Connect API).
	DefaultConsistency Consistency = iota
	// Cached reads the node's result cache, refreshed in the background (about 1 s).
	Cached
	// Leader reads each partition at its leader.
	Leader
	// Linearizable reads each partition at its leader after a read-index
	// check: it reflects every batch acknowledged before the query started.
	Linearizable
)

func (c Consistency) String() string {
	switch c {
	case Cached:
		return "cached"
	case Leader:
		return "leader"
	case Linearizable:
		return "linearizable"
	}
	return "default"
}

// MarshalText makes a Consistency print as its name in JSON.
func (c Consistency) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// ParseConsistency maps "cached", "leader", "linearizable" and "" (default).
func ParseConsistency(s string) (Consistency, error) {
	switch s {
	case "", "default":
		return DefaultConsistency, nil
	case "cached":
		return Cached, nil
	case "leader":
		return Leader, nil
	case "linearizable":
		return Linearizable, nil
	}
	return 0, fmt.Errorf("consistency %q is not one of cached, leader, linearizable", s)
}

func (c Consistency) pb() topkv1.Consistency {
	switch c {
	case Cached:
		return topkv1.Consistency_CONSISTENCY_CACHED
	case Leader:
		return topkv1.Consistency_CONSISTENCY_LEADER
	case Linearizable:
		return topkv1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return topkv1.Consistency_CONSISTENCY_UNSPECIFIED
}

func consistencyOf(c topkv1.Consistency) Consistency {
	switch c {
	case topkv1.Consistency_CONSISTENCY_CACHED:
		return Cached
	case topkv1.Consistency_CONSISTENCY_LEADER:
		return Leader
	case topkv1.Consistency_CONSISTENCY_LINEARIZABLE:
		return Linearizable
	}
	return DefaultConsistency
}

// QueryOption configures TopK and Count.
type QueryOption func(*queryOptions)

type queryOptions struct {
	consistency Consistency
	partial     bool
}

// WithPartial lets a top-k query at leader or linearizable consistency
// answer from the partitions that answer: TopKResult.MissingPartitions
// names the others. Without it such an answer is an error.
func WithPartial() QueryOption {
	return func(o *queryOptions) { o.partial = true }
}

// WithConsistency sets a query's read level.
func WithConsistency(c Consistency) QueryOption {
	return func(o *queryOptions) { o.consistency = c }
}

// Item is one ranked item. In exact mode LowerBound == Count == UpperBound.
type Item struct {
	ID         string `json:"id"`
	Count      int64  `json:"count"`
	LowerBound int64  `json:"lower_bound"`
	UpperBound int64  `json:"upper_bound"`
}

// Window says which time span an answer covers.
type Window struct {
	// Type is "global" for all time, "sliding" otherwise.
	Type     string    `json:"type"`
	Duration string    `json:"duration,omitempty"`
	Start    time.Time `json:"start,omitzero"`
	End      time.Time `json:"end,omitzero"`
}

// TopKResult is the answer to TopK.
type TopKResult struct {
	Leaderboard string      `json:"leaderboard"`
	Items       []Item      `json:"items"`
	Window      Window      `json:"window"`
	Approximate bool        `json:"approximate"`
	Guaranteed  bool        `json:"guaranteed"`
	MaxError    int64       `json:"max_error"`
	Consistency Consistency `json:"consistency"`
	// AsOf is when the answer was computed (for cached answers: when the cache was filled).
	AsOf        time.Time `json:"as_of"`
	GeneratedAt time.Time `json:"generated_at"`
	// MissingPartitions lists the partitions a partial answer left out (WithPartial).
	MissingPartitions []uint32 `json:"missing_partitions,omitempty"`
}

// CountResult is the answer to Count.
type CountResult struct {
	ID          string `json:"id"`
	Count       int64  `json:"count"`
	LowerBound  int64  `json:"lower_bound"`
	UpperBound  int64  `json:"upper_bound"`
	Window      Window `json:"window"`
	Approximate bool   `json:"approximate"`
	// Rank is the 1-based rank in the window's cached top k_max; 0 when outside it.
	Rank int `json:"rank,omitempty"`
	// Consistency is the level served (a count is read at the leader).
	Consistency Consistency `json:"consistency"`
}

func windowOf(w *topkv1.WindowInfo) Window {
	if w == nil {
		return Window{}
	}
	return Window{Type: w.Type, Duration: w.Duration, Start: unixMs(w.StartUnixMs), End: unixMs(w.EndUnixMs)}
}

func unixMs(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func invalidArg(op, format string, a ...any) error {
	return fmt.Errorf("%s: %w", op, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, a...)))
}

// TopK returns the k most frequent items of a leaderboard's window ("" or
// "all" for all time, or a configured duration such as "1h"); k = 0 asks for
// the server's default (100).
func (c *Client) TopK(ctx context.Context, leaderboard, window string, k int, opts ...QueryOption) (*TopKResult, error) {
	op := fmt.Sprintf("top-k of %q", lbName(leaderboard))
	if k < 0 || k > 1<<31 {
		return nil, invalidArg(op, "k %d is out of range", k)
	}
	var o queryOptions
	for _, f := range opts {
		f(&o)
	}
	req := &topkv1.TopKRequest{Leaderboard: leaderboard, K: uint32(k), Window: window, Consistency: o.consistency.pb(),
		AllowPartial: o.partial}
	var m *topkv1.TopKResponse
	if _, err := c.call(ctx, op, retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.TopK(ctx, connect.NewRequest(req))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return nil, err
	}
	out := &TopKResult{Leaderboard: m.Leaderboard, Window: windowOf(m.Window), Approximate: m.Approximate,
		Guaranteed: m.Guaranteed, MaxError: m.MaxError, Consistency: consistencyOf(m.Consistency),
		AsOf: unixMs(m.AsOfUnixMs), GeneratedAt: unixMs(m.GeneratedAtUnixMs), Items: make([]Item, len(m.Items)),
		MissingPartitions: m.MissingPartitions}
	for i, it := range m.Items {
		out.Items[i] = Item{ID: it.Id, Count: it.Count, LowerBound: it.LowerBound, UpperBound: it.UpperBound}
	}
	return out, nil
}

// Count returns one item's count in a leaderboard's window.
func (c *Client) Count(ctx context.Context, leaderboard, item, window string, opts ...QueryOption) (*CountResult, error) {
	op := fmt.Sprintf("count %q in %q", item, lbName(leaderboard))
	var o queryOptions
	for _, f := range opts {
		f(&o)
	}
	req := &topkv1.CountRequest{Leaderboard: leaderboard, Item: item, Window: window, Consistency: o.consistency.pb()}
	var m *topkv1.CountResponse
	if _, err := c.call(ctx, op, retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.Count(ctx, connect.NewRequest(req))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return nil, err
	}
	return &CountResult{ID: m.Id, Count: m.Count, LowerBound: m.LowerBound, UpperBound: m.UpperBound,
		Window: windowOf(m.Window), Approximate: m.Approximate, Rank: int(m.Rank), Consistency: consistencyOf(m.Consistency)}, nil
}

// Leaderboard is a leaderboard's definition. Zero fields take the server's
// defaults on creation.
type Leaderboard struct {
	Name string `json:"name"`
	// Mode is "exact" (default), "cms" or "spacesaving".
	Mode string `json:"mode,omitempty"`
	// Windows are sliding windows such as "1m", "1h", "1d", "7d"; "all" always exists.
	Windows []string `json:"windows,omitempty"`
	KMax    uint32   `json:"k_max,omitempty"`
	// Clock is "wall" (default) or "event".
	Clock string `json:"clock,omitempty"`
	// AllowedLateness is how late an event may arrive under the event clock, e.g. "5m".
	AllowedLateness string  `json:"allowed_lateness,omitempty"`
	MaxItems        uint64  `json:"max_items,omitempty"`
	Epsilon         float64 `json:"epsilon,omitempty"`
	Delta           float64 `json:"delta,omitempty"`
	Capacity        uint64  `json:"capacity,omitempty"`
	// FilterCells is spacesaving's filter cells per counter (0: the server's default).
	FilterCells uint32 `json:"filter_cells,omitempty"`
	Incarnation uint64 `json:"incarnation,omitempty"`
	Version     uint64 `json:"version,omitempty"`
}

func (l Leaderboard) pb() *topkv1.Leaderboard {
	return &topkv1.Leaderboard{Name: l.Name, Mode: l.Mode, Windows: append([]string(nil), l.Windows...), KMax: l.KMax,
		Clock: l.Clock, AllowedLateness: l.AllowedLateness, MaxItems: l.MaxItems, Epsilon: l.Epsilon, Delta: l.Delta,
		Capacity: l.Capacity, FilterCells: l.FilterCells}
}

func leaderboardOf(m *topkv1.Leaderboard) Leaderboard {
	if m == nil {
		return Leaderboard{}
	}
	return Leaderboard{Name: m.Name, Mode: m.Mode, Windows: m.Windows, KMax: m.KMax, Clock: m.Clock,
		AllowedLateness: m.AllowedLateness, MaxItems: m.MaxItems, Epsilon: m.Epsilon, Delta: m.Delta,
		Capacity: m.Capacity, FilterCells: m.FilterCells, Incarnation: m.Incarnation, Version: m.Version}
}

// WindowStats describes one window of a leaderboard.
type WindowStats struct {
	Window        string `json:"window"`
	DistinctItems uint64 `json:"distinct_items"`
	LateDropped   uint64 `json:"late_dropped"`
}

// LeaderboardInfo is a leaderboard's definition and statistics.
type LeaderboardInfo struct {
	Leaderboard Leaderboard   `json:"leaderboard"`
	Accepted    uint64        `json:"accepted"`
	Rejected    uint64        `json:"rejected"`
	Windows     []WindowStats `json:"windows"`
}

// CreateLeaderboard defines a leaderboard and returns it as stored, with the
// server's defaults filled in.
func (c *Client) CreateLeaderboard(ctx context.Context, l Leaderboard) (Leaderboard, error) {
	op := fmt.Sprintf("create leaderboard %q", l.Name)
	if l.Name == "" {
		return Leaderboard{}, invalidArg(op, "name is empty")
	}
	var m *topkv1.CreateLeaderboardResponse
	if _, err := c.call(ctx, op, retryRefused, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.CreateLeaderboard(ctx, connect.NewRequest(&topkv1.CreateLeaderboardRequest{Leaderboard: l.pb()}))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return Leaderboard{}, err
	}
	return leaderboardOf(m.Leaderboard), nil
}

// ListLeaderboards returns every leaderboard's definition.
func (c *Client) ListLeaderboards(ctx context.Context) ([]Leaderboard, error) {
	var m *topkv1.ListLeaderboardsResponse
	if _, err := c.call(ctx, "list leaderboards", retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.ListLeaderboards(ctx, connect.NewRequest(&topkv1.ListLeaderboardsRequest{}))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]Leaderboard, len(m.Leaderboards))
	for i, l := range m.Leaderboards {
		out[i] = leaderboardOf(l)
	}
	return out, nil
}

// DescribeLeaderboard returns a leaderboard's definition and statistics.
func (c *Client) DescribeLeaderboard(ctx context.Context, name string) (*LeaderboardInfo, error) {
	op := fmt.Sprintf("describe leaderboard %q", name)
	var m *topkv1.DescribeLeaderboardResponse
	if _, err := c.call(ctx, op, retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.DescribeLeaderboard(ctx, connect.NewRequest(&topkv1.DescribeLeaderboardRequest{Name: name}))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return nil, err
	}
	out := &LeaderboardInfo{Leaderboard: leaderboardOf(m.Leaderboard), Accepted: m.Accepted, Rejected: m.Rejected}
	for _, w := range m.Windows {
		out.Windows = append(out.Windows, WindowStats{Window: w.Window, DistinctItems: w.DistinctItems, LateDropped: w.LateDropped})
	}
	return out, nil
}

// DropLeaderboard removes a leaderboard and its counts.
func (c *Client) DropLeaderboard(ctx context.Context, name string) error {
	op := fmt.Sprintf("drop leaderboard %q", name)
	if name == "" {
		return invalidArg(op, "name is empty")
	}
	_, err := c.call(ctx, op, retryRefused, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		_, err := n.DropLeaderboard(ctx, connect.NewRequest(&topkv1.DropLeaderboardRequest{Name: name}))
		return err
	})
	return err
}

// NodeStatus describes one node.
type NodeStatus struct {
	NodeID   string `json:"node_id"`
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	Ready    bool   `json:"ready"` // the answering node only
	// As the answering node sees the member: alive in its gossip, draining,
	// marked down, voting in the meta group, replicas placed on it.
	Alive     bool   `json:"alive"`
	Leaving   bool   `json:"leaving"`
	Down      bool   `json:"down"`
	MetaVoter bool   `json:"meta_voter"`
	Replicas  uint32 `json:"replicas"`
}

// PartitionStatus describes the answering node's replica of a partition.
type PartitionStatus struct {
	Partition             uint32  `json:"partition"`
	State                 string  `json:"state"`
	Leader                string  `json:"leader"`
	CommitIndex           uint64  `json:"commit_index"`
	AppliedIndex          uint64  `json:"applied_index"`
	LastSnapshotIndex     uint64  `json:"last_snapshot_index"`
	DistinctItems         uint64  `json:"distinct_items"`
	IngestEventsPerSecond float64 `json:"ingest_events_per_second"`
	// Placement lists the replicas placed (preferred leader first); Voters
	// and NonVoters the group's configuration as the answering node knows it.
	Placement []string `json:"placement"`
	Voters    []string `json:"voters"`
	NonVoters []string `json:"non_voters,omitempty"`
	// LocalAppliedIndex is the answering node's replica's applied index (0:
	// it holds no data). For a partition placed only on other nodes (State
	// "NotPlaced") the fields above are its leader's.
	LocalAppliedIndex uint64 `json:"local_applied_index"`
}

// Status is one node's view of itself and the cluster.
type Status struct {
	Node       NodeStatus        `json:"node"`
	Partitions uint32            `json:"partitions"`
	Replicas   []PartitionStatus `json:"partition_status"`
	Nodes      []NodeStatus      `json:"nodes"`
	MetaLeader string            `json:"meta_leader"`
	StateBytes uint64            `json:"state_bytes"`
	Moves      []MoveStatus      `json:"moves"`
}

// MoveStatus is a partition move in flight: its new replicas are being
// added ("adding") or they vote and the old ones are being removed
// ("promoted").
type MoveStatus struct {
	Partition uint32    `json:"partition"`
	From      []string  `json:"from"`
	To        []string  `json:"to"`
	Step      string    `json:"step"`
	Started   time.Time `json:"started"`
}

func nodeOf(m *topkv1.NodeStatus) NodeStatus {
	if m == nil {
		return NodeStatus{}
	}
	return NodeStatus{NodeID: m.NodeId, HTTPAddr: m.HttpAddr, RaftAddr: m.RaftAddr, Ready: m.Ready, Alive: m.Alive,
		Leaving: m.Leaving, Down: m.Down, MetaVoter: m.MetaVoter, Replicas: m.Replicas}
}

// Status asks one node (the next in round-robin order) for its status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var m *topkv1.StatusResponse
	if _, err := c.call(ctx, "status", retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		r, err := n.Status(ctx, connect.NewRequest(&topkv1.StatusRequest{}))
		if err == nil {
			m = r.Msg
		}
		return err
	}); err != nil {
		return nil, err
	}
	out := &Status{Node: nodeOf(m.Node), Partitions: m.Partitions, MetaLeader: m.MetaLeader, StateBytes: m.StateBytes}
	for _, n := range m.Nodes {
		out.Nodes = append(out.Nodes, nodeOf(n))
	}
	for _, p := range m.PartitionStatus {
		out.Replicas = append(out.Replicas, PartitionStatus{Partition: p.Partition, State: p.State, Leader: p.Leader,
			CommitIndex: p.CommitIndex, AppliedIndex: p.AppliedIndex, LastSnapshotIndex: p.LastSnapshotIndex,
			DistinctItems: p.DistinctItems, IngestEventsPerSecond: p.IngestEventsPerSecond, Placement: p.Placement,
			Voters: p.Voters, NonVoters: p.NonVoters, LocalAppliedIndex: p.LocalAppliedIndex})
	}
	for _, mv := range m.Moves {
		out.Moves = append(out.Moves, MoveStatus{Partition: mv.Partition, From: mv.From, To: mv.To, Step: mv.Step,
			Started: time.UnixMilli(mv.StartedMs)})
	}
	return out, nil
}

// Leave drains a node (its replicas move to the other nodes) and removes it
// from the cluster; progress is called with each step as the node reports
// it. It returns once the node is removed. Leaving is idempotent, so a
// broken stream is retried on another node, which resumes the drain.
func (c *Client) Leave(ctx context.Context, nodeID string, force bool, progress func(msg string)) error {
	_, err := c.call(ctx, "leave", retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		stream, err := n.Leave(ctx, connect.NewRequest(&topkv1.LeaveRequest{NodeId: nodeID, Force: force}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			if progress != nil {
				progress(stream.Msg().Message)
			}
			if stream.Msg().Done {
				return nil
			}
		}
		if err := stream.Err(); err != nil {
			return err
		}
		return fmt.Errorf("leave %s: the stream ended before the node was removed", nodeID)
	})
	return err
}

// VerifyReplicas has every partition's leader log a checksum command and
// compares the digests of state its replicas record there.
func (c *Client) VerifyReplicas(ctx context.Context) (*topkv1.VerifyReplicasResponse, error) {
	var out *topkv1.VerifyReplicasResponse
	_, err := c.call(ctx, "verify replicas", retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		resp, err := n.VerifyReplicas(ctx, connect.NewRequest(&topkv1.VerifyReplicasRequest{}))
		if err != nil {
			return err
		}
		out = resp.Msg
		return nil
	})
	return out, err
}

// RebalanceReport is what Rebalance planned and made.
type RebalanceReport struct {
	Planned, Made int
}

// Rebalance moves leaderships, then replicas, from the busiest nodes to the
// least busy; progress is called with each step. With dryRun it only
// reports the plan. A broken stream is retried on another node, which plans
// again from where the first left off.
func (c *Client) Rebalance(ctx context.Context, dryRun bool, progress func(msg string)) (RebalanceReport, error) {
	var rep RebalanceReport
	_, err := c.call(ctx, "rebalance", retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		stream, err := n.Rebalance(ctx, connect.NewRequest(&topkv1.RebalanceRequest{DryRun: dryRun}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			m := stream.Msg()
			rep = RebalanceReport{Planned: int(m.Planned), Made: int(m.Made)}
			if m.Done {
				return nil
			}
			if progress != nil {
				progress(m.Message)
			}
		}
		if err := stream.Err(); err != nil {
			return err
		}
		return fmt.Errorf("rebalance: the stream ended before the moves were done")
	})
	return rep, err
}

// RotateGossipKey applies one gossip key rotation step on every member:
// op is install, use, remove or list; key is base64 (empty for list). The
// answer lists each member's key ids, also when the step failed on some.
func (c *Client) RotateGossipKey(ctx context.Context, op, key string) (*topkv1.RotateGossipKeyResponse, error) {
	var out *topkv1.RotateGossipKeyResponse
	_, err := c.call(ctx, "gossip key "+op, retryUnknown, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
		resp, err := n.RotateGossipKey(ctx, connect.NewRequest(&topkv1.RotateGossipKeyRequest{Op: op, Key: key}))
		if err != nil {
			return err
		}
		out = resp.Msg
		return nil
	})
	return out, err
}
