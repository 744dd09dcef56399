// Package server is one topkd node: the meta Raft group and the partition
// Raft groups (hashicorp/raft over raft-boltdb, all on one multiplexed TCP
// port), the per-partition ingest combiners, the scatter-gather query path
// with its result cache, readiness, and metrics.
//
// It never parses wire formats (rpc/ does) and never counts (fsm/ does):
// it validates, routes, proposes and waits. Every clock read goes through
// Config.Clock; every goroutine is owned by the Node and stopped by Close.
// See DESIGN.md for the trade-offs.
package server
