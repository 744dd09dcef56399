//go:build logbound

package server

import (
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/server/raftlog"
)

// Lower bounds for the log store's share of the ingest path, built only
// with -tags logbound (make bench-logstore-bounds). Neither is durable: a
// release binary cannot select them.
//   - memory: raft's in-memory store, a log that costs nothing;
//   - shared-nosync: the shared store without its two fdatasync calls, the
//     bound of any bbolt layout with fewer syncs.
const (
	logStoreMemory       = "memory"
	logStoreSharedNoSync = "shared-nosync"
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
		case logStoreSharedNoSync:
			pl.mode = mode
			s, err := raftlog.Open(filepath.Join(pl.dir, sharedLogFile), raftlog.Options{Observer: obs, Fatal: fatal})
			if err != nil {
				return true, err
			}
			s.UnsafeNoSync()
			pl.shared = s
			return true, nil
		}
		return false, nil
	}
}
