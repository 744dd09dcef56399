package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/server/failpoint"
)

// openIncarnation opens partition p's raft instance over a new state
// machine, which raft fills from the snapshot and log on disk.
func (n *Node) openIncarnation(p int) (*incarnation, error) {
	f := fsm.New(fsm.Options{})
	store, err := n.logs.store(p)
	if err != nil {
		return nil, err
	}
	gc := n.groupConfig(PartitionGroup(p), partitionName(p), &timedFSM{readFSM: f, m: n.metrics})
	gc.store = store
	gc.onStuck = func() {
		if err := n.reopenPartition(p, false); err != nil {
			n.log.Error("reopen a stuck partition", "partition", p, "err", err)
		}
	}
	g, err := openGroup(gc)
	if err != nil {
		return nil, err
	}
	return &incarnation{g: g, fsm: f}, nil
}

func partitionName(p int) string { return "p" + strconv.Itoa(p) }

// reopenPartition shuts partition p's raft instance down and opens a new
// one over a new state machine. With drop, the replica's log, stable state
// and snapshots are deleted first, so it comes back empty: a replica that
// placement moved away, once the meta group recorded the move done. Without
// drop it replays its own data: the way out of a raft instance whose
// leadership transfer never finished (hashicorp/raft #696).
//
// Calls in flight on the old instance fail as a leader change does
// (not the leader, or an unknown outcome that producers retry).
func (n *Node) reopenPartition(p int, drop bool) error {
	r := n.parts[p]
	r.reopening.Lock()
	defer r.reopening.Unlock()
	select {
	case <-n.stop:
		return fmt.Errorf("%w: node shutting down", ErrNotReady)
	default:
	}
	old := r.cur.Load()
	start := time.Now()
	if err := old.g.close(); err != nil {
		n.log.Warn("reopen: close the old raft instance", "partition", p, "err", err)
	}
	if drop {
		if err := failpoint.Hit("drop-replica"); err != nil {
			return err
		}
		if err := n.dropPartitionData(p); err != nil {
			// The old instance is closed: leave it so that every call fails
			// (not the leader) rather than open over half-deleted data.
			return fmt.Errorf("partition %d: drop its data: %w", p, err)
		}
	}
	inc, err := n.openIncarnation(p)
	if err != nil {
		return fmt.Errorf("partition %d: reopen: %w", p, err)
	}
	r.cur.Store(inc)
	r.snapAccepted.Store(0)
	n.log.Info("reopened a partition's replica", "partition", p, "dropped_data", drop, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// dropPartitionData deletes partition p's log and stable state (from the
// shared store, or its own raft.db) and its snapshots.
func (n *Node) dropPartitionData(p int) error {
	dir := filepath.Join(n.cfg.DataDir, partitionName(p))
	// First, durably: a crash in the middle must not leave a floor above
	// what the half-dropped replica has.
	if err := n.manifest.reset(partitionName(p)); err != nil {
		return err
	}
	if n.logs.shared != nil {
		if err := n.logs.shared.Drop(PartitionGroup(p)); err != nil {
			return err
		}
	} else if err := os.Remove(filepath.Join(dir, "raft.db")); err != nil && !os.IsNotExist(err) {
		return err
	}
	// A crash here leaves snapshots without a log: the replica restores the
	// newest one, still holds data, and is dropped again.
	if err := failpoint.Hit("drop-replica-half"); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
		return err
	}
	return syncDir(dir)
}
