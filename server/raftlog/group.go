package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Group is one Raft group's log and stable store inside a Store.
type Group struct {
	s   *Store
	id  uint32
	key []byte
}

var (
	_ raft.LogStore    = (*Group)(nil)
	_ raft.StableStore = (*Group)(nil)
)

// ID is the group's id in the store.
func (g *Group) ID() uint32 { return g.id }

func (g *Group) bucket(tx *bbolt.Tx, name []byte) *bbolt.Bucket {
	gb := tx.Bucket(g.key)
	if gb == nil {
		return nil
	}
	return gb.Bucket(name)
}

func (g *Group) createBucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	gb, err := tx.CreateBucketIfNotExists(g.key)
	if err != nil {
		return nil, err
	}
	return gb.CreateBucketIfNotExists(name)
}

func indexKey(i uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), i) }

// FirstIndex is the first stored index, 0 when there is none.
func (g *Group) FirstIndex() (uint64, error) {
	var idx uint64
	err := g.s.view(func(tx *bbolt.Tx) error {
		if b := g.bucket(tx, bucketLogs); b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
		}
		return nil
	})
	return idx, err
}

// LastIndex is the last stored index, 0 when there is none.
func (g *Group) LastIndex() (uint64, error) {
	var idx uint64
	err := g.s.view(func(tx *bbolt.Tx) error {
		if b := g.bucket(tx, bucketLogs); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
		}
		return nil
	})
	return idx, err
}

// GetLog reads one entry; a missing one is raft.ErrLogNotFound.
func (g *Group) GetLog(index uint64, l *raft.Log) error {
	return g.s.view(func(tx *bbolt.Tx) error {
		b := g.bucket(tx, bucketLogs)
		if b == nil {
			return raft.ErrLogNotFound
		}
		v := b.Get(indexKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := decodeLog(v, l); err != nil {
			return fmt.Errorf("raft log store %s: group %d index %d: %w", g.s.path, g.id, index, err)
		}
		l.Index = index
		return nil
	})
}

// StoreLog stores one entry.
func (g *Group) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries durably, in the next commit of the store.
func (g *Group) StoreLogs(logs []*raft.Log) error {
	// Encoded here, on the caller's goroutine, so groups encode in parallel
	// and the commit goroutine only copies bytes into pages.
	size := 0
	for _, l := range logs {
		size += encodedSize(l)
	}
	buf := make([]byte, 0, size+8*len(logs))
	kv := make([][]byte, 0, 2*len(logs))
	for _, l := range logs {
		start := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, l.Index)
		mid := len(buf)
		buf = appendLog(buf, l)
		kv = append(kv, buf[start:mid:mid], buf[mid:len(buf):len(buf)])
	}
	w := writePool.Get().(*write)
	w.group, w.entries, w.bytes = g.id, len(logs), len(buf)
	w.apply = func(tx *bbolt.Tx) error {
		b, err := g.createBucket(tx, bucketLogs)
		if err != nil {
			return err
		}
		for i := 0; i < len(kv); i += 2 {
			if err := b.Put(kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	return g.s.submit(w)
}

// deleteChunk bounds the entries one commit deletes from a log's front: a
// compaction after a snapshot deletes thousands, and bbolt's single writer
// would hold every group's commits meanwhile.
const deleteChunk = 512

// DeleteRange deletes entries min..max inclusive. A range that starts at
// the log's first entry (a compaction) goes in chunks, oldest first, so the
// log stays contiguous after each; any other range (a follower truncating
// conflicting entries) goes in one commit, so a crash cannot leave a hole.
func (g *Group) DeleteRange(min, max uint64) error {
	first, err := g.FirstIndex()
	if err != nil {
		return err
	}
	if min > first || max-min < deleteChunk {
		return g.deleteRange(min, max)
	}
	for lo := min; lo <= max; lo += deleteChunk {
		if err := g.deleteRange(lo, lo+min64(deleteChunk-1, max-lo)); err != nil {
			return err
		}
	}
	return nil
}

func min64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func (g *Group) deleteRange(min, max uint64) error {
	w := writePool.Get().(*write)
	w.group, w.entries, w.bytes = g.id, 0, 0
	w.apply = func(tx *bbolt.Tx) error {
		b := g.bucket(tx, bucketLogs)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		minKey := indexKey(min)
		// Seek again after every delete: a bbolt cursor may skip the key
		// after one it deleted.
		for k, _ := c.Seek(minKey); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Seek(minKey) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	}
	return g.s.submit(w)
}

// Set stores a stable key durably.
func (g *Group) Set(key, val []byte) error {
	if len(key) == 0 {
		return errors.New("empty stable key")
	}
	k, v := append([]byte(nil), key...), append([]byte(nil), val...)
	w := writePool.Get().(*write)
	w.group, w.entries, w.bytes = g.id, 0, 0
	w.apply = func(tx *bbolt.Tx) error {
		b, err := g.createBucket(tx, bucketStable)
		if err != nil {
			return err
		}
		return b.Put(k, v)
	}
	return g.s.submit(w)
}

// Get reads a stable key; a missing one is ErrKeyNotFound.
func (g *Group) Get(key []byte) ([]byte, error) {
	var out []byte
	err := g.s.view(func(tx *bbolt.Tx) error {
		b := g.bucket(tx, bucketStable)
		if b == nil {
			return ErrKeyNotFound
		}
		v := b.Get(key)
		if v == nil {
			return ErrKeyNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetUint64 stores a stable number, big-endian as raft-boltdb does.
func (g *Group) SetUint64(key []byte, val uint64) error { return g.Set(key, indexKey(val)) }

// GetUint64 reads a stable number; a missing one is ErrKeyNotFound.
func (g *Group) GetUint64(key []byte) (uint64, error) {
	v, err := g.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raft log store %s: group %d: stable key %q holds %d bytes, not a number", g.s.path, g.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
