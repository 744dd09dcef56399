package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/topkd/topkd/server/raftlog"
)

// openNodeWith opens a single-node server in dir with the given log store
// ("" for the default), on a loopback Raft port.
func openNodeWith(t *testing.T, dir, store string) (*Node, error) {
	t.Helper()
	return openNodeConfig(t, Config{DataDir: dir, LogStore: store})
}

// openNodeConfig opens a single-node server with cfg, whose node id, Raft
// address, partitions (4), policy and logger are filled in.
func openNodeConfig(t *testing.T, cfg Config) (*Node, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.NodeID, cfg.RaftAddr, cfg.RaftListener, cfg.Raft, cfg.Logger = "n1", ln.Addr().String(), ln, testPolicy(), quietLog()
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	n, err := Open(ctx, cfg)
	if err != nil {
		ln.Close()
	}
	return n, err
}

// TestMigratePerGroupToShared: a data dir written with one raft-boltdb file
// per partition (the earlier release's layout) opens with the shared store:
// every partition's entries, term and vote are copied, the old files are
// removed, and every acknowledged event is still counted once.
func TestMigratePerGroupToShared(t *testing.T) {
	dir := t.TempDir()
	n, err := openNodeWith(t, dir, LogStorePerGroup)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]int64{}
	for seq := uint64(1); seq <= 20; seq++ {
		var evs []Event
		for i := range 100 {
			item := fmt.Sprintf("item-%d", (int(seq)*7+i)%53)
			evs = append(evs, Event{Item: item, Count: 1, TimeMs: time.Now().UnixMilli()})
			want[item]++
		}
		if _, err := n.Ingest(ctx, IngestRequest{Events: evs, ProducerID: "p", Epoch: 1, Sequence: seq}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// What raft stored per partition before the migration.
	type stable struct{ term, last uint64 }
	before := map[int]stable{}
	for p := range 4 {
		s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprintf("p%d", p), "raft.db")})
		if err != nil {
			t.Fatal(err)
		}
		term, _ := s.GetUint64(keyCurrentTerm)
		last, _ := s.LastIndex()
		before[p] = stable{term, last}
		s.Close()
		if term == 0 || last == 0 {
			t.Fatalf("partition %d before migration: term %d, last index %d", p, term, last)
		}
	}

	n, err = openNodeWith(t, dir, LogStoreShared)
	if err != nil {
		t.Fatal(err)
	}
	for p := range 4 {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("p%d", p), "raft.db")); !os.IsNotExist(err) {
			t.Errorf("partition %d: raft.db still there after the migration (%v)", p, err)
		}
		g := n.logs.shared.Group(PartitionGroup(p))
		term, err := g.GetUint64(keyCurrentTerm)
		if err != nil || term < before[p].term {
			t.Errorf("partition %d: term %d (%v) after migration, was %d", p, term, err, before[p].term)
		}
		if last, _ := g.LastIndex(); last < before[p].last {
			t.Errorf("partition %d: last index %d after migration, was %d", p, last, before[p].last)
		}
	}
	checkCounts(t, n, want)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// The per-group layout refuses the shared file rather than starting empty.
	if n, err := openNodeWith(t, dir, LogStorePerGroup); err == nil {
		n.Close()
		t.Fatal("per-group store opened a data dir whose logs are in the shared file")
	} else if !strings.Contains(err.Error(), sharedLogFile) {
		t.Errorf("refusal %q does not name %s", err, sharedLogFile)
	}
	n, err = openNodeWith(t, dir, LogStoreShared)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	checkCounts(t, n, want)
}

// TestMigrationInterruptedAfterImport: a crash after the copy committed but
// before the old file was removed leaves both; the next start removes the
// old file without copying it again over entries written since.
func TestMigrationInterruptedAfterImport(t *testing.T) {
	dir := t.TempDir()
	n, err := openNodeWith(t, dir, LogStorePerGroup)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"a": 3}
	if _, err := n.Ingest(context.Background(), IngestRequest{Events: []Event{{Item: "a", Count: 3, TimeMs: time.Now().UnixMilli()}}}); err != nil {
		t.Fatal(err)
	}
	n.Close()
	// Import partition 0 by hand, keeping its old file: the state a crash
	// between the import's commit and the removal leaves.
	old := filepath.Join(dir, "p0", "raft.db")
	s, err := raftlog.Open(filepath.Join(dir, sharedLogFile), raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := raftboltdb.New(raftboltdb.Options{Path: old})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(PartitionGroup(0), src, raftlog.StableKeys); err != nil {
		t.Fatal(err)
	}
	src.Close()
	// A term raised after the import (raft accepts a higher term as it
	// finds it): a second copy of the old file would lower it again.
	g := s.Group(PartitionGroup(0))
	term, _ := g.GetUint64(keyCurrentTerm)
	if err := g.SetUint64(keyCurrentTerm, term+5); err != nil {
		t.Fatal(err)
	}
	s.Close()
	n, err = openNodeWith(t, dir, LogStoreShared)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old file left: %v", err)
	}
	if got, _ := n.logs.shared.Group(PartitionGroup(0)).GetUint64(keyCurrentTerm); got < term+5 {
		t.Errorf("term %d after resuming, want at least %d: the old file was copied again", got, term+5)
	}
	checkCounts(t, n, want)
}

func checkCounts(t *testing.T, n *Node, want map[string]int64) {
	t.Helper()
	for item, c := range want {
		got, err := n.Count(context.Background(), "default", item, 0, Linearizable)
		if err != nil || got.Count != c {
			t.Errorf("%s = %d (%v), want %d", item, got.Count, err, c)
		}
	}
}
