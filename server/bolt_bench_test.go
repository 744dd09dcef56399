package server

import (
	"encoding/binary"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/topkd/topkd/server/raftlog"
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

// BenchmarkBoltGroupCommit prices group commit. One op is one request's
// worth of log writes: 8 partitions, each storing one 2.5 KB entry.
// "per-group" is the earlier layout, 8 raft-boltdb files committed
// concurrently; "raftlog" is the shared store with its 8 groups' writers
// concurrent; "one-tx" is its floor, one bbolt transaction written by one
// goroutine. cpu-ns/op is the process's user and system time, fdatasync
// included.
func BenchmarkBoltGroupCommit(b *testing.B) {
	const groups = 8
	data := make([]byte, 2500)
	b.Run("per-group", func(b *testing.B) {
		stores := make([]*raftboltdb.BoltStore, groups)
		for i := range stores {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), "raft.db"), BoltOptions: boltOptions()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			stores[i] = s
		}
		cpu0 := cpuNanos()
		idx := uint64(0)
		for b.Loop() {
			idx++
			var wg sync.WaitGroup
			for _, s := range stores {
				wg.Go(func() {
					if err := s.StoreLogs([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("raftlog", func(b *testing.B) {
		s, err := raftlog.Open(filepath.Join(b.TempDir(), "raftlog.db"), raftlog.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		cpu0 := cpuNanos()
		idx := uint64(0)
		for b.Loop() {
			idx++
			var wg sync.WaitGroup
			for g := range uint32(groups) {
				wg.Go(func() {
					if err := s.Group(g).StoreLogs([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("one-tx", func(b *testing.B) {
		db, err := bbolt.Open(filepath.Join(b.TempDir(), "logs.db"), 0o600, boltOptions())
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		cpu0 := cpuNanos()
		idx := uint64(0)
		for b.Loop() {
			idx++
			err := db.Update(func(tx *bbolt.Tx) error {
				for g := range groups {
					bk, err := tx.CreateBucketIfNotExists([]byte{'g', byte(g)})
					if err != nil {
						return err
					}
					if err := bk.Put(binary.BigEndian.AppendUint64(nil, idx), data); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N), "cpu-ns/op")
	})
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
