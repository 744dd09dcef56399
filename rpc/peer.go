package rpc

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/proto/topkd/node/v1/nodev1connect"
	"github.com/topkd/topkd/server"
)

// registerPeer mounts the node-to-node service: each call reaches this
// node's own replica of a partition and never travels on. Its errors use
// the peer table (server.PeerError), not the client API's codes.
func registerPeer(mux *http.ServeMux, n *server.Node, g *guard) {
	path, h := nodev1connect.NewNodeServiceHandler(&peer{n: n})
	mux.Handle(path, g.nodesOnly(h))
}

type peer struct{ n *server.Node }

var _ nodev1connect.NodeServiceHandler = (*peer)(nil)

func (p *peer) replica(partition uint32) (server.Replica, error) {
	r, err := p.n.LocalReplica(int(partition))
	return r, server.PeerError(err)
}

func (p *peer) Submit(ctx context.Context, req *connect.Request[nodev1.SubmitRequest]) (*connect.Response[nodev1.SubmitResponse], error) {
	r, err := p.replica(req.Msg.Partition)
	if err != nil {
		return nil, err
	}
	if req.Msg.Part == nil || len(req.Msg.Part.Boards) != 1 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errMalformedPart)
	}
	out, err := r.Submit(ctx, server.Part{ProducerPart: req.Msg.Part, MaxEventMs: req.Msg.MaxEventMs})
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(&nodev1.SubmitResponse{Outcome: out}), nil
}

func (p *peer) TopK(ctx context.Context, req *connect.Request[nodev1.TopKRequest]) (*connect.Response[nodev1.TopKResponse], error) {
	r, err := p.replica(req.Msg.Partition)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	res, err := r.TopK(ctx, m.Leaderboard, time.Duration(m.WindowMs)*time.Millisecond, int(m.K), server.ConsistencyFromPeer(m.Consistency))
	if err != nil {
		return nil, server.PeerError(err)
	}
	out := &nodev1.TopKResponse{Incarnation: res.Incarnation, WindowStartMs: res.WindowStartMs, WindowEndMs: res.WindowEndMs,
		AppliedIndex: res.AppliedIndex, Approximate: res.Approximate, Rest: res.Rest, Items: make([]*nodev1.Item, len(res.Items))}
	for i, it := range res.Items {
		out.Items[i] = &nodev1.Item{Item: it.Item, Count: it.Count, Lower: it.Lower, Upper: it.Upper}
	}
	return connect.NewResponse(out), nil
}

func (p *peer) Count(ctx context.Context, req *connect.Request[nodev1.CountRequest]) (*connect.Response[nodev1.CountResponse], error) {
	r, err := p.replica(req.Msg.Partition)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	res, err := r.Count(ctx, m.Leaderboard, m.Item, time.Duration(m.WindowMs)*time.Millisecond, server.ConsistencyFromPeer(m.Consistency))
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(&nodev1.CountResponse{Incarnation: res.Incarnation, Count: res.Count, Lower: res.Lower,
		Upper: res.Upper, Approximate: res.Approximate, WindowStartMs: res.WindowStartMs, WindowEndMs: res.WindowEndMs,
		AppliedIndex: res.AppliedIndex}), nil
}

func (p *peer) Distinct(ctx context.Context, req *connect.Request[nodev1.DistinctRequest]) (*connect.Response[nodev1.DistinctResponse], error) {
	r, err := p.replica(req.Msg.Partition)
	if err != nil {
		return nil, err
	}
	n, in, err := r.Distinct(ctx, req.Msg.Leaderboard, req.Msg.Incarnation, req.Msg.Items)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(&nodev1.DistinctResponse{Distinct: n, Contains: in}), nil
}

func (p *peer) Join(ctx context.Context, req *connect.Request[nodev1.JoinRequest]) (*connect.Response[nodev1.JoinResponse], error) {
	resp, err := p.n.Join(ctx, req.Msg.Node)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(resp), nil
}

func (p *peer) ApplyMeta(ctx context.Context, req *connect.Request[nodev1.ApplyMetaRequest]) (*connect.Response[nodev1.ApplyMetaResponse], error) {
	cfg, err := p.n.ApplyMeta(ctx, req.Msg.Command)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(&nodev1.ApplyMetaResponse{Config: cfg}), nil
}

func (p *peer) ReplicaStatus(_ context.Context, req *connect.Request[nodev1.ReplicaStatusRequest]) (*connect.Response[nodev1.ReplicaStatusResponse], error) {
	resp, err := p.n.ReplicaStatus(req.Msg.Group)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(resp), nil
}

func (p *peer) Checksum(ctx context.Context, req *connect.Request[nodev1.ChecksumRequest]) (*connect.Response[nodev1.ChecksumResponse], error) {
	resp, err := p.n.Checksum(ctx, req.Msg.Group)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(resp), nil
}

func (p *peer) GossipKey(_ context.Context, req *connect.Request[nodev1.GossipKeyRequest]) (*connect.Response[nodev1.GossipKeyResponse], error) {
	ids, err := p.n.GossipKey(req.Msg.Op, req.Msg.Key)
	if err != nil {
		return nil, server.PeerError(err)
	}
	return connect.NewResponse(&nodev1.GossipKeyResponse{KeyIds: ids}), nil
}
