package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/topkd/topkd/server/failpoint"
)

var (
	// ErrClosed answers calls after Close.
	ErrClosed = errors.New("raft log store closed")
	// ErrKeyNotFound answers a missing stable key. Its text is exactly
	// "not found": hashicorp/raft matches it by text, as raft-boltdb's.
	ErrKeyNotFound = errors.New("not found")
)

// Options configure a Store.
type Options struct {
	// Fatal is called once, from the commit goroutine, when a commit fails.
	// The store is poisoned by then; the process should stop.
	Fatal func(error)
	// Observer sees every commit; nil for none.
	Observer Observer
	// LockTimeout bounds the wait for another process's lock on the file.
	LockTimeout time.Duration
}

// CommitStats describe one commit.
type CommitStats struct {
	Groups   int // distinct groups written
	Writes   int // calls served (StoreLogs, DeleteRange, Set, ...)
	Entries  int // log entries stored
	Bytes    int // encoded entry bytes
	Duration time.Duration
}

// Observer receives commit statistics (metrics live with the caller).
type Observer interface {
	ObserveCommit(CommitStats)
}

// Store is one bbolt file holding many groups' logs and stable state.
type Store struct {
	db    *bbolt.DB
	path  string
	obs   Observer
	fatal func(error)

	// commitHook runs before every commit; an error fails it as a failed
	// fsync would (the "raftlog-commit" failpoint, or a test's hook).
	commitHook func() error
	// afterCommit runs after every commit; nil but in the logbound build's
	// one-sync bound (bound.go).
	afterCommit func() error

	mu     sync.Mutex
	queue  []*write
	err    error // set once a commit failed (poisoned), or ErrClosed
	closed bool
	wake   chan struct{} // size 1: a token means "look at the queue"
	done   chan struct{}
}

// write is one caller's mutation, applied inside the next commit.
type write struct {
	group   uint32
	entries int
	bytes   int
	apply   func(tx *bbolt.Tx) error
	done    chan error // size 1: the committer never blocks on a caller
}

var writePool = sync.Pool{New: func() any { return &write{done: make(chan error, 1)} }}

// Top-level layout: one bucket per group ("g" + big-endian id) holding a
// "l" bucket of entries keyed by big-endian index, a "s" bucket of stable
// keys, and an "imported" key once a migration copied the group in; a
// "store" bucket holds the format version.
var (
	bucketStore   = []byte("store")
	bucketLogs    = []byte("l")
	bucketStable  = []byte("s")
	keyFormat     = []byte("format")
	keyImported   = []byte("imported")
	formatVersion = []byte{1}
)

func groupKey(id uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{'g'}, id)
}

// Open opens or creates the store at path. A damaged file is refused with an
// error naming it, before bbolt maps it (a truncated file would otherwise
// fault inside bbolt with SIGBUS).
func Open(path string, opts Options) (*Store, error) {
	if err := CheckFile(path); err != nil {
		return nil, err
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	// Compaction frees runs of pages: a hash-map freelist, rebuilt on open
	// rather than rewritten by every commit (rqlite, Consul and etcd agree).
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true,
		FreelistType: bbolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("%s is in use by another process (is another topkd running on this data dir?)", path)
		}
		return nil, fmt.Errorf("open raft log store %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketStore)
		if err != nil {
			return err
		}
		switch v := b.Get(keyFormat); {
		case v == nil:
			return b.Put(keyFormat, formatVersion)
		case string(v) != string(formatVersion):
			return fmt.Errorf("format %v, this release reads %v", v, formatVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open raft log store %s: %w", path, err)
	}
	if opts.Fatal == nil {
		opts.Fatal = func(error) {}
	}
	s := &Store{db: db, path: path, obs: opts.Observer, fatal: opts.Fatal,
		commitHook: func() error { return failpoint.Hit("raftlog-commit") },
		wake:       make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s, nil
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Close commits what is queued, then closes the file. Later calls fail
// with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.kick()
	<-s.done
	return s.db.Close()
}

// Err is nil while the store is usable, else why not.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.closed {
		return ErrClosed
	}
	return s.err
}

func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// submit queues w for the next commit and waits until it is durable.
func (s *Store) submit(w *write) error {
	s.mu.Lock()
	if err := s.errLocked(); err != nil {
		s.mu.Unlock()
		s.release(w)
		return err
	}
	s.queue = append(s.queue, w)
	s.mu.Unlock()
	s.kick()
	err := <-w.done
	s.release(w)
	return err
}

func (s *Store) release(w *write) {
	w.apply = nil
	writePool.Put(w)
}

func (s *Store) errLocked() error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

// run is the commit loop: it takes everything queued, commits it in one
// transaction, answers every caller, and repeats. A lone write commits at
// once; writes arriving meanwhile wait for the next commit, not for a timer.
func (s *Store) run() {
	defer close(s.done)
	var batch []*write
	for range s.wake {
		for {
			s.mu.Lock()
			batch, s.queue = s.queue, batch[:0]
			closed := s.closed
			s.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			err := s.commit(batch)
			for i, w := range batch {
				w.done <- err
				batch[i] = nil
			}
		}
	}
}

func (s *Store) commit(batch []*write) error {
	start := time.Now()
	s.mu.Lock()
	poisoned := s.err
	s.mu.Unlock()
	if poisoned != nil {
		return poisoned
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return s.poison(err)
	}
	st := CommitStats{Writes: len(batch)}
	var groups []uint32
	for _, w := range batch {
		// A mutation that fails part-way has left part of itself in the
		// transaction; no caller may be acknowledged from it.
		if err := w.apply(tx); err != nil {
			_ = tx.Rollback()
			return s.poison(fmt.Errorf("group %d: %w", w.group, err))
		}
		st.Entries += w.entries
		st.Bytes += w.bytes
		if !containsGroup(groups, w.group) {
			groups = append(groups, w.group)
		}
	}
	if err := s.commitHook(); err != nil {
		_ = tx.Rollback()
		return s.poison(err)
	}
	if err := tx.Commit(); err != nil {
		return s.poison(err)
	}
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return s.poison(err)
		}
	}
	if s.obs != nil {
		st.Groups, st.Duration = len(groups), time.Since(start)
		s.obs.ObserveCommit(st)
	}
	return nil
}

func containsGroup(gs []uint32, g uint32) bool {
	for _, x := range gs {
		if x == g {
			return true
		}
	}
	return false
}

// poison stops the store for good: the outcome of the failed commit on disk
// is unknown, and retrying an fsync after an error can report success for
// data the kernel already dropped.
func (s *Store) poison(cause error) error {
	err := fmt.Errorf("raft log store %s: commit failed, store stopped: %w", s.path, cause)
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
	}
	s.mu.Unlock()
	if first {
		s.fatal(err)
	}
	return err
}

// view runs a read transaction, failing once the store is poisoned or closed.
func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	if err := s.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

// Group returns the store of one group. It holds no state: groups are
// created by their first write.
func (s *Store) Group(id uint32) *Group {
	return &Group{s: s, id: id, key: groupKey(id)}
}

// Groups lists the ids of groups that hold data.
func (s *Store) Groups() ([]uint32, error) {
	var ids []uint32
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			if len(name) == 5 && name[0] == 'g' {
				ids = append(ids, binary.BigEndian.Uint32(name[1:]))
			}
			return nil
		})
	})
	return ids, err
}

// Drop removes a group's entries and stable state in one commit, without
// stopping the other groups; its pages are reused by later writes.
func (s *Store) Drop(id uint32) error {
	key := groupKey(id)
	w := writePool.Get().(*write)
	w.group, w.entries, w.bytes = id, 0, 0
	w.apply = func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(key); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return err
		}
		return nil
	}
	return s.submit(w)
}

// FileStats report the file's size and its free pages.
type FileStats struct {
	Size      int64
	FreePages int
	PageSize  int
}

// FileStats reads the file's size and bbolt's free page count.
func (s *Store) FileStats() (FileStats, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return FileStats{}, err
	}
	st := s.db.Stats()
	return FileStats{Size: fi.Size(), FreePages: st.FreePageN + st.PendingPageN, PageSize: s.db.Info().PageSize}, nil
}
