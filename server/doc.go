// Package server is one topkd node: the meta Raft group and the partition
// Raft groups (hashicorp/raft; the partitions' logs in the node's shared
// raftlog store, the meta group's in raft-boltdb; every group on one
// multiplexed TCP port), membership (join, placement, leave, dead nodes)
// driven by the meta group with memberlist gossip as a hint, the
// coordinator that routes ingest and scatter-gathers queries over
// partitions here or on peers, the result cache, readiness, and metrics.
//
// It never parses client wire formats (rpc/ does) and never counts (fsm/
// does): it validates, routes, proposes and waits. Times that reach the
// state machines or answers (ingest stamps, ticks, the result cache) come
// from Config.Clock; timeouts, latencies, liveness and move start times use
// the wall clock. Every goroutine is owned by the Node and stopped by Close. See DESIGN.md for the trade-offs.
package server
