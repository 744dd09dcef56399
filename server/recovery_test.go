package server

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestRestartAfterCrashMidBootstrap: raft.BootstrapCluster syncs the term,
// then the configuration entry. A crash between the two (simulated: a
// partition store holding only the term) must not keep that group from
// electing itself on every later start.
func TestRestartAfterCrashMidBootstrap(t *testing.T) {
	dir := t.TempDir()
	openTestNode(t, dir).Close()
	p1 := filepath.Join(dir, "p1")
	if err := os.RemoveAll(p1); err != nil {
		t.Fatal(err)
	}
	// A node that crashed mid-bootstrap never recorded an applied index.
	if err := os.Remove(filepath.Join(dir, manifestFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p1, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(p1, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64(keyCurrentTerm, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	n := openTestNode(t, dir) // fails the test if Open does not finish
	n.Close()
}

// TestUnfinishedSnapshotsRemoved: a snapshot directory a crash left
// half-written (never renamed from .tmp) is removed when the group opens;
// raft itself never lists, so never deletes, it.
func TestUnfinishedSnapshotsRemoved(t *testing.T) {
	dir := t.TempDir()
	n := openTestNode(t, dir)
	n.Close()
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "p0"), 2, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := snaps.Create(1, 10, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(make([]byte, 1<<16)); err != nil {
		t.Fatal(err)
	}
	// "SIGKILL" before Close: the directory stays *.tmp.
	tmps, _ := filepath.Glob(filepath.Join(dir, "p0", "snapshots", "*.tmp"))
	if len(tmps) != 1 {
		t.Fatalf("setup: %v", tmps)
	}
	openTestNode(t, dir).Close()
	if tmps, _ := filepath.Glob(filepath.Join(dir, "p0", "snapshots", "*.tmp")); len(tmps) != 0 {
		t.Fatalf("unfinished snapshots left: %v", tmps)
	}
}

// TestFailedOpenReleasesTheDataDir: an Open that fails after the meta group
// opened (here: a canceled context) closes it, so a second Open of the same
// data dir in this process does not hang on its bolt file; goleak (TestMain)
// checks that no group goroutine is left behind.
func TestFailedOpenReleasesTheDataDir(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, Config{NodeID: "n1", DataDir: dir, RaftAddr: ln.Addr().String(), RaftListener: ln,
		Partitions: 2, Raft: testPolicy(), Logger: quietLog()}); err == nil {
		t.Fatal("Open with a canceled context succeeded")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := openTestNode(t, dir)
		n.Close()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a second Open of the data dir hangs")
	}
}

// TestPartitionDataWithoutMetaRefused: partition data without the meta
// group is not silently taken over by a new cluster, whose partition count
// could place items elsewhere.
func TestPartitionDataWithoutMetaRefused(t *testing.T) {
	dir := t.TempDir()
	openTestNode(t, dir).Close()
	if err := os.RemoveAll(filepath.Join(dir, "meta")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Open(ctx, Config{NodeID: "n1", DataDir: dir, RaftAddr: ln.Addr().String(), RaftListener: ln,
		Partitions: 8, Raft: testPolicy(), Logger: quietLog()})
	// The manifest notices first that the meta group lost what it applied.
	if err == nil || !errors.Is(err, ErrDamaged) && !strings.Contains(err.Error(), "holds partition data") {
		t.Fatalf("Open over orphaned partition data: %v, want a refusal", err)
	}
}

// TestForeignLogStoreRefused: a raftlog.db copied in from another data dir
// (another node's, here) is refused, not mixed into this node's history.
func TestForeignLogStoreRefused(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	openTestNode(t, a).Close()
	openTestNode(t, b).Close()
	data, err := os.ReadFile(filepath.Join(b, sharedLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, sharedLogFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// The manifest would refuse a store that lost entries; this one has as many.
	if err := os.Remove(filepath.Join(a, manifestFile)); err != nil {
		t.Fatal(err)
	}
	_, err = openNodeWith(t, a, "")
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "another data directory") {
		t.Fatalf("Open with another node's raftlog.db: %v", err)
	}
}
