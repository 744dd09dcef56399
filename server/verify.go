package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/fsm"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// ReplicaDigest is one replica's digest of its state at a checksum entry.
type ReplicaDigest struct {
	NodeID string
	Digest uint64
	Found  bool
	Note   string // why there is no digest
}

// PartitionDigests is what VerifyReplicas found for one partition.
type PartitionDigests struct {
	Partition int
	Index     uint64 // the checksum entry's log index
	Replicas  []ReplicaDigest
	Agree     bool // the replicas that recorded a digest agree
	Err       error
}

// VerifyReplicas has every partition's leader propose a checksum command,
// then asks each replica for the digest it recorded on applying it: equal
// digests at the same log index mean the replicas hold the same state. A
// replica that caught up from a snapshot taken after the entry never
// applies it and reports no digest, which is not a disagreement.
func (n *Node) VerifyReplicas(ctx context.Context) []PartitionDigests {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultVerifyTimeout)
		defer cancel()
	}
	out := make([]PartitionDigests, n.nparts)
	var wg sync.WaitGroup
	for p := range n.nparts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[p] = n.verifyPartition(ctx, p)
		}()
	}
	wg.Wait()
	return out
}

func (n *Node) verifyPartition(ctx context.Context, p int) PartitionDigests {
	res := PartitionDigests{Partition: p}
	mark, err := n.checksumOnLeader(ctx, p)
	if err != nil {
		res.Err = err
		return res
	}
	res.Index = mark.Index
	res.Agree = true
	var first *uint64
	for _, id := range append(mark.Voters, mark.NonVoters...) {
		d := n.replicaDigest(ctx, p, id, mark)
		if d.Found {
			if first == nil {
				first = &d.Digest
			} else if *first != d.Digest {
				res.Agree = false
			}
		}
		res.Replicas = append(res.Replicas, d)
	}
	return res
}

// checksumOnLeader proposes the checksum command on partition p's leader.
func (n *Node) checksumOnLeader(ctx context.Context, p int) (*nodev1.ChecksumResponse, error) {
	var last error = fmt.Errorf("%w: partition %d has no leader", ErrNotLeader, p)
	for attempt := 0; ; attempt++ {
		id, addr, ok := n.partitionLeader(p, attempt)
		switch {
		case ok && id == n.cfg.NodeID:
			resp, err := n.Checksum(ctx, PartitionGroup(p))
			if err == nil {
				return resp, nil
			}
			last = err
		case ok && addr != "":
			resp, err := n.peers.client(addr).Checksum(ctx, connect.NewRequest(&nodev1.ChecksumRequest{Group: PartitionGroup(p)}))
			if err == nil {
				return resp.Msg, nil
			}
			last = fmt.Errorf("checksum on %s: %w", id, fromPeer(err, true))
		}
		select {
		case <-ctx.Done():
			return nil, last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// defaultVerifyTimeout bounds VerifyReplicas for a caller without a deadline.
const defaultVerifyTimeout = 30 * time.Second

// unreachableAfter is how long VerifyReplicas retries a replica that does
// not answer.
const unreachableAfter = 3 * time.Second

// replicaDigest polls node id's replica of p until it has applied the
// checksum entry.
func (n *Node) replicaDigest(ctx context.Context, p int, id string, mark *nodev1.ChecksumResponse) ReplicaDigest {
	d := ReplicaDigest{NodeID: id}
	status := func() (*nodev1.ReplicaStatusResponse, error) { return n.ReplicaStatus(PartitionGroup(p)) }
	if id != n.cfg.NodeID {
		addr := n.memberHTTP(id)
		if addr == "" {
			d.Note = "no known address"
			return d
		}
		status = func() (*nodev1.ReplicaStatusResponse, error) {
			resp, err := n.peers.client(addr).ReplicaStatus(ctx, connect.NewRequest(&nodev1.ReplicaStatusRequest{Group: PartitionGroup(p)}))
			if err != nil {
				return nil, fromPeer(err, false)
			}
			return resp.Msg, nil
		}
	}
	var failingSince time.Time
	for {
		resp, err := status()
		if err != nil {
			// A replica down for a while is reported, not waited for.
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > unreachableAfter {
				d.Note = err.Error()
				return d
			}
		} else {
			failingSince = time.Time{}
			for _, r := range resp.Digests {
				if r.Id == mark.Id {
					d.Digest, d.Found = r.Digest, true
					return d
				}
			}
			if resp.AppliedIndex >= mark.Index {
				d.Note = fmt.Sprintf("restored from a snapshot past index %d; no digest", mark.Index)
				return d
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				d.Note = err.Error()
			} else {
				d.Note = fmt.Sprintf("applied %d of %d when time ran out", resp.AppliedIndex, mark.Index)
			}
			return d
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Checksum proposes a checksum command in partition group's log, on its
// leader, and answers the command's id and index and the group's
// configuration at that point.
func (n *Node) Checksum(ctx context.Context, group uint32) (*nodev1.ChecksumResponse, error) {
	p := int(group) - 1
	if p < 0 || p >= len(n.parts) {
		return nil, fmt.Errorf("%w: group %d", ErrNotHosted, group)
	}
	g := n.parts[p].group()
	if !g.isLeader() {
		return nil, ErrNotLeader
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := binary.LittleEndian.Uint64(b[:])
	data, err := fsm.EncodeChecksum(&pb.Checksum{Id: id, LeaderTimeMs: time.Now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := g.apply(data, timeout)
	if err := f.Error(); err != nil {
		if err == raft.ErrNotLeader || err == raft.ErrLeadershipLost {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("%w: checksum: %v", ErrUnknownOutcome, err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	out := &nodev1.ChecksumResponse{Id: id, Index: f.Index()}
	out.Voters, out.NonVoters = g.servers()
	return out, nil
}

// digests are the checksum records of a partition group's replica here.
func (n *Node) digests(group uint32) []*nodev1.StateDigest {
	p := int(group) - 1
	if p < 0 || p >= len(n.parts) {
		return nil
	}
	var out []*nodev1.StateDigest
	for _, r := range n.parts[p].fsm().Checksums() {
		out = append(out, &nodev1.StateDigest{Id: r.ID, Index: r.Index, Digest: r.Digest})
	}
	return out
}
