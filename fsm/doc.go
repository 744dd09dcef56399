// Package fsm is the deterministic counting state machine that every replica
// of a partition's Raft group applies: leaderboards with exact per-window
// counts, an indexed min-heap with count classes for top-K, tumbling buckets
// for sliding windows, a per-producer deduplication table, checksums, and a
// streamed, checksummed snapshot format. Leaderboards in the approximate
// modes (cms, spacesaving) keep the structures of package sketch instead,
// with deterministic bounds on every answer.
//
// The package never reads the clock, never draws random numbers and never
// lets Go map iteration order reach its state or answers: time enters only
// through commands (the leader's timestamp and event times), so the same log
// gives byte-identical snapshots on every replica. It starts no goroutines
// and does no networking. Readers (TopK, Count, Stats) may run concurrently
// with ApplyBatch, Snapshot and Restore.
//
// A command that fails its CRC32C or has an unknown, non-ignorable type stops
// the replica through Options.OnFatal: crashing beats diverging. Validation of
// outside input happens before proposal, in the server, so well-formed but
// semantically stale commands (old incarnations, duplicates) are handled here
// deterministically and counted, never fatal.
//
// See DESIGN.md for the structures chosen and their costs.
package fsm
