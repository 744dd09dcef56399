package server

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// BenchmarkBoltStoreLogs commits one 64 KiB entry at a time to a log store
// whose earlier 4,096 entries were compacted away, as after a snapshot: with
// bbolt's defaults against boltOptions (hash-map freelist, not synced).
func BenchmarkBoltStoreLogs(b *testing.B) {
	for _, c := range []struct {
		name string
		opts *bbolt.Options
	}{{"defaults", nil}, {"topkd", boltOptions()}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), "raft.db"), BoltOptions: c.opts})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([]byte, 64<<10)
			idx := uint64(0)
			store := func(n int) {
				logs := make([]*raft.Log, n)
				for i := range logs {
					idx++
					logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
				}
				if err := s.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
			for range 4096 / 64 {
				store(64)
			}
			if err := s.DeleteRange(1, idx); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				store(1)
			}
			b.ReportMetric(float64(s.Stats().FreePageN), "free-pages")
		})
	}
}
