package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/ring"
	"github.com/topkd/topkd/server/failpoint"
)

// DefaultMaxMoves caps the partition moves in flight across the cluster.
const DefaultMaxMoves = 4

// Moves.
//
// Placement changes one partition at a time, as a recorded move: the meta
// leader commits StartMove (the partition's placement entry becomes the
// target), the partition's group leader carries it out (stepMembership: add
// non-voters, promote the caught-up, hand leadership over, remove), and the
// meta leader records each step it observes at that leader (AdvanceMove,
// FinishMove). A new meta leader finds the moves in the meta state and goes
// on observing them; a move whose target lost a node is superseded by one
// to a new target (its replicas that were added are removed again). A
// replica that a finished move left behind deletes its data (dropReplicas).
//
// Caps: one move per partition, at most Config.MaxMoves in flight, and at
// most one move adding a replica to any node, so a node receives one
// snapshot at a time. Partitions missing a replica (a node down or
// leaving) move first.

// reconcileMoves, on the meta leader, writes the first placement table,
// records the progress of moves in flight and starts new ones toward
// ring.Place over the live members. It runs off the reconcile goroutine:
// observing a move asks the partition's leader over the network.
func (n *Node) reconcileMoves(st *metapb.State) {
	if !n.meta.isLeader() || st.Partitions == 0 || len(st.Nodes) == 0 {
		return
	}
	if !n.planning.CompareAndSwap(false, true) {
		return
	}
	n.pushes.Add(1)
	go func() {
		defer n.pushes.Done()
		defer n.planning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := n.planMoves(ctx); err != nil && !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
			n.log.Warn("placement", "err", err)
		}
	}()
}

func (n *Node) planMoves(ctx context.Context) error {
	st, _ := n.metaFSM.state()
	eligible := eligibleMembers(st)
	if len(eligible) == 0 {
		return nil
	}
	if len(st.Placement) != int(st.Partitions) {
		return n.firstPlacement(ctx, st, eligible)
	}
	for _, mv := range st.Moves {
		if ctx.Err() != nil {
			return nil // the node is closing: propose nothing more
		}
		if err := n.observeMove(ctx, mv); err != nil {
			n.log.Debug("observe move", "partition", mv.Partition, "err", err)
		}
	}
	st, _ = n.metaFSM.state()
	current := tableOf(st)
	goal, err := ring.Place(eligible, int(st.Partitions), n.cfg.Replicas, current)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, id := range eligible {
		live[id] = true
	}
	moving := map[uint32]*metapb.Move{}
	incoming := map[string]bool{}
	for _, mv := range st.Moves {
		moving[mv.Partition] = mv
		for _, id := range added(mv.From, mv.To) {
			incoming[id] = true
		}
	}
	inFlight := len(st.Moves)
	for _, p := range moveOrder(current, live) {
		if ctx.Err() != nil {
			return nil
		}
		want := goal.Replicas[p]
		if slices.Equal(current.Replicas[p], want) {
			continue
		}
		supersede := false
		if mv := moving[uint32(p)]; mv != nil {
			if allLive(mv.To, live) {
				continue // in flight, on its way
			}
			supersede = true // its target lost a node: replace it
		} else if inFlight >= n.cfg.MaxMoves {
			continue
		}
		from, own := current.Replicas[p], []string(nil)
		if mv := moving[uint32(p)]; mv != nil {
			from, own = mv.From, added(mv.From, mv.To)
		}
		adds := added(from, want)
		if slices.ContainsFunc(adds, func(id string) bool { return incoming[id] && !slices.Contains(own, id) }) {
			continue // a node receives one replica at a time
		}
		st, _ = n.metaFSM.state()
		mv := &metapb.Move{Partition: uint32(p), From: from, To: want, StartedMs: time.Now().UnixMilli()}
		if _, err := n.applyMeta(ctx, &metapb.Command{Cmd: &metapb.Command_StartMove{StartMove: &metapb.StartMove{
			Epoch: st.PlacementEpoch, Move: mv, Supersede: supersede}}}); err != nil {
			return fmt.Errorf("start moving partition %d: %w", p, err)
		}
		n.log.Info("move started", "partition", p, "from", from, "to", want, "superseding", supersede)
		if err := failpoint.Hit("move-started"); err != nil {
			return err
		}
		for _, id := range adds {
			incoming[id] = true
		}
		if !supersede {
			inFlight++
		}
	}
	return nil
}

// firstPlacement commits a cluster's first placement table whole: its
// groups hold no data anywhere but on their first node yet.
func (n *Node) firstPlacement(ctx context.Context, st *metapb.State, eligible []string) error {
	want, err := ring.Place(eligible, int(st.Partitions), n.cfg.Replicas, ring.Placement{})
	if err != nil {
		return err
	}
	cmd := &metapb.SetPlacement{Epoch: st.PlacementEpoch}
	for _, reps := range want.Replicas {
		cmd.Partitions = append(cmd.Partitions, &metapb.PartitionReplicas{Nodes: reps})
	}
	if _, err := n.applyMeta(ctx, &metapb.Command{Cmd: &metapb.Command_SetPlacement{SetPlacement: cmd}}); err != nil {
		return fmt.Errorf("commit the first placement: %w", err)
	}
	n.log.Info("placement written", "epoch", st.PlacementEpoch+1, "members", eligible)
	return nil
}

// observeMove asks the partition's leader how far its group has come and
// records the step: every target replica a voter (promoted), then the
// group holding exactly the target, committed (finished).
func (n *Node) observeMove(ctx context.Context, mv *metapb.Move) error {
	gs, err := n.groupStatus(ctx, int(mv.Partition))
	if err != nil {
		return err
	}
	allVote := true
	for _, id := range mv.To {
		allVote = allVote && slices.Contains(gs.Voters, id)
	}
	if !allVote {
		return nil
	}
	// Every step is recorded, PROMOTED before the finish, so that a new
	// meta leader, and status, always see where a move stands.
	members := append(slices.Clone(gs.Voters), gs.NonVoters...)
	if mv.Step == metapb.MoveStep_MOVE_STEP_PROMOTED && gs.ConfigCommitted && sameSet(members, mv.To) {
		if _, err := n.applyMeta(ctx, &metapb.Command{Cmd: &metapb.Command_FinishMove{FinishMove: &metapb.FinishMove{
			Partition: mv.Partition, Id: mv.Id}}}); err != nil {
			return err
		}
		n.log.Info("move finished", "partition", mv.Partition, "replicas", mv.To,
			"took", time.Since(time.UnixMilli(mv.StartedMs)).Round(time.Millisecond))
		return failpoint.Hit("move-finished")
	}
	if mv.Step < metapb.MoveStep_MOVE_STEP_PROMOTED {
		if _, err := n.applyMeta(ctx, &metapb.Command{Cmd: &metapb.Command_AdvanceMove{AdvanceMove: &metapb.AdvanceMove{
			Partition: mv.Partition, Id: mv.Id, Step: metapb.MoveStep_MOVE_STEP_PROMOTED}}}); err != nil {
			return err
		}
		n.log.Info("move promoted its new replicas", "partition", mv.Partition, "to", mv.To)
		return failpoint.Hit("move-promoted")
	}
	return nil
}

// groupStatus asks partition p's leader for its replica status, which
// holds the group's configuration.
func (n *Node) groupStatus(ctx context.Context, p int) (*nodev1.ReplicaStatusResponse, error) {
	for attempt := range 8 {
		id, addr, ok := n.partitionLeader(p, attempt)
		if !ok {
			continue
		}
		var (
			resp *nodev1.ReplicaStatusResponse
			err  error
		)
		if id == n.cfg.NodeID {
			resp, err = n.ReplicaStatus(PartitionGroup(p))
		} else if addr != "" {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var r *connect.Response[nodev1.ReplicaStatusResponse]
			r, err = n.peers.client(addr).ReplicaStatus(cctx, connect.NewRequest(&nodev1.ReplicaStatusRequest{Group: PartitionGroup(p)}))
			cancel()
			if err == nil {
				resp = r.Msg
			}
		}
		if err == nil && resp != nil && resp.State == raft.Leader.String() {
			return resp, nil
		}
	}
	return nil, fmt.Errorf("%w: partition %d: no leader answered", ErrNotReady, p)
}

// dropReplicas deletes the data of this node's replicas that placement
// moved away, once the meta group records their move done and the group's
// leader confirms the replica is out of its committed configuration.
// While a replica is being dropped it reports itself not caught up, so it
// is never promoted to voter with data about to vanish.
func (n *Node) dropReplicas(st *metapb.State) {
	if len(st.Placement) != int(st.Partitions) {
		return
	}
	for _, r := range n.parts {
		p := r.id
		if slices.Contains(st.Placement[p].Nodes, n.cfg.NodeID) || slices.ContainsFunc(st.Moves, func(mv *metapb.Move) bool {
			return int(mv.Partition) == p
		}) || !r.hasData() || !r.dropping.CompareAndSwap(false, true) {
			continue
		}
		n.pushes.Add(1)
		go func() {
			defer n.pushes.Done()
			defer r.dropping.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			gs, err := n.groupStatus(ctx, p)
			if err != nil || !gs.ConfigCommitted || slices.Contains(gs.Voters, n.cfg.NodeID) || slices.Contains(gs.NonVoters, n.cfg.NodeID) {
				return // not confirmed out of the group: try again next round
			}
			if err := n.reopenPartition(p, true); err != nil {
				n.log.Error("drop a moved replica's data", "partition", p, "err", err)
				return
			}
			n.log.Info("dropped the data of a replica placement moved away", "partition", p)
		}()
	}
}

// hasData reports whether the replica holds a log or a snapshot.
func (r *localReplica) hasData() bool {
	g := r.group()
	if last, err := g.store.LastIndex(); err != nil || last > 0 {
		return true
	}
	snaps, err := g.snaps.List()
	return err != nil || len(snaps) > 0
}

// eligibleMembers are the members placement may put replicas on.
func eligibleMembers(st *metapb.State) []string {
	var ids []string
	for _, m := range st.Nodes {
		if !m.Leaving && !m.Down {
			ids = append(ids, m.Id)
		}
	}
	return ids
}

func tableOf(st *metapb.State) ring.Placement {
	var t ring.Placement
	for _, pr := range st.Placement {
		t.Replicas = append(t.Replicas, pr.Nodes)
	}
	return t
}

// moveOrder lists partitions missing a live replica first, then the rest,
// by index.
func moveOrder(current ring.Placement, live map[string]bool) []int {
	order := make([]int, len(current.Replicas))
	missing := make([]int, len(current.Replicas))
	for p, reps := range current.Replicas {
		order[p] = p
		for _, id := range reps {
			if !live[id] {
				missing[p]++
			}
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return missing[order[i]] > missing[order[j]] })
	return order
}

// added are the ids of to that from lacks.
func added(from, to []string) []string {
	var out []string
	for _, id := range to {
		if !slices.Contains(from, id) {
			out = append(out, id)
		}
	}
	return out
}

func allLive(ids []string, live map[string]bool) bool {
	for _, id := range ids {
		if !live[id] {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}
