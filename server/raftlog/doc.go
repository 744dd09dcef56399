// Package raftlog keeps the Raft logs and stable state of many Raft groups in
// one bbolt file per node, with group commit: every write that arrives while
// a commit is in progress goes into the next one, so all groups share one
// transaction and one pair of fdatasync calls (TiKV's raft-engine, dragonboat
// and CockroachDB share one log across groups for the same reason).
//
// A Group is a raft.LogStore and raft.StableStore with raft-boltdb's
// semantics. A failed commit poisons the Store: every waiting and later call
// fails, and Options.Fatal is told once so the process can stop; a failed
// fsync is never retried, because the page cache may have dropped the data.
//
// raftlog never decides placement or reads configuration; it stores bytes for
// group ids it is given. See DESIGN.md.
package raftlog
