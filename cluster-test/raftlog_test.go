package clustertest

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ledger records what producers sent: per item, the events of acknowledged
// batches.
type ledger struct {
	mu   sync.Mutex
	want map[string]int64
}

func (l *ledger) add(batch map[string]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range batch {
		l.want[k] += v
	}
}

// randomBatch is one producer batch: NDJSON and what it adds per item.
func randomBatch(rng *rand.Rand, size, items int) ([]byte, map[string]int64) {
	var sb strings.Builder
	local := map[string]int64{}
	for range size {
		item := fmt.Sprintf("item-%03d", rng.IntN(items))
		c := int64(rng.IntN(3) + 1)
		local[item] += c
		fmt.Fprintf(&sb, "{\"item\":%q,\"count\":%d}\n", item, c)
	}
	return []byte(sb.String()), local
}

// checkExact compares every item's linearizable count with the ledger.
func checkExact(t *testing.T, p *proc, want map[string]int64) {
	t.Helper()
	got := getTop(t, p.url(), 1000)
	if len(got.Items) != len(want) {
		t.Errorf("%d items, want %d", len(got.Items), len(want))
	}
	wrong := 0
	for _, it := range got.Items {
		if it.Count != want[it.ID] {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s = %d, want %d (acknowledged)", it.ID, it.Count, want[it.ID])
			}
		}
	}
	if wrong > 10 {
		t.Errorf("... %d items wrong in all", wrong)
	}
}

// TestKillLoopDuringGroupCommits SIGKILLs topkd 50 times while four
// producers ingest through the shared Raft log: every other kill comes from
// outside at a random moment, the others from inside a commit of the shared
// log (failpoint raftlog-commit=kill@N, after N commits: between writing the
// transaction and committing it). Producers retry each batch with the same
// sequence until it is acknowledged, so at the end every item's count must
// equal its acknowledged events: nothing lost, nothing counted twice.
func TestKillLoopDuringGroupCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real topkd process 50 times; skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("TOPKD_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (TOPKD_TEST_SEED reproduces the kill schedule)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	p := newProc(t)
	p.bin = failpointBin(t)
	p.start()
	const (
		producers = 4
		batchSize = 200
		items     = 300
		kills     = 50
	)
	var (
		led      = &ledger{want: map[string]int64{}}
		acked    atomic.Int64
		retries  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		client   = &http.Client{Timeout: 10 * time.Second}
		failures = make(chan error, producers)
	)
	for pr := range producers {
		wg.Go(func() {
			prng := rand.New(rand.NewPCG(seed, uint64(pr)+100))
			for seq := uint64(1); !stop.Load(); seq++ {
				body, local := randomBatch(prng, batchSize, items)
				deadline := time.Now().Add(2 * time.Minute)
				for {
					_, err := postEvents(client, p.url(), fmt.Sprintf("prod-%d", pr), seq, body)
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						failures <- fmt.Errorf("producer %d seq %d: not acknowledged in 2 minutes: %v", pr, seq, err)
						return
					}
					retries.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
				acked.Add(1)
				led.add(local)
			}
		})
	}
	inside, bootKills := 0, 0
	for k := 0; k < kills; k += 2 {
		before := acked.Load()
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		p.kill()
		// Restart armed to die inside its Nth commit: during boot for small
		// N, under ingest for larger ones.
		p.env = []string{fmt.Sprintf("TOPKD_FAILPOINTS=raftlog-commit=kill@%d", 5+rng.IntN(300))}
		if err := p.launch(); err != nil {
			bootKills++ // it died before it was ready: a kill during boot
		}
		if _, err := p.waitExit(60 * time.Second); err != nil {
			t.Fatalf("kill %d: %v", k+1, err)
		}
		inside++
		p.env = nil
		for p.launch() != nil { // a start may meet a port still held; try again
			p.kill()
			time.Sleep(100 * time.Millisecond)
		}
		// Let some batches through before the next kill.
		for deadline := time.Now().Add(20 * time.Second); acked.Load() == before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}
	t.Logf("%d kills (%d inside a commit, %d of them during boot); %d batches acknowledged, %d retried attempts",
		kills, inside, bootKills, acked.Load(), retries.Load())
	if retries.Load() == 0 || acked.Load() < kills {
		t.Fatalf("%d retries, %d batches: the kills did not meet the ingest", retries.Load(), acked.Load())
	}
	checkExact(t, p, led.want)
	p.kill()
	p.start()
	checkExact(t, p, led.want)
}

// TestCommitFailureStopsNode injects an error at the shared log's commit
// (failpoint raftlog-commit=error@N; bbolt's file cannot be wrapped): the
// node must exit non-zero without acknowledging the batch in flight. After a
// restart every acknowledged batch is counted once, the failed one at most
// once, and its retry with the same sequence makes it exactly once.
func TestCommitFailureStopsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real topkd processes; skipped with -short")
	}
	p := newProc(t)
	p.bin = failpointBin(t)
	p.start()
	boot := commits(t, p)
	p.kill()
	failAt := 3*boot + 40
	p.env = []string{fmt.Sprintf("TOPKD_FAILPOINTS=raftlog-commit=error@%d", failAt)}
	p.start()
	client := &http.Client{Timeout: 10 * time.Second}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]int64{}
	var failedBody []byte
	var failedLocal map[string]int64
	var failedSeq uint64
	for seq := uint64(1); seq < 10000 && failedBody == nil; seq++ {
		body, local := randomBatch(rng, 100, 50)
		if _, err := postEvents(client, p.url(), "prod", seq, body); err != nil {
			failedBody, failedLocal, failedSeq = body, local, seq
			break
		}
		for k, v := range local {
			want[k] += v
		}
	}
	if failedBody == nil {
		t.Fatalf("no request failed with the commit failing at its %dth commit", failAt)
	}
	code, err := p.waitExit(30 * time.Second)
	if err != nil {
		t.Fatalf("after a failed commit: %v", err)
	}
	if code == 0 {
		t.Fatal("topkd exited 0 after a failed commit")
	}
	logb, _ := os.ReadFile(p.log.Name())
	if !strings.Contains(string(logb), "the Raft log cannot be written") {
		t.Errorf("the log does not say why topkd stopped")
	}
	t.Logf("commit %d failed (boot takes %d); batch %d unacknowledged; exit code %d", failAt, boot, failedSeq, code)
	p.env = nil
	p.start()
	got := getTop(t, p.url(), 1000)
	for _, it := range got.Items {
		if it.Count < want[it.ID] || it.Count > want[it.ID]+failedLocal[it.ID] {
			t.Errorf("%s = %d, want %d acknowledged plus at most %d of the failed batch", it.ID, it.Count, want[it.ID], failedLocal[it.ID])
		}
	}
	if _, err := postEvents(client, p.url(), "prod", failedSeq, failedBody); err != nil {
		t.Fatalf("retry of the failed batch: %v", err)
	}
	for k, v := range failedLocal {
		want[k] += v
	}
	checkExact(t, p, want)
}

// commits reads topkd_raftlog_commits_total.
func commits(t *testing.T, p *proc) int {
	t.Helper()
	resp, err := http.Get(p.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "topkd_raftlog_commits_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f)
		}
	}
	t.Fatal("no topkd_raftlog_commits_total in /metrics")
	return 0
}

// TestMigrationKilledAtEachStep writes a data dir in the earlier layout (a
// raft-boltdb file per partition), then starts the shared-log release killed
// at each step of the migration, and once more to completion: every
// acknowledged event is counted once and the old files are gone.
func TestMigrationKilledAtEachStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real topkd processes; skipped with -short")
	}
	for _, point := range []string{
		"migrate-opened=kill",     // the old file opened, nothing copied
		"raftlog-commit=kill@1",   // inside the first partition's import commit
		"migrate-imported=kill",   // one partition imported, its old file not yet removed
		"migrate-imported=kill@3", // three partitions imported
	} {
		t.Run(point, func(t *testing.T) {
			p := newProc(t)
			p.bin = failpointBin(t)
			p.args = []string{"--raft-log-store", "per-group"}
			p.start()
			client := &http.Client{Timeout: 10 * time.Second}
			rng := rand.New(rand.NewPCG(3, 4))
			want := map[string]int64{}
			for seq := uint64(1); seq <= 30; seq++ {
				body, local := randomBatch(rng, 200, 100)
				if _, err := postEvents(client, p.url(), "prod", seq, body); err != nil {
					t.Fatal(err)
				}
				for k, v := range local {
					want[k] += v
				}
			}
			p.kill()
			old, _ := filepath.Glob(filepath.Join(p.dir, "p*", "raft.db"))
			if len(old) != 4 {
				t.Fatalf("per-group layout: %d raft.db files, want 4", len(old))
			}
			p.args = nil
			p.env = []string{"TOPKD_FAILPOINTS=" + point}
			if err := p.launch(); err == nil {
				t.Fatalf("%s: the node became ready; the failpoint never fired", point)
			}
			if _, err := p.waitExit(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			left, _ := filepath.Glob(filepath.Join(p.dir, "p*", "raft.db"))
			t.Logf("killed at %s: %d of 4 old files left", point, len(left))
			p.env = nil
			p.start()
			if left, _ := filepath.Glob(filepath.Join(p.dir, "p*", "raft.db")); len(left) != 0 {
				t.Errorf("old files left after the migration: %v", left)
			}
			checkExact(t, p, want)
			// Deduplication came along with the log: a retry is not counted again.
			body, _ := randomBatch(rand.New(rand.NewPCG(3, 4)), 200, 100)
			if out, err := postEvents(client, p.url(), "prod", 1, body); err != nil || out["duplicate"] != true {
				t.Errorf("retry of batch 1 after the migration: %v, %v; want a duplicate", out, err)
			}
			checkExact(t, p, want)
		})
	}
}

// TestDamagedSharedLogRefused: a data dir whose raftlog.db was truncated to
// half, or overwritten with zeros, makes topkd exit with one line naming the
// file (not SIGBUS or a panic inside bbolt), and never serve.
func TestDamagedSharedLogRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real topkd processes; skipped with -short")
	}
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"64 KiB of zeros", func([]byte) []byte { return make([]byte, 64<<10) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newProc(t)
			p.start()
			client := &http.Client{Timeout: 10 * time.Second}
			for seq := uint64(1); seq <= 20; seq++ {
				body, _ := randomBatch(rand.New(rand.NewPCG(seq, 9)), 500, 5000)
				if _, err := postEvents(client, p.url(), "prod", seq, body); err != nil {
					t.Fatal(err)
				}
			}
			p.kill()
			path := filepath.Join(p.dir, "raftlog.db")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, c.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			code, msg := startAgain(t, p)
			if code != 1 || !strings.Contains(msg, path) || !strings.Contains(msg, "damaged") || strings.Contains(msg, "panic") || strings.Contains(msg, "SIGBUS") {
				t.Fatalf("exit code %d, output:\n%s\nwant exit 1 and one line naming %s as damaged", code, msg, path)
			}
		})
	}
}

// stopDamageStart stops p (SIGTERM: a clean shutdown records what each group
// applied), lets damage change its data dir, starts it again with extra
// flags and returns its exit code (-1 while it runs) and the new output.
func stopDamageStart(t *testing.T, p *proc, damage func(dir string), extra ...string) (int, string) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.waitExit(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("clean stop: exit %d, %v", code, err)
	}
	damage(p.dir)
	return startAgain(t, p, extra...)
}

// TestLostLogRefused: raftlog.db removed (the snapshots kept) loses the
// entries after each partition's snapshot. The node refuses to start,
// naming the group and what it had applied, instead of serving partial
// counts; --accept-data-loss starts it on what is left, and later starts
// need no flag.
func TestLostLogRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real topkd processes; skipped with -short")
	}
	p := newProc(t)
	p.args = []string{"--snapshot-entries", "10", "--snapshot-interval", "200ms", "--trailing-logs", "1000"}
	p.start()
	postSeeded(t, p, 40, 7, func(seq uint64) {
		if seq == 20 {
			time.Sleep(time.Second) // snapshots taken here; the rest live only in the log
		}
	})
	code, out := stopDamageStart(t, p, func(dir string) {
		if err := os.Remove(filepath.Join(dir, "raftlog.db")); err != nil {
			t.Fatal(err)
		}
	})
	if code != 1 || !strings.Contains(out, "damaged storage") || !strings.Contains(out, "manifest.json") || !strings.Contains(out, "group p") {
		t.Fatalf("start without raftlog.db: exit %d, output:\n%s\nwant exit 1 naming a group and the manifest", code, out)
	}
	code, out = startAgain(t, p, "--accept-data-loss")
	if code != -1 || !strings.Contains(out, "starting a group that lost data") {
		t.Fatalf("--accept-data-loss: exit %d, output:\n%s", code, out)
	}
	got := getTop(t, p.url(), 1000)
	if len(got.Items) == 0 {
		t.Fatal("nothing left to serve after --accept-data-loss")
	}
	if code, out = stopDamageStart(t, p, func(string) {}); code != -1 {
		t.Fatalf("restart after accepting the loss: exit %d:\n%s", code, out)
	}
}

// postSeeded posts batches 1..n of 200 events over 500 items as producer
// "prod", batch seq drawn from seed (seq, stream); after runs after each.
func postSeeded(t *testing.T, p *proc, n, stream uint64, after func(seq uint64)) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	for seq := uint64(1); seq <= n; seq++ {
		body, _ := randomBatch(rand.New(rand.NewPCG(seq, stream)), 200, 500)
		if _, err := postEvents(client, p.url(), "prod", seq, body); err != nil {
			t.Fatal(err)
		}
		after(seq)
	}
}

// startAgain starts a stopped p again with extra flags.
func startAgain(t *testing.T, p *proc, extra ...string) (int, string) {
	t.Helper()
	off, _ := p.log.Seek(0, io.SeekEnd)
	args := p.args
	p.args = append(append([]string(nil), p.args...), extra...)
	defer func() { p.args = args }()
	code := -1
	if err := p.launch(); err != nil {
		var werr error
		if code, werr = p.waitExit(10 * time.Second); werr != nil {
			t.Fatal(werr)
		}
	}
	out := make([]byte, 8192)
	n, _ := p.log.ReadAt(out, off)
	return code, string(out[:n])
}

// TestDamagedSnapshotRefused: the newest snapshot of a partition damaged,
// and its log compacted past the older snapshot raft falls back to. raft
// would panic ("log not found"); topkd exits with one line naming the
// snapshots.
func TestDamagedSnapshotRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real topkd processes; skipped with -short")
	}
	p := newProc(t)
	p.args = []string{"--snapshot-entries", "10", "--snapshot-interval", "100ms", "--trailing-logs", "2"}
	p.start()
	postSeeded(t, p, 60, 8, func(seq uint64) {
		if seq%15 == 0 {
			time.Sleep(500 * time.Millisecond) // let snapshots and compaction happen
		}
	})
	time.Sleep(500 * time.Millisecond)
	var damaged string
	code, out := stopDamageStart(t, p, func(dir string) {
		snaps, _ := filepath.Glob(filepath.Join(dir, "p0", "snapshots", "*"))
		if len(snaps) < 2 {
			t.Fatalf("partition 0 kept %d snapshots, want 2", len(snaps))
		}
		slices.Sort(snaps) // term-index-time: the newest last
		damaged = filepath.Join(snaps[len(snaps)-1], "state.bin")
		b, err := os.ReadFile(damaged)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(b) / 2; i < len(b)/2+16 && i < len(b); i++ {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(damaged, b, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if code != 1 || !strings.Contains(out, "damaged storage") || !strings.Contains(out, filepath.Join(p.dir, "p0", "snapshots")) || strings.Contains(out, "goroutine ") {
		t.Fatalf("start with %s damaged: exit %d, output:\n%s\nwant exit 1 and one line naming the snapshots", damaged, code, out)
	}
}
