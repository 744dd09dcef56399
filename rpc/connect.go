package rpc

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
	"github.com/topkd/topkd/server"
)

// registerConnect mounts the topk.v1 service (Connect, gRPC, gRPC-Web).
func registerConnect(mux *http.ServeMux, n *server.Node, g *guard) {
	auth := connect.WithInterceptors(g.interceptor())
	// Small answers are not worth gzip's CPU; large top-K lists still compress.
	path, h := topkv1connect.NewTopKServiceHandler(&service{n: n}, connect.WithCompressMinBytes(8<<10), connect.WithCodec(protoCodec{}), auth)
	mux.Handle(path, clientErrors(h))
	path, h = grpchealth.NewHandler(&health{n: n})
	mux.Handle(path, clientErrors(h))
	reflector := grpcreflect.NewStaticReflector(topkv1connect.TopKServiceName, grpchealth.HealthV1ServiceName)
	path, h = grpcreflect.NewHandlerV1(reflector, auth)
	mux.Handle(path, clientErrors(h))
	path, h = grpcreflect.NewHandlerV1Alpha(reflector, auth)
	mux.Handle(path, clientErrors(h))
}

// health answers gRPC health checks: serving once the node is ready.
type health struct{ n *server.Node }

func (h *health) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && req.Service != topkv1connect.TopKServiceName {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if h.n.Ready(ctx) != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

type service struct {
	n *server.Node
}

var _ topkv1connect.TopKServiceHandler = (*service)(nil)

func consistency(c topkv1.Consistency, def server.Consistency) server.Consistency {
	switch c {
	case topkv1.Consistency_CONSISTENCY_CACHED:
		return server.Cached
	case topkv1.Consistency_CONSISTENCY_LEADER:
		return server.Leader
	case topkv1.Consistency_CONSISTENCY_LINEARIZABLE:
		return server.Linearizable
	}
	return def
}

func consistencyPB(c server.Consistency) topkv1.Consistency {
	switch c {
	case server.Cached:
		return topkv1.Consistency_CONSISTENCY_CACHED
	case server.Leader:
		return topkv1.Consistency_CONSISTENCY_LEADER
	case server.Linearizable:
		return topkv1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return topkv1.Consistency_CONSISTENCY_UNSPECIFIED
}

func windowPB(d time.Duration, startMs, endMs int64) *topkv1.WindowInfo {
	if d == 0 {
		return &topkv1.WindowInfo{Type: "global", EndUnixMs: endMs}
	}
	return &topkv1.WindowInfo{Type: "sliding", Duration: FormatWindow(d), StartUnixMs: startMs, EndUnixMs: endMs}
}

func (s *service) Ingest(ctx context.Context, req *connect.Request[topkv1.IngestRequest]) (*connect.Response[topkv1.IngestResponse], error) {
	m := req.Msg
	in := server.IngestRequest{Leaderboard: m.Leaderboard, ProducerID: m.ProducerId, Epoch: m.Epoch, Sequence: m.Sequence,
		Events: getEvents()}
	// Node.Ingest keeps no reference to the events once it returns.
	defer func() { putEvents(in.Events) }()
	for _, e := range m.Events {
		in.Events = append(in.Events, server.Event{Item: e.Item, Count: e.Count, TimeMs: e.TimeUnixMs})
	}
	if c := m.Columns; c != nil {
		n := len(c.Items)
		if (len(c.Counts) != 0 && len(c.Counts) != n) || (len(c.TimeUnixMs) != 0 && len(c.TimeUnixMs) != n) {
			return nil, connectErr(badRequest("columns", "%d items, %d counts, %d times: counts and times must be empty or one per item",
				n, len(c.Counts), len(c.TimeUnixMs)))
		}
		for i, item := range c.Items {
			e := server.Event{Item: item}
			if len(c.Counts) > 0 {
				e.Count = c.Counts[i]
			}
			if len(c.TimeUnixMs) > 0 {
				e.TimeMs = c.TimeUnixMs[i]
			}
			in.Events = append(in.Events, e)
		}
	}
	res, err := s.n.Ingest(ctx, in)
	if err != nil {
		return nil, connectErr(err)
	}
	out := &topkv1.IngestResponse{Accepted: res.Accepted, Duplicate: res.Duplicate, Rejected: res.Rejected}
	for d, n := range res.Late {
		out.LateDropped = append(out.LateDropped, &topkv1.LateDropped{Window: FormatWindow(d), Events: n})
	}
	return connect.NewResponse(out), nil
}

func (s *service) TopK(ctx context.Context, req *connect.Request[topkv1.TopKRequest]) (*connect.Response[topkv1.TopKResponse], error) {
	m := req.Msg
	win, err := ParseWindow(m.Window)
	if err != nil {
		return nil, connectErr(badRequest("window", "%v", err))
	}
	k := int(m.K) // 0: the node's default, min(100, k_max)
	a, err := s.n.TopK(ctx, server.TopKQuery{Leaderboard: m.Leaderboard, Window: win, K: k,
		Consistency: consistency(m.Consistency, server.Leader), AllowPartial: m.AllowPartial})
	if err != nil {
		return nil, connectErr(err)
	}
	out := &topkv1.TopKResponse{Leaderboard: a.Leaderboard, Window: windowPB(win, a.WindowStartMs, a.WindowEndMs),
		Approximate: a.Approximate, Guaranteed: a.Guaranteed, MaxError: a.MaxError, Consistency: consistencyPB(a.Consistency),
		AsOfUnixMs: a.AsOf.UnixMilli(), GeneratedAtUnixMs: time.Now().UnixMilli(), Items: make([]*topkv1.RankedItem, len(a.Items))}
	for i, it := range a.Items {
		out.Items[i] = &topkv1.RankedItem{Id: it.Item, Count: it.Count, LowerBound: it.Lower, UpperBound: it.Upper}
	}
	for _, p := range a.Missing {
		out.MissingPartitions = append(out.MissingPartitions, uint32(p))
	}
	return connect.NewResponse(out), nil
}

func (s *service) Count(ctx context.Context, req *connect.Request[topkv1.CountRequest]) (*connect.Response[topkv1.CountResponse], error) {
	m := req.Msg
	win, err := ParseWindow(m.Window)
	if err != nil {
		return nil, connectErr(badRequest("window", "%v", err))
	}
	a, err := s.n.Count(ctx, m.Leaderboard, m.Item, win, consistency(m.Consistency, server.Leader))
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&topkv1.CountResponse{Id: a.Item, Count: a.Count, LowerBound: a.Lower, UpperBound: a.Upper, Approximate: a.Approximate,
		Window: windowPB(win, a.WindowStartMs, a.WindowEndMs), Rank: uint32(a.Rank), Consistency: consistencyPB(a.Consistency)}), nil
}

func leaderboardPB(j leaderboardJSON) *topkv1.Leaderboard {
	return &topkv1.Leaderboard{Name: j.Name, Mode: j.Mode, Windows: j.Windows, KMax: j.KMax, Clock: j.Clock,
		AllowedLateness: j.AllowedLateness, MaxItems: j.MaxItems, Epsilon: j.Epsilon, Delta: j.Delta, Capacity: j.Capacity, FilterCells: j.FilterCells,
		Incarnation: j.Incarnation, Version: j.Version}
}

func (s *service) CreateLeaderboard(ctx context.Context, req *connect.Request[topkv1.CreateLeaderboardRequest]) (*connect.Response[topkv1.CreateLeaderboardResponse], error) {
	l := req.Msg.Leaderboard
	if l == nil {
		return nil, connectErr(badRequest("leaderboard", "missing"))
	}
	windows := l.Windows
	if len(windows) == 0 {
		windows = nil
	}
	c, err := ConfigFromFields(l.Name, l.Mode, windows, l.KMax, l.Clock, l.AllowedLateness, l.MaxItems, l.Epsilon, l.Delta, l.Capacity, l.FilterCells)
	if err != nil {
		return nil, connectErr(err)
	}
	created, err := s.n.CreateLeaderboard(ctx, c)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&topkv1.CreateLeaderboardResponse{Leaderboard: leaderboardPB(ConfigJSON(created))}), nil
}

func (s *service) ListLeaderboards(ctx context.Context, req *connect.Request[topkv1.ListLeaderboardsRequest]) (*connect.Response[topkv1.ListLeaderboardsResponse], error) {
	out := &topkv1.ListLeaderboardsResponse{}
	for _, c := range s.n.Leaderboards() {
		out.Leaderboards = append(out.Leaderboards, leaderboardPB(ConfigJSON(c)))
	}
	return connect.NewResponse(out), nil
}

func (s *service) DescribeLeaderboard(ctx context.Context, req *connect.Request[topkv1.DescribeLeaderboardRequest]) (*connect.Response[topkv1.DescribeLeaderboardResponse], error) {
	st, err := s.n.DescribeLeaderboard(req.Msg.Name)
	if err != nil {
		return nil, connectErr(err)
	}
	out := &topkv1.DescribeLeaderboardResponse{Leaderboard: leaderboardPB(ConfigJSON(st.Config)), Accepted: st.Accepted, Rejected: st.Rejected}
	for _, w := range st.Windows {
		out.Windows = append(out.Windows, &topkv1.WindowStats{Window: FormatWindow(w.Window), DistinctItems: uint64(w.PositiveItems), LateDropped: w.LateDropped})
	}
	return connect.NewResponse(out), nil
}

func (s *service) DropLeaderboard(ctx context.Context, req *connect.Request[topkv1.DropLeaderboardRequest]) (*connect.Response[topkv1.DropLeaderboardResponse], error) {
	if err := s.n.DropLeaderboard(ctx, req.Msg.Name); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&topkv1.DropLeaderboardResponse{}), nil
}

func (s *service) Status(ctx context.Context, req *connect.Request[topkv1.StatusRequest]) (*connect.Response[topkv1.StatusResponse], error) {
	st := s.n.Status(ctx)
	out := &topkv1.StatusResponse{Node: &topkv1.NodeStatus{NodeId: st.NodeID, HttpAddr: st.HTTPAddr, RaftAddr: st.RaftAddr, Ready: st.Ready},
		Partitions: uint32(len(st.Partitions)), MetaLeader: st.MetaLeader, StateBytes: st.HeapBytes,
		IngestLimits: &topkv1.IngestLimits{MaxBatchEvents: uint32(st.Limits.MaxBatchEvents), MaxItemBytes: uint32(st.Limits.MaxItemBytes),
			MaxFutureSkewMs: st.Limits.MaxFutureSkew.Milliseconds(), MaxEventCount: server.MaxEventCount}}
	for _, m := range st.Members {
		ns := &topkv1.NodeStatus{NodeId: m.ID, HttpAddr: m.HTTPAddr, RaftAddr: m.RaftAddr, Alive: m.Alive, Leaving: m.Leaving,
			Down: m.Down, MetaVoter: m.MetaVoter, Replicas: uint32(m.Replicas)}
		if m.ID == st.NodeID {
			ns.Ready = st.Ready
			ns.Alive = true
			out.Node = ns
		}
		out.Nodes = append(out.Nodes, ns)
	}
	if len(out.Nodes) == 0 {
		out.Nodes = append(out.Nodes, out.Node)
	}
	for _, mv := range st.Moves {
		out.Moves = append(out.Moves, &topkv1.MoveStatus{Partition: uint32(mv.Partition), From: mv.From, To: mv.To, Step: mv.Step,
			StartedMs: mv.Started.UnixMilli()})
	}
	for _, p := range st.Partitions {
		out.PartitionStatus = append(out.PartitionStatus, &topkv1.PartitionStatus{Partition: uint32(p.Partition), State: p.State,
			Leader: p.Leader, CommitIndex: p.CommitIndex, AppliedIndex: p.AppliedIndex, LastSnapshotIndex: p.LastSnapshotIndex,
			DistinctItems: p.DistinctItems, IngestEventsPerSecond: p.IngestEventsPerSecond, Placement: p.Placement,
			Voters: p.Voters, NonVoters: p.NonVoters, LocalAppliedIndex: p.LocalAppliedIndex})
	}
	return connect.NewResponse(out), nil
}

// eventBufs pools the events of Ingest calls, a request's largest allocation.
var eventBufs = sync.Pool{New: func() any { return new([]server.Event) }}

// maxPooledEvents keeps the buffers of the largest requests out of the pool.
const maxPooledEvents = 1 << 14

func getEvents() []server.Event {
	return (*eventBufs.Get().(*[]server.Event))[:0]
}

func putEvents(evs []server.Event) {
	if cap(evs) > maxPooledEvents {
		return
	}
	clear(evs) // hold no request's strings
	evs = evs[:0]
	eventBufs.Put(&evs)
}

// Leave drains a node and removes it, streaming progress.
func (s *service) Leave(ctx context.Context, req *connect.Request[topkv1.LeaveRequest], stream *connect.ServerStream[topkv1.LeaveResponse]) error {
	if req.Msg.NodeId == "" {
		return connectErr(fmt.Errorf("%w: node_id: empty", server.ErrInvalid))
	}
	var sendErr error
	err := s.n.Leave(ctx, req.Msg.NodeId, req.Msg.Force, func(msg string, left int) {
		if sendErr != nil {
			return
		}
		m := &topkv1.LeaveResponse{Message: msg}
		if left >= 0 {
			m.ReplicasLeft = uint32(left)
		}
		sendErr = stream.Send(m)
	})
	if err != nil {
		return connectErr(err)
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&topkv1.LeaveResponse{Message: req.Msg.NodeId + " left the cluster", Done: true})
}

// VerifyReplicas compares the replicas' state digests at a checksum entry.
func (s *service) VerifyReplicas(ctx context.Context, _ *connect.Request[topkv1.VerifyReplicasRequest]) (*connect.Response[topkv1.VerifyReplicasResponse], error) {
	return connect.NewResponse(verifyPB(s.n.VerifyReplicas(ctx))), nil
}

func verifyPB(parts []server.PartitionDigests) *topkv1.VerifyReplicasResponse {
	out := &topkv1.VerifyReplicasResponse{Consistent: true}
	for _, p := range parts {
		pd := &topkv1.PartitionDigests{Partition: uint32(p.Partition), Index: p.Index, Agree: p.Agree}
		if p.Err != nil {
			pd.Error = p.Err.Error()
		}
		for _, r := range p.Replicas {
			rd := &topkv1.ReplicaDigest{NodeId: r.NodeID, Note: r.Note}
			if r.Found {
				rd.Digest = fmt.Sprintf("%016x", r.Digest)
			}
			pd.Replicas = append(pd.Replicas, rd)
		}
		out.Consistent = out.Consistent && p.Agree
		out.Partitions = append(out.Partitions, pd)
	}
	return out
}

// Rebalance spreads ingest load over the nodes, streaming progress.
func (s *service) Rebalance(ctx context.Context, req *connect.Request[topkv1.RebalanceRequest], stream *connect.ServerStream[topkv1.RebalanceResponse]) error {
	var sendErr error
	last := server.RebalanceProgress{}
	err := s.n.Rebalance(ctx, req.Msg.DryRun, func(p server.RebalanceProgress) {
		last = p
		if sendErr == nil {
			sendErr = stream.Send(&topkv1.RebalanceResponse{Message: p.Message, Planned: uint32(p.Planned), Made: uint32(p.Made)})
		}
	})
	if err != nil {
		return connectErr(err)
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&topkv1.RebalanceResponse{Message: "done", Planned: uint32(last.Planned), Made: uint32(last.Made), Done: true})
}
