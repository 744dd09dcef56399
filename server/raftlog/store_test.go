package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func entry(idx uint64, data string) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: []byte(data)}
}

// observer records commits; hold blocks the commit goroutine inside the
// report of commit number holdAt (from 1) until closed, so a test can queue
// writes behind it.
type observer struct {
	mu      sync.Mutex
	commits []CommitStats
	hold    chan struct{}
	holdAt  int
}

func (o *observer) ObserveCommit(st CommitStats) {
	o.mu.Lock()
	o.commits = append(o.commits, st)
	held := len(o.commits) == max(o.holdAt, 1)
	o.mu.Unlock()
	if held && o.hold != nil {
		<-o.hold
	}
}

func (o *observer) all() []CommitStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]CommitStats(nil), o.commits...)
}

func queued(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// TestGroupCommit: every write that arrives while a commit is in progress
// goes into the next commit, whatever its group and kind.
func TestGroupCommit(t *testing.T) {
	obs := &observer{hold: make(chan struct{})}
	s := openStore(t, filepath.Join(t.TempDir(), "raftlog.db"), Options{Observer: obs})
	first := make(chan error, 1)
	go func() { first <- s.Group(100).StoreLogs([]*raft.Log{entry(1, "x")}) }()
	for len(obs.all()) == 0 {
		time.Sleep(time.Millisecond)
	}
	// The commit goroutine is held inside the first commit's report: queue
	// behind it a write of every kind, from eight groups.
	const groups = 8
	var wg sync.WaitGroup
	errs := make(chan error, 3*groups)
	for g := range uint32(groups) {
		gs := s.Group(g)
		wg.Go(func() {
			errs <- gs.StoreLogs([]*raft.Log{entry(1, "a"), entry(2, "b"), entry(3, "c")})
			errs <- gs.SetUint64([]byte("CurrentTerm"), 7)
			errs <- gs.DeleteRange(1, 1)
		})
	}
	for queued(s) < groups {
		time.Sleep(time.Millisecond)
	}
	close(obs.hold)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := obs.all()
	if len(c) < 2 {
		t.Fatalf("%d commits, want at least 2", len(c))
	}
	if c[0].Writes != 1 || c[0].Entries != 1 || c[0].Groups != 1 {
		t.Errorf("first commit %+v, want the lone write alone", c[0])
	}
	if c[1].Writes != groups || c[1].Groups != groups || c[1].Entries != 3*groups {
		t.Errorf("second commit %+v, want the %d StoreLogs queued behind the first, from %d groups", c[1], groups, groups)
	}
	total := 0
	for _, st := range c {
		total += st.Writes
	}
	if total != 1+3*groups {
		t.Errorf("%d writes committed, want %d", total, 1+3*groups)
	}
	for g := range uint32(groups) {
		first, _ := s.Group(g).FirstIndex()
		last, _ := s.Group(g).LastIndex()
		term, err := s.Group(g).GetUint64([]byte("CurrentTerm"))
		if first != 2 || last != 3 || term != 7 || err != nil {
			t.Errorf("group %d: first %d last %d term %d (%v), want 2, 3, 7", g, first, last, term, err)
		}
	}
}

// TestCommitFailurePoisons: a failed commit fails every write in it, every
// later call fails too, Fatal is told once, and nothing of the failed
// commit is on disk after a reopen.
func TestCommitFailurePoisons(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raftlog.db")
	var fatals atomic.Int32
	var fatalErr atomic.Value
	obs := &observer{hold: make(chan struct{}), holdAt: 2}
	s, err := Open(path, Options{Observer: obs, Fatal: func(err error) { fatals.Add(1); fatalErr.Store(err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	injected := errors.New("fdatasync: input/output error")
	var fail atomic.Bool
	s.commitHook = func() error {
		if fail.Load() {
			return injected
		}
		return nil
	}
	if err := s.Group(1).StoreLogs([]*raft.Log{entry(1, "kept")}); err != nil {
		t.Fatal(err)
	}
	// Queue writes of three groups behind a held commit, then fail the next one.
	blocker := make(chan error, 1)
	go func() { blocker <- s.Group(9).StoreLogs([]*raft.Log{entry(1, "held")}) }()
	for len(obs.all()) < 2 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Group(uint32(i + 1)).StoreLogs([]*raft.Log{entry(2, "lost")}) })
	}
	for queued(s) < 3 {
		time.Sleep(time.Millisecond)
	}
	fail.Store(true)
	close(obs.hold)
	wg.Wait()
	<-blocker
	for i, err := range errs {
		if !errors.Is(err, injected) {
			t.Errorf("writer %d: %v, want the injected error", i, err)
		}
	}
	if fatals.Load() != 1 {
		t.Errorf("Fatal called %d times, want 1", fatals.Load())
	}
	if err, _ := fatalErr.Load().(error); !errors.Is(err, injected) || !strings.Contains(err.Error(), path) {
		t.Errorf("Fatal got %v, want the injected error naming %s", err, path)
	}
	fail.Store(false) // poisoned for good, even once the cause is gone
	if err := s.Group(5).Set([]byte("k"), []byte("v")); !errors.Is(err, injected) {
		t.Errorf("write after the failure: %v, want the poisoning error", err)
	}
	if _, err := s.Group(1).LastIndex(); !errors.Is(err, injected) {
		t.Errorf("read after the failure: %v, want the poisoning error", err)
	}
	if fatals.Load() != 1 {
		t.Errorf("Fatal called %d times, want 1", fatals.Load())
	}
	s.Close()
	s2 := openStore(t, path, Options{})
	var l raft.Log
	if err := s2.Group(1).GetLog(1, &l); err != nil || string(l.Data) != "kept" {
		t.Errorf("acknowledged entry after reopen: %q, %v", l.Data, err)
	}
	for g := uint32(1); g <= 3; g++ {
		if err := s2.Group(g).GetLog(2, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Errorf("group %d: the failed commit's entry: %v, want not found", g, err)
		}
	}
}

// TestDropKeepsOthers drops a group while others write; their data stays and
// the dropped group's pages are reused.
func TestDropKeepsOthers(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "raftlog.db"), Options{})
	big := strings.Repeat("x", 64<<10)
	fill := func(g uint32, from uint64, n int) {
		logs := make([]*raft.Log, n)
		for i := range logs {
			logs[i] = entry(from+uint64(i), big)
		}
		if err := s.Group(g).StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	fill(1, 1, 200)
	fill(2, 1, 10)
	before, err := s.FileStats()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			fill(2, uint64(11+i), 1)
		}
	})
	if err := s.Drop(1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if last, _ := s.Group(1).LastIndex(); last != 0 {
		t.Errorf("dropped group: last index %d, want 0", last)
	}
	if last, _ := s.Group(2).LastIndex(); last != 60 {
		t.Errorf("other group: last index %d, want 60", last)
	}
	ids, err := s.Groups()
	if err != nil || len(ids) != 1 || ids[0] != 2 {
		t.Errorf("groups %v (%v), want [2]", ids, err)
	}
	fill(3, 1, 150) // fits in the dropped group's pages
	after, err := s.FileStats()
	if err != nil {
		t.Fatal(err)
	}
	if after.Size > before.Size {
		t.Errorf("file grew from %d to %d bytes: the dropped group's pages were not reused", before.Size, after.Size)
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := make([]*raft.Log, 100)
	for i := range logs {
		logs[i] = entry(uint64(i+1), strings.Repeat("y", 8<<10))
	}
	if err := s.Group(1).StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := bytes.Clone(b)
	flipped[20] ^= 0xff // page 0's meta magic; page 1 still valid
	for _, c := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "none.db"), ""},
		{"empty", write("empty.db", nil), ""},
		{"good", good, ""},
		{"one meta page damaged", write("flip.db", flipped), ""},
		{"truncated to half", write("half.db", b[:len(b)/2]), "truncated"},
		{"zeros", write("zeros.db", make([]byte, 64<<10)), "meta pages"},
		{"short garbage", write("short.db", []byte("not a database")), "meta pages"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckFile(c.path)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path)):
				t.Fatalf("got %v, want an error naming %s and %q", err, c.path, c.want)
			}
			if c.want != "" {
				if _, err := Open(c.path, Options{}); err == nil {
					t.Fatal("Open accepted the damaged file")
				}
			}
		})
	}
}

// TestImport copies a raft-boltdb file into a group: entries, gaps, term and
// vote; a second import replaces the first.
func TestImport(t *testing.T) {
	dir := t.TempDir()
	src, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "old.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var logs []*raft.Log
	for i := uint64(5); i <= 40; i++ {
		if i != 20 {
			logs = append(logs, &raft.Log{Index: i, Term: i / 10, Type: raft.LogCommand, Data: fmt.Appendf(nil, "e%d", i),
				AppendedAt: time.Unix(1700000000, int64(i))})
		}
	}
	if err := src.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	_ = src.SetUint64([]byte("CurrentTerm"), 4)
	_ = src.Set([]byte("LastVoteCand"), []byte("n1"))
	s := openStore(t, filepath.Join(dir, "raftlog.db"), Options{})
	if ok, _ := s.Imported(3); ok {
		t.Fatal("imported before Import")
	}
	_ = s.Group(3).StoreLogs([]*raft.Log{entry(99, "stale")}) // replaced by the import
	n, err := s.Import(3, src, StableKeys)
	if err != nil || n != len(logs) {
		t.Fatalf("Import: %d entries, %v; want %d", n, err, len(logs))
	}
	if ok, _ := s.Imported(3); !ok {
		t.Fatal("not marked imported")
	}
	g := s.Group(3)
	compareAll(t, src, g, 100)
	if term, err := g.GetUint64([]byte("CurrentTerm")); term != 4 || err != nil {
		t.Errorf("term %d (%v), want 4", term, err)
	}
	if _, err := g.Get([]byte("LastVoteTerm")); err == nil || err.Error() != "not found" {
		t.Errorf("LastVoteTerm: %v, want not found", err)
	}
}

func compareAll(t *testing.T, a, b store, upto uint64) {
	t.Helper()
	for i := uint64(0); i <= upto; i++ {
		var want, got raft.Log
		werr, gerr := a.GetLog(i, &want), b.GetLog(i, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("GetLog(%d): source %v, imported %v", i, werr, gerr)
		}
		if werr == nil && (want.Term != got.Term || !bytes.Equal(want.Data, got.Data) || !want.AppendedAt.Equal(got.AppendedAt)) {
			t.Fatalf("GetLog(%d): source %+v, imported %+v", i, want, got)
		}
	}
}

// TestDamagedEntry: a flipped byte inside an entry is an error naming the
// group and index, not an entry with wrong bytes.
func TestDamagedEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raftlog.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	marker := strings.Repeat("M", 64)
	if err := s.Group(2).StoreLogs([]*raft.Log{entry(1, "ok"), entry(2, marker)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, _ := os.ReadFile(path)
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatal("entry bytes not found in the file")
	}
	b[i+10] = 'X'
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, Options{})
	var l raft.Log
	if err := s.Group(2).GetLog(1, &l); err != nil {
		t.Fatalf("undamaged entry: %v", err)
	}
	err = s.Group(2).GetLog(2, &l)
	if err == nil || !strings.Contains(err.Error(), "group 2 index 2") {
		t.Fatalf("damaged entry: %v, want an error naming group 2 index 2", err)
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "raftlog.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Group(1).StoreLog(entry(1, "x")); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Group(1).FirstIndex(); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
}

// TestCompactionInChunks: a compaction larger than one chunk deletes the
// same entries as raft-boltdb, in several commits, oldest first.
func TestCompactionInChunks(t *testing.T) {
	dir := t.TempDir()
	obs := &observer{}
	s := openStore(t, filepath.Join(dir, "raftlog.db"), Options{Observer: obs})
	ref, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "ref.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	logs := make([]*raft.Log, 3000)
	for i := range logs {
		logs[i] = entry(uint64(i+1), fmt.Sprint(i))
	}
	g := s.Group(1)
	for _, st := range []store{ref, g} {
		if err := st.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	before := len(obs.all())
	for _, st := range []store{ref, g} {
		if err := st.DeleteRange(1, 2700); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(obs.all()) - before; n != (2700+deleteChunk-1)/deleteChunk {
		t.Errorf("compaction took %d commits, want %d chunks", n, (2700+deleteChunk-1)/deleteChunk)
	}
	compareAll(t, ref, g, 3001)
	if first, _ := g.FirstIndex(); first != 2701 {
		t.Errorf("first index %d, want 2701", first)
	}
}
