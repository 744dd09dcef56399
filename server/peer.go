package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/topkd/topkd/fsm"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/proto/topkd/node/v1/nodev1connect"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// ErrNotHosted: this node holds no replica of the partition asked for.
var ErrNotHosted = errors.New("partition not hosted here")

// Peer calls carry the node's own errors as Connect codes, one per
// sentinel, so the caller can tell "nothing was proposed, ask the leader"
// from "the outcome is unknown". PeerError and fromPeer are the one table.
var peerCodes = []struct {
	err  error
	code connect.Code
}{
	{ErrNotLeader, connect.CodeFailedPrecondition},
	{ErrNotHosted, connect.CodeFailedPrecondition},
	{ErrUnknownOutcome, connect.CodeAborted},
	{ErrNotReady, connect.CodeUnavailable},
	{ErrOverloaded, connect.CodeResourceExhausted},
	{ErrInvalid, connect.CodeInvalidArgument},
	{fsm.ErrInvalidK, connect.CodeInvalidArgument},
	{fsm.ErrUnknownWindow, connect.CodeOutOfRange},
	{fsm.ErrUnknownLeaderboard, connect.CodeNotFound},
	{ErrLeaderboardExists, connect.CodeAlreadyExists},
	{ErrIdentity, connect.CodePermissionDenied},
	{ErrGossipNotEncrypted, connect.CodeUnimplemented},
}

// PeerError turns an error of a local replica into the Connect error a
// peer's NodeService call answers with.
func PeerError(err error) error {
	if err == nil {
		return nil
	}
	for _, pc := range peerCodes {
		if errors.Is(err, pc.err) {
			return connect.NewError(pc.code, err)
		}
	}
	return connect.NewError(connect.CodeInternal, err)
}

// fromPeer turns a NodeService call's error back into the sentinels. A
// call that got no answer from the peer is ErrUnknownOutcome when it may
// have proposed something, else ErrNotReady: the peer may be down.
func fromPeer(err error, proposes bool) error {
	var ce *connect.Error
	if errors.As(err, &ce) && connect.IsWireError(ce) {
		for _, pc := range peerCodes {
			if ce.Code() == pc.code {
				return fmt.Errorf("%w: %s", pc.err, ce.Message())
			}
		}
		return fmt.Errorf("peer: %w", err)
	}
	switch {
	case proposes:
		return fmt.Errorf("%w: peer: %v", ErrUnknownOutcome, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: peer: %v", ErrNotReady, err)
}

// peers holds one NodeService client per peer HTTP address.
type peers struct {
	http    *http.Client
	scheme  string
	mu      sync.Mutex
	clients map[string]nodev1connect.NodeServiceClient
}

// newPeers calls peers over HTTP/2, with TLS when tlsConf is set and
// cleartext (h2c) otherwise: one connection carries every concurrent call
// to a peer.
func newPeers(tlsConf *tls.Config) *peers {
	var p http.Protocols
	scheme := "http://"
	if tlsConf != nil {
		p.SetHTTP2(true)
		scheme = "https://"
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{Protocols: &p, TLSClientConfig: tlsConf, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second}
	return &peers{http: &http.Client{Transport: tr}, scheme: scheme, clients: map[string]nodev1connect.NodeServiceClient{}}
}

func (ps *peers) client(addr string) nodev1connect.NodeServiceClient {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	c := ps.clients[addr]
	if c == nil {
		c = nodev1connect.NewNodeServiceClient(ps.http, ps.scheme+addr) // Connect protocol, binary protobuf
		ps.clients[addr] = c
	}
	return c
}

func (ps *peers) close() { ps.http.CloseIdleConnections() }

func consistencyPB(c Consistency) nodev1.Consistency {
	switch c {
	case Leader:
		return nodev1.Consistency_CONSISTENCY_LEADER
	case Linearizable:
		return nodev1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return nodev1.Consistency_CONSISTENCY_ANY
}

// ConsistencyFromPeer maps a NodeService consistency to the node's.
func ConsistencyFromPeer(c nodev1.Consistency) Consistency {
	switch c {
	case nodev1.Consistency_CONSISTENCY_LEADER:
		return Leader
	case nodev1.Consistency_CONSISTENCY_LINEARIZABLE:
		return Linearizable
	}
	return Cached
}

// remoteReplica is partition p's replica on the node at a peer address.
type remoteReplica struct {
	p int
	c nodev1connect.NodeServiceClient
}

var _ Replica = remoteReplica{}

func (r remoteReplica) Submit(ctx context.Context, part Part) (*pb.Outcome, error) {
	resp, err := r.c.Submit(ctx, connect.NewRequest(&nodev1.SubmitRequest{Partition: uint32(r.p), Part: part.ProducerPart,
		MaxEventMs: part.MaxEventMs}))
	if err != nil {
		return nil, fromPeer(err, true)
	}
	return resp.Msg.Outcome, nil
}

func (r remoteReplica) TopK(ctx context.Context, lb string, window time.Duration, k int, c Consistency) (fsm.TopKResult, error) {
	resp, err := r.c.TopK(ctx, connect.NewRequest(&nodev1.TopKRequest{Partition: uint32(r.p), Leaderboard: lb,
		WindowMs: window.Milliseconds(), K: uint32(k), Consistency: consistencyPB(c)}))
	if err != nil {
		return fsm.TopKResult{}, fromPeer(err, false)
	}
	m := resp.Msg
	out := fsm.TopKResult{Leaderboard: lb, Incarnation: m.Incarnation, Window: window, WindowStartMs: m.WindowStartMs,
		WindowEndMs: m.WindowEndMs, AppliedIndex: m.AppliedIndex, Approximate: m.Approximate, Rest: m.Rest,
		Items: make([]fsm.Item, len(m.Items))}
	for i, it := range m.Items {
		out.Items[i] = fsm.Item{Item: it.Item, Count: it.Count, Lower: it.Lower, Upper: it.Upper}
	}
	return out, nil
}

func (r remoteReplica) Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (fsm.CountResult, error) {
	resp, err := r.c.Count(ctx, connect.NewRequest(&nodev1.CountRequest{Partition: uint32(r.p), Leaderboard: lb, Item: item,
		WindowMs: window.Milliseconds(), Consistency: consistencyPB(c)}))
	if err != nil {
		return fsm.CountResult{}, fromPeer(err, false)
	}
	m := resp.Msg
	return fsm.CountResult{Incarnation: m.Incarnation, Count: m.Count, Lower: m.Lower, Upper: m.Upper,
		Approximate: m.Approximate, WindowStartMs: m.WindowStartMs, WindowEndMs: m.WindowEndMs, AppliedIndex: m.AppliedIndex}, nil
}

func (r remoteReplica) Distinct(ctx context.Context, lb string, inc uint64, items []string) (uint64, []bool, error) {
	resp, err := r.c.Distinct(ctx, connect.NewRequest(&nodev1.DistinctRequest{Partition: uint32(r.p), Leaderboard: lb,
		Incarnation: inc, Items: items}))
	if err != nil {
		return 0, nil, fromPeer(err, false)
	}
	return resp.Msg.Distinct, resp.Msg.Contains, nil
}

// leaderFinder names the node a call that needs partition p's leader
// should try: the leader this node last heard of, else (attempt by attempt)
// the replicas placement lists, preferred leader first. ok is false when
// no node is known.
type leaderFinder func(p, attempt int) (id, httpAddr string, ok bool)

// routedReplica is partition p as the coordinator sees it on this node:
// this node's replica when it leads (or when any replica may answer), else
// the leader's, over a peer call. A call refused before anything was
// proposed (not the leader, no leader yet) is retried with backoff until
// the caller's deadline; an unknown outcome is retried only for a part
// with a producer id, whose sequence makes the retry count once.
type routedReplica struct {
	p      int
	self   string        // this node's id
	local  *localReplica // nil when this node holds no replica of p
	leader leaderFinder
	peers  *peers
	// hosts reports whether placement puts a replica of p on this node:
	// only then may the local replica answer a read at any consistency.
	hosts func(p int) bool
	// replicated refuses ingest while p has fewer replicas than it should
	// (Node.replicated).
	replicated func(p int) error
	// forwarded counts parts submitted to another node's replica.
	forwarded prometheus.Counter
}

var _ Replica = (*routedReplica)(nil)

// target is where a call that needs the leader goes.
func (r *routedReplica) target(attempt int) (Replica, error) {
	id, addr, ok := r.leader(r.p, attempt)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: partition %d has no leader", ErrNotLeader, r.p)
	case id == r.self && r.local != nil:
		return r.local, nil
	case addr == "":
		return nil, fmt.Errorf("%w: partition %d leader %s has no known address", ErrNotLeader, r.p, id)
	}
	return remoteReplica{p: r.p, c: r.peers.client(addr)}, nil
}

// retry runs call against the current target until it succeeds, fails for
// good, or ctx ends.
func (r *routedReplica) retry(ctx context.Context, again func(error) bool, call func(Replica) error) error {
	wait := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		t, err := r.target(attempt)
		if err == nil {
			err = call(t)
		}
		if err == nil || !again(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func notProposed(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNotHosted)
}

func (r *routedReplica) Submit(ctx context.Context, part Part) (*pb.Outcome, error) {
	var out *pb.Outcome
	idempotent := part.ProducerId != ""
	maybeApplied := false // an earlier attempt of this call may have committed the part
	err := r.retry(ctx, func(err error) bool {
		if errors.Is(err, ErrUnknownOutcome) {
			maybeApplied = true
		}
		return notProposed(err) || errors.Is(err, ErrNotReady) || (idempotent && errors.Is(err, ErrUnknownOutcome))
	}, func(t Replica) (err error) {
		if err := r.replicated(r.p); err != nil {
			return err
		}
		if _, remote := t.(remoteReplica); remote {
			r.forwarded.Inc()
		}
		out, err = t.Submit(ctx, part)
		return err
	})
	if err == nil && maybeApplied && out.GetStatus() == pb.PartStatus_PART_STATUS_DUPLICATE {
		// This node's own retry found its first attempt committed: to the
		// client, who sent the part once, that is the first answer.
		out.Status = pb.PartStatus_PART_STATUS_APPLIED
	}
	return out, err
}

func readAgain(err error) bool { return notProposed(err) || errors.Is(err, ErrNotReady) }

func (r *routedReplica) TopK(ctx context.Context, lb string, window time.Duration, k int, c Consistency) (fsm.TopKResult, error) {
	if c == Cached && r.local != nil && r.hosts(r.p) {
		return r.local.TopK(ctx, lb, window, k, c)
	}
	var out fsm.TopKResult
	err := r.retry(ctx, readAgain, func(t Replica) (err error) {
		out, err = t.TopK(ctx, lb, window, k, c)
		return err
	})
	return out, err
}

func (r *routedReplica) Count(ctx context.Context, lb, item string, window time.Duration, c Consistency) (fsm.CountResult, error) {
	if c == Cached && r.local != nil && r.hosts(r.p) {
		return r.local.Count(ctx, lb, item, window, c)
	}
	var out fsm.CountResult
	err := r.retry(ctx, readAgain, func(t Replica) (err error) {
		out, err = t.Count(ctx, lb, item, window, c)
		return err
	})
	return out, err
}

// Distinct reads this node's replica when it has one: max_items is a
// bound checked before proposal, and a replica's count is close enough.
func (r *routedReplica) Distinct(ctx context.Context, lb string, inc uint64, items []string) (uint64, []bool, error) {
	if r.local != nil && r.hosts(r.p) {
		return r.local.Distinct(ctx, lb, inc, items)
	}
	var (
		n  uint64
		in []bool
	)
	err := r.retry(ctx, readAgain, func(t Replica) (err error) {
		n, in, err = t.Distinct(ctx, lb, inc, items)
		return err
	})
	return n, in, err
}
