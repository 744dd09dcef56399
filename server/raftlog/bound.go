//go:build logbound

package raftlog

// UnsafeNoSync makes commits skip fdatasync: they are not durable. Only
// for measuring what the syncs cost (server's logbound stores).
func (s *Store) UnsafeNoSync() { s.db.NoSync = true }
