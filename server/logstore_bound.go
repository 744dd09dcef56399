//go:build logbound

package server

import (
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/server/raftlog"
)

// Bounds of the log store's share of the ingest path, built only with
// -tags logbound (make bench-logstore-bounds). None is crash-safe, and a
// release binary cannot select them.
//   - memory: raft's in-memory store, a log that costs nothing;
//   - shared-nosync: the shared store without its two fdatasync calls;
//   - shared-onesync: the shared store with one fdatasync per commit, the
//     cost of a log format that needs one (bbolt needs two).
const (
	logStoreMemory        = "memory"
	logStoreSharedNoSync  = "shared-nosync"
	logStoreSharedOneSync = "shared-onesync"
)

func init() {
	boundStores = func(pl *partitionLogs, mode string, obs raftlog.Observer, fatal func(error)) (bool, error) {
		switch mode {
		case logStoreMemory:
			pl.mode = mode
			var mu sync.Mutex
			stores := map[int]*raft.InmemStore{}
			pl.bound = func(p int) logStore {
				mu.Lock()
				defer mu.Unlock()
				if stores[p] == nil {
					stores[p] = raft.NewInmemStore()
				}
				return stores[p]
			}
			return true, nil
		case logStoreSharedNoSync, logStoreSharedOneSync:
			pl.mode = mode
			s, err := raftlog.Open(filepath.Join(pl.dir, sharedLogFile), raftlog.Options{Observer: obs, Fatal: fatal})
			if err != nil {
				return true, err
			}
			if mode == logStoreSharedNoSync {
				s.UnsafeNoSync()
			} else {
				s.UnsafeOneSync()
			}
			pl.shared = s
			return true, nil
		}
		return false, nil
	}
}
