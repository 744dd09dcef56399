package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	"github.com/topkd/topkd/ring"
)

// rebalanceTolerance: a node carrying up to this multiple of the mean load
// is not moved from.
const rebalanceTolerance = 1.1

// RebalanceProgress is one report of Rebalance.
type RebalanceProgress struct {
	Message       string
	Planned, Made int
}

// Rebalance spreads ingest load over the nodes: it reads each partition's
// ingest rate at its leader, plans swaps with ring.Rebalance (leaderships
// first, then replicas; every node keeps its count of each, so placement
// keeps the result), and makes them as moves, one partition at a time for
// replicas so a node receives one new replica at a time. With dryRun it
// reports the plan only. It returns when the moves it started are done.
func (n *Node) Rebalance(ctx context.Context, dryRun bool, progress func(RebalanceProgress)) error {
	st, _ := n.metaFSM.state()
	if len(st.Placement) != int(st.Partitions) || st.Partitions == 0 {
		return fmt.Errorf("%w: no placement table yet", ErrNotReady)
	}
	rates := make([]float64, st.Partitions)
	for p := range rates {
		gs, err := n.groupStatus(ctx, p)
		if err != nil {
			return err
		}
		rates[p] = gs.IngestEventsPerSecond
	}
	table := tableOf(st)
	swaps := ring.Rebalance(table, rates, rebalanceTolerance, 2*int(st.Partitions))
	leadBefore, repBefore := ring.PeakLoad(ring.LeaderLoad(table, rates)), ring.PeakLoad(ring.ReplicaLoad(table, rates))
	after := table
	for _, s := range swaps {
		after = s.Apply(after)
	}
	progress(RebalanceProgress{Planned: len(swaps), Message: fmt.Sprintf(
		"%d swaps planned: busiest leader %.0f -> %.0f events/s, busiest replica %.0f -> %.0f events/s",
		len(swaps), leadBefore, ring.PeakLoad(ring.LeaderLoad(after, rates)), repBefore, ring.PeakLoad(ring.ReplicaLoad(after, rates)))})
	if dryRun || len(swaps) == 0 {
		return nil
	}
	for i, s := range swaps {
		kind := "replica"
		if s.Leader {
			kind = "leadership"
		}
		progress(RebalanceProgress{Planned: len(swaps), Made: i, Message: fmt.Sprintf(
			"swapping %s: %s gives partition %d (%.0f events/s) to %s, takes partition %d (%.0f events/s)",
			kind, s.A, s.PA, rates[s.PA], s.B, s.PB, rates[s.PB])})
		for _, p := range []int{s.PA, s.PB} {
			if err := n.moveTo(ctx, p, s, !s.Leader); err != nil {
				return fmt.Errorf("swap %d of %d: %w", i+1, len(swaps), err)
			}
		}
	}
	if err := n.waitMoves(ctx, nil); err != nil {
		return err
	}
	progress(RebalanceProgress{Planned: len(swaps), Made: len(swaps), Message: fmt.Sprintf("%d swaps made", len(swaps))})
	return nil
}

// moveTo starts the move that makes partition p's replicas what swap s
// makes them, once p has no move in flight (and, with alone, once no move
// is in flight at all: one new replica per node at a time).
func (n *Node) moveTo(ctx context.Context, p int, s ring.Swap, alone bool) error {
	for attempt := 0; ; attempt++ {
		if err := n.waitMoves(ctx, func(mv *metapb.Move) bool { return alone || int(mv.Partition) == p }); err != nil {
			return err
		}
		st, _ := n.metaFSM.state()
		want := s.Apply(tableOf(st)).Replicas[p]
		from := st.Placement[p].Nodes
		if slices.Equal(from, want) {
			return nil
		}
		mv := &metapb.Move{Partition: uint32(p), From: from, To: want, StartedMs: time.Now().UnixMilli()}
		_, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_StartMove{StartMove: &metapb.StartMove{
			Epoch: st.PlacementEpoch, Move: mv}}})
		if err == nil {
			n.log.Info("rebalance: move started", "partition", p, "from", from, "to", want)
			return nil
		}
		// A placement change meanwhile, this node's meta replica behind the
		// leader's, or a meta election: read the table again.
		if ctx.Err() != nil || attempt >= 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMoves waits until no move in flight matches (nil: any move).
func (n *Node) waitMoves(ctx context.Context, match func(*metapb.Move) bool) error {
	for {
		st, changed := n.metaFSM.state()
		if !slices.ContainsFunc(st.Moves, func(mv *metapb.Move) bool { return match == nil || match(mv) }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d moves in flight: %w", len(st.Moves), ctx.Err())
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}
