//go:build logbound

package raftlog

// UnsafeNoSync makes commits skip fdatasync: they are not durable. Only
// for measuring what the syncs cost (server's logbound stores).
func (s *Store) UnsafeNoSync() { s.db.NoSync = true }

// UnsafeOneSync makes a commit write its pages and meta page unsynced and
// then fdatasync once: the cost of a format that needs one sync per commit.
// Not crash-safe in bbolt (the meta page may reach the disk before the
// pages it points to).
func (s *Store) UnsafeOneSync() {
	s.db.NoSync = true
	s.afterCommit = s.db.Sync
}
