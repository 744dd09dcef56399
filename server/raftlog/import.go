package raftlog

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Source is a group's log and stable store in another format (a
// raft-boltdb file of an earlier release).
type Source interface {
	raft.LogStore
	Get(key []byte) ([]byte, error)
}

// StableKeys are the stable keys hashicorp/raft writes: its term and vote.
var StableKeys = [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm"), []byte("LastVoteCand")}

// Imported reports whether Import completed for group id.
func (s *Store) Imported(id uint32) (bool, error) {
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		if gb := tx.Bucket(groupKey(id)); gb != nil {
			ok = gb.Get(keyImported) != nil
		}
		return nil
	})
	return ok, err
}

// Import replaces group id with every entry and stable key of src, and marks
// it imported, in one commit: a crash before the commit leaves the group as
// it was, after it leaves the whole copy. keys are the stable keys to copy.
func (s *Store) Import(id uint32, src Source, keys [][]byte) (int, error) {
	first, err := src.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("read first index: %w", err)
	}
	last, err := src.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("read last index: %w", err)
	}
	// Read everything first: a damaged source fails the import alone, never
	// a commit (which would stop the store).
	var kv [][]byte
	var l raft.Log
	for i := first; first > 0 && i <= last; i++ {
		if err := src.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue // raft tolerates gaps; keep the source as it is
			}
			return 0, fmt.Errorf("read entry %d: %w", i, err)
		}
		kv = append(kv, indexKey(i), appendLog(nil, &l))
	}
	var stable [][]byte
	for _, k := range keys {
		v, err := src.Get(k)
		if err != nil {
			if err.Error() == ErrKeyNotFound.Error() {
				continue
			}
			return 0, fmt.Errorf("read stable key %s: %w", k, err)
		}
		stable = append(stable, append([]byte(nil), k...), v)
	}
	key := groupKey(id)
	w := writePool.Get().(*write)
	w.group, w.entries, w.bytes = id, len(kv)/2, 0
	w.apply = func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(key); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return err
		}
		gb, err := tx.CreateBucket(key)
		if err != nil {
			return err
		}
		lb, err := gb.CreateBucket(bucketLogs)
		if err != nil {
			return err
		}
		sb, err := gb.CreateBucket(bucketStable)
		if err != nil {
			return err
		}
		for i := 0; i < len(kv); i += 2 {
			if err := lb.Put(kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		for i := 0; i < len(stable); i += 2 {
			if err := sb.Put(stable[i], stable[i+1]); err != nil {
				return err
			}
		}
		return gb.Put(keyImported, []byte{1})
	}
	return len(kv) / 2, s.submit(w)
}
