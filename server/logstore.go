package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/topkd/topkd/server/failpoint"
	"github.com/topkd/topkd/server/raftlog"
)

// Where partitions keep their Raft logs (Config.LogStore).
const (
	// LogStoreShared keeps every partition's log and stable state in one
	// file per node, data/raftlog.db, with group commit. The default.
	LogStoreShared = "shared"
	// LogStorePerGroup gives every partition a raft-boltdb file of its own,
	// data/p<N>/raft.db: the layout before the shared log, kept as the
	// baseline of the benchmarks.
	LogStorePerGroup = "per-group"
)

// boundStores opens the benchmark-only stores of logstore_bound.go (build
// tag logbound) and reports whether mode named one; nil in release builds.
var boundStores func(pl *partitionLogs, mode string, obs raftlog.Observer, fatal func(error)) (bool, error)

// sharedLogFile is the shared store's file in the data dir.
const sharedLogFile = "raftlog.db"

// partitionLogs opens where this node's partitions keep their logs. For the
// shared store it also migrates partitions written by an earlier release
// (one raft.db each) into the shared file.
type partitionLogs struct {
	mode   string
	dir    string
	shared *raftlog.Store // nil with per-group files
	log    *slog.Logger
	// bound serves the benchmark-only stores (logstore_bound.go); nil in
	// release builds.
	bound func(p int) logStore
}

func openPartitionLogs(dir, mode string, obs raftlog.Observer, fatal func(error), log *slog.Logger) (*partitionLogs, error) {
	pl := &partitionLogs{mode: mode, dir: dir, log: log}
	shared := filepath.Join(dir, sharedLogFile)
	switch mode {
	case LogStorePerGroup:
		if fi, err := os.Stat(shared); err == nil && fi.Size() > 0 {
			return nil, fmt.Errorf("%s holds the partitions' Raft logs in %s; --raft-log-store=%s cannot read them (start with --raft-log-store=%s)",
				dir, shared, LogStorePerGroup, LogStoreShared)
		}
		return pl, nil
	case LogStoreShared, "":
		pl.mode = LogStoreShared
	default:
		if boundStores != nil {
			if ok, err := boundStores(pl, mode, obs, fatal); ok {
				if err != nil {
					return nil, err
				}
				return pl, nil
			}
		}
		return nil, fmt.Errorf("raft log store %q: want %q or %q", mode, LogStoreShared, LogStorePerGroup)
	}
	s, err := raftlog.Open(shared, raftlog.Options{Observer: obs, Fatal: fatal})
	if err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil { // the file may be new
		s.Close()
		return nil, err
	}
	pl.shared = s
	return pl, nil
}

// hasData reports whether any partition log exists: either layout.
func (pl *partitionLogs) hasData() (string, bool) {
	if old, _ := filepath.Glob(filepath.Join(pl.dir, "p*", "raft.db")); len(old) > 0 {
		return filepath.Dir(old[0]), true
	}
	if pl.shared != nil {
		if ids, err := pl.shared.Groups(); err == nil && len(ids) > 0 {
			return pl.shared.Path(), true
		}
	}
	return "", false
}

// store returns partition p's log store: nil lets the group open its own
// raft-boltdb file. A per-group file left by an earlier release is migrated
// into the shared store first.
func (pl *partitionLogs) store(p int) (logStore, error) {
	if pl.bound != nil {
		return pl.bound(p), nil
	}
	if pl.shared == nil {
		return nil, nil
	}
	gid := PartitionGroup(p)
	if err := pl.migrate(p, gid); err != nil {
		return nil, fmt.Errorf("partition %d: migrate its raft.db into %s: %w", p, sharedLogFile, err)
	}
	return pl.shared.Group(gid), nil
}

// migrate copies data/p<N>/raft.db into the shared store, then removes it.
// The copy and its "imported" mark commit together, so a crash before that
// commit leaves the old file to copy again, and one after it leaves a file
// that is only deleted.
func (pl *partitionLogs) migrate(p int, gid uint32) error {
	old := filepath.Join(pl.dir, "p"+strconv.Itoa(p), "raft.db")
	if _, err := os.Stat(old); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	done, err := pl.shared.Imported(gid)
	if err != nil {
		return err
	}
	if !done {
		start := time.Now()
		if err := raftlog.CheckFile(old); err != nil {
			return err
		}
		src, err := raftboltdb.New(raftboltdb.Options{Path: old, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second}})
		if err != nil {
			return fmt.Errorf("open %s: %w", old, err)
		}
		if err := failpoint.Hit("migrate-opened"); err != nil {
			src.Close()
			return err
		}
		n, err := pl.shared.Import(gid, src, raftlog.StableKeys)
		src.Close()
		if err != nil {
			return err
		}
		pl.log.Info("migrated a partition's Raft log into the shared store", "partition", p, "entries", n,
			"from", old, "to", pl.shared.Path(), "took", time.Since(start).Round(time.Millisecond))
		if err := failpoint.Hit("migrate-imported"); err != nil {
			return err
		}
	}
	if err := os.Remove(old); err != nil {
		return err
	}
	return syncDir(filepath.Dir(old))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (pl *partitionLogs) close() error {
	if pl == nil || pl.shared == nil {
		return nil
	}
	return pl.shared.Close()
}
