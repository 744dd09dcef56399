package clustertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/topkd/topkd/client"
	"github.com/topkd/topkd/cluster-test/history"
	"github.com/topkd/topkd/cluster-test/testbed"
)

// Fault tests: a cluster in containers (or processes on loopback without
// Docker), producers and readers recording a history, faults from a
// seeded schedule, then the checkers. TOPKD_FAULT_SEED replays a schedule;
// TOPKD_FAULT_SCALE=full runs the full lengths (make cluster-test), else
// the shortened ones CI runs; TOPKD_TESTBED=processes forces processes.

// faultScale is how long the scenarios run: 1 in CI, 5 in full.
func faultScale() int {
	if os.Getenv("TOPKD_FAULT_SCALE") == "full" {
		return 5
	}
	return 1
}

// faultRun is one scenario's cluster, clients, history and random source.
type faultRun struct {
	t    *testing.T
	bed  testbed.Cluster
	rng  *rand.Rand
	h    *history.History
	adm  *client.Client // every node, for status and verification
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	// reads and readErrs count the readers' calls.
	reads, readErrs atomic.Int64
	// gone marks nodes that left the cluster: final checks skip them.
	gone map[int]bool
}

// newFaultRun starts an n-node cluster with R = 3 and waits until every
// partition has its replicas. needNet skips the test where the testbed
// cannot cut the network.
func newFaultRun(t *testing.T, n int, needNet bool, extra ...string) *faultRun {
	return newFaultRunOf(t, runSpec{nodes: n, started: n, needNet: needNet, args: extra})
}

// runSpec is a scenario's cluster: nodes prepared, the first started of
// them started; needNet skips without network faults; powerLoss puts the
// data on lossyfs (processes only).
type runSpec struct {
	nodes, started     int
	needNet, powerLoss bool
	args               []string
}

// newFaultRunOf prepares a cluster as spec says.
func newFaultRunOf(t *testing.T, spec runSpec) *faultRun {
	n, started, needNet := spec.nodes, spec.started, spec.needNet
	t.Helper()
	if testing.Short() {
		t.Skip("fault scenario; skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TOPKD_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TOPKD_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: TOPKD_FAULT_SEED=%d go test ./cluster-test -run '^%s$')", seed, seed, t.Name())
	opts := testbed.Options{Nodes: n, DeadNodeGrace: time.Hour, Args: spec.args, Logf: t.Logf, PowerLoss: spec.powerLoss}
	var bed testbed.Cluster
	var err error
	if spec.powerLoss && (os.Geteuid() != 0 || !fileExists("/dev/fuse")) {
		t.Skip("power loss needs root and /dev/fuse (a lossyfs mount per node)")
	}
	if !spec.powerLoss && os.Getenv("TOPKD_TESTBED") != "processes" && testbed.DockerAvailable() {
		bed, err = testbed.NewDocker(opts)
	} else {
		if needNet {
			t.Skip("needs network faults: no Docker engine (or TOPKD_TESTBED=processes)")
		}
		bed, err = testbed.NewProcesses(opts, t.TempDir())
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &faultRun{t: t, bed: bed, rng: rand.New(rand.NewPCG(seed, 0x70bd)), h: &history.History{}, gone: map[int]bool{}}
	r.ctx, r.stop = context.WithCancel(context.Background())
	t.Cleanup(func() {
		r.stop()
		r.wg.Wait()
		if t.Failed() {
			for i := range bed.Size() {
				t.Logf("%s log tail:\n%s", testbed.NodeID(i), bed.LogTail(i, 3000))
			}
		}
		bed.Close()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i := range started {
		if err := bed.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	r.setAdmin()
	t.Cleanup(func() { r.adm.Close(context.Background()) })
	r.waitPlaced(ctx, 3)
	t.Logf("%d nodes (%s), every partition on 3 replicas", started, bed.Kind())
	return r
}

// setAdmin points the admin client at the nodes that did not leave.
func (r *faultRun) setAdmin() {
	var urls []string
	for i := range r.bed.Size() {
		if !r.gone[i] {
			urls = append(urls, r.bed.URL(i))
		}
	}
	c, err := client.New(urls, client.WithDiscovery(0), client.WithRetryTimeout(5*time.Second), client.WithAttemptTimeout(2*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	if r.adm != nil {
		r.adm.Close(context.Background())
	}
	r.adm = c
}

// waitPlaced waits until every partition has a leader and replicas voters
// and no move is in flight.
func (r *faultRun) waitPlaced(ctx context.Context, replicas int) {
	r.t.Helper()
	var last string
	for {
		st, err := r.adm.Status(ctx)
		if err == nil {
			last = fmt.Sprintf("%d moves", len(st.Moves))
			done := len(st.Moves) == 0 && len(st.Replicas) == int(st.Partitions)
			for _, p := range st.Replicas {
				if p.Leader == "" || len(p.Voters) != replicas {
					done = false
					last += fmt.Sprintf("; partition %d: leader %q, voters %v", p.Partition, p.Leader, p.Voters)
				}
			}
			if done {
				return
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			r.t.Fatalf("partitions not placed: %s", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leaders returns the nodes (by index) leading at least one partition.
func (r *faultRun) leaders(ctx context.Context) []int {
	st, err := r.adm.Status(ctx)
	if err != nil {
		return nil
	}
	var out []int
	for i := range r.bed.Size() {
		if slices.ContainsFunc(st.Replicas, func(p client.PartitionStatus) bool { return p.Leader == testbed.NodeID(i) }) {
			out = append(out, i)
		}
	}
	return out
}

// pickLeader returns a random node leading a partition, or a random node.
func (r *faultRun) pickLeader(ctx context.Context) int {
	if ls := r.leaders(ctx); len(ls) > 0 {
		return ls[r.rng.IntN(len(ls))]
	}
	return r.rng.IntN(r.bed.Size())
}

const faultItems = 200

func faultItem(i int) string { return fmt.Sprintf("item-%03d", i) }

// produce runs n producers until stop, each sending batches of 20 distinct
// items through every node it learns of (the Go client, routing on). A
// batch whose outcome is unknown is resent under its sequence until the
// answer is known or the run stops.
func (r *faultRun) produce(n int) {
	urls := make([]string, r.bed.Size())
	for i := range urls {
		urls[i] = r.bed.URL(i)
	}
	for p := range n {
		c, err := client.New(urls, client.WithRetryTimeout(5*time.Second), client.WithAttemptTimeout(2*time.Second),
			client.WithDiscovery(time.Second))
		if err != nil {
			r.t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(r.rng.Uint64(), uint64(p)))
		r.wg.Go(func() {
			defer c.Close(context.Background())
			id, _ := c.Producer()
			for r.ctx.Err() == nil {
				events := make([]client.Event, 0, 20)
				adds := map[string]int64{}
				for _, k := range rng.Perm(faultItems)[:20] {
					e := client.Event{Item: faultItem(k), Count: int64(1 + rng.IntN(3))}
					events = append(events, e)
					adds[e.Item] = e.Count
				}
				w := r.h.Begin(id, adds)
				res, err := c.IngestBatch(r.ctx, "", events)
				for client.OutcomeUnknown(err) && r.ctx.Err() == nil {
					var u *client.UnknownOutcomeError
					errors.As(err, &u)
					res, err = c.Resend(r.ctx, "", events, u.Sequence)
					res.Sequence = u.Sequence
				}
				switch {
				case err == nil:
					r.h.End(w, res.Sequence, history.OK)
				case client.OutcomeUnknown(err) || r.ctx.Err() != nil:
					r.h.End(w, res.Sequence, history.Unknown)
				default:
					r.h.End(w, res.Sequence, history.Failed)
					time.Sleep(50 * time.Millisecond) // refused (no quorum, say): do not spin
				}
			}
		})
	}
}

// read runs readers until stop: Count of a random item, or a top-K whose
// every item is one read, at a random consistency from a random node.
func (r *faultRun) read(n int) {
	nodes := make([]*client.Client, r.bed.Size())
	for i := range nodes {
		c, err := client.New([]string{r.bed.URL(i)}, client.WithDiscovery(0), client.WithRetryTimeout(2*time.Second),
			client.WithAttemptTimeout(time.Second))
		if err != nil {
			r.t.Fatal(err)
		}
		nodes[i] = c
		r.t.Cleanup(func() { c.Close(context.Background()) })
	}
	levels := []client.Consistency{client.Linearizable, client.Leader, client.Cached}
	for k := range n {
		rng := rand.New(rand.NewPCG(r.rng.Uint64(), uint64(k)))
		r.wg.Go(func() {
			for r.ctx.Err() == nil {
				c := nodes[rng.IntN(len(nodes))]
				level := levels[rng.IntN(len(levels))]
				start := time.Now()
				if rng.IntN(4) == 0 {
					top, err := c.TopK(r.ctx, "", "all", faultItems, client.WithConsistency(level))
					end := time.Now()
					r.reads.Add(1)
					if err != nil {
						r.readErrs.Add(1)
						continue
					}
					for _, it := range top.Items {
						r.h.AddRead(history.Read{Item: it.ID, Consistency: level.String(), Start: start, End: end, Value: it.Count})
					}
					continue
				}
				item := faultItem(rng.IntN(faultItems))
				got, err := c.Count(r.ctx, "", item, "all", client.WithConsistency(level))
				end := time.Now()
				r.reads.Add(1)
				if err != nil {
					r.readErrs.Add(1)
					continue
				}
				r.h.AddRead(history.Read{Item: item, Consistency: level.String(), Start: start, End: end, Value: got.Count})
			}
		})
	}
}

// sleep waits d unless the test's context ends.
func (r *faultRun) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-r.t.Context().Done():
	}
}

// finish stops the clients once writes succeed again, then runs the
// checkers: exact counts on every node, reads inside their bounds, replica
// digests equal. It logs the figures the closing notes quote.
func (r *faultRun) finish(healed time.Time, began time.Time) {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if d, ok := r.h.FirstAckAfter(healed); ok {
			t.Logf("writes acknowledged again %v after the last fault healed", d.Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write acknowledged within 60s of the last fault healing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.sleep(time.Second)
	end := time.Now()
	r.stop()
	r.wg.Wait()
	r.waitPlaced(ctx, 3)

	tally := r.h.Tally()
	t.Logf("%d batches: %d acknowledged (%d events), %d failed, %d unknown (%d events); %d reads (%d errors); longest write gap %v",
		tally.Writes, tally.OK, tally.EventsAcked, tally.Failed, tally.Unknown, tally.EventsUnknown, r.reads.Load(), r.readErrs.Load(),
		r.h.LongestGap(began, end).Round(time.Millisecond))
	writes := r.h.Writes()
	if tally.OK == 0 {
		t.Fatal("no batch acknowledged: the scenario proves nothing")
	}
	// A batch abandoned when the clients stopped may still commit: read
	// every node until they agree.
	var finals []map[string]int64
	for try := 0; ; try++ {
		finals = r.finalCounts(ctx)
		if slices.IndexFunc(finals[1:], func(f map[string]int64) bool { return !maps.Equal(f, finals[0]) }) < 0 {
			break
		}
		if try == 20 {
			t.Fatalf("nodes still answer different counts after 10 s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	for i, final := range finals {
		res := history.CheckExactlyOnce(writes, final)
		if !res.OK() {
			t.Errorf("%s: %v; first unexplained items %v", testbed.NodeID(i), res, res.Unexplained[:min(5, len(res.Unexplained))])
		} else if i == 0 {
			t.Logf("exactly once, the same on every node: %v", res)
		}
	}
	reads := r.h.Reads()
	if bad := history.CheckReads(writes, reads, "linearizable"); len(bad) > 0 {
		for _, v := range bad[:min(5, len(bad))] {
			t.Errorf("read outside the counter model: %v", v)
		}
		t.Errorf("%d of %d reads outside their bounds", len(bad), len(reads))
	} else {
		t.Logf("%d reads inside the counter model's bounds", len(reads))
	}
	start := time.Now()
	switch res, ops := history.CheckLinearizable(writes, reads, "linearizable", time.Minute); res {
	case porcupine.Ok:
		t.Logf("linearizable: %d per-item operations checked by porcupine in %v", ops, time.Since(start).Round(time.Millisecond))
	case porcupine.Unknown:
		t.Logf("linearizability of %d per-item operations not decided within a minute", ops)
	default:
		t.Errorf("porcupine: the linearizable reads and the writes of %d per-item operations are not linearizable", ops)
	}
	v, err := r.adm.VerifyReplicas(ctx)
	if err != nil {
		t.Fatalf("verify replicas: %v", err)
	}
	if !v.Consistent {
		t.Errorf("replica digests disagree: %v", v)
	}
	for _, p := range v.Partitions {
		if p.Error != "" || len(p.Replicas) < 3 {
			t.Errorf("partition %d: %d replicas checked, error %q", p.Partition, len(p.Replicas), p.Error)
		}
	}
}

// finalCounts reads every item's count from every node at linearizable.
func (r *faultRun) finalCounts(ctx context.Context) []map[string]int64 {
	var out []map[string]int64
	for i := range r.bed.Size() {
		if r.gone[i] {
			continue
		}
		c, err := client.New([]string{r.bed.URL(i)}, client.WithDiscovery(0))
		if err != nil {
			r.t.Fatal(err)
		}
		top, err := c.TopK(ctx, "", "all", faultItems, client.WithConsistency(client.Linearizable))
		c.Close(context.Background())
		if err != nil {
			r.t.Fatalf("final top-k from %s: %v", testbed.NodeID(i), err)
		}
		final := map[string]int64{}
		for _, it := range top.Items {
			final[it.ID] = it.Count
		}
		out = append(out, final)
	}
	return out
}

// TestFaultLeaderKillLoop: SIGKILL a random partition leader every 10 s
// (CI: every 5 s, 4 times; full: 30 times, 5 min) under load.
func TestFaultLeaderKillLoop(t *testing.T) {
	r := newFaultRun(t, 3, false)
	r.produce(4)
	r.read(2)
	began := time.Now()
	every, kills := 5*time.Second, 4
	if faultScale() > 1 {
		every, kills = 10*time.Second, 30
	}
	var healed time.Time
	for range kills {
		r.sleep(every - 2*time.Second)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		victim := r.pickLeader(ctx)
		if err := r.bed.Kill(victim); err != nil {
			t.Fatal(err)
		}
		r.sleep(time.Duration(500+r.rng.IntN(1500)) * time.Millisecond)
		if err := r.bed.Start(ctx, victim); err != nil {
			t.Fatal(err)
		}
		cancel()
		healed = time.Now()
	}
	r.finish(healed, began)
}

// leaderFaults runs rounds of 2 s of load, then inject on a node leading
// a partition, held 10 s, then the heal inject returned; then the checks.
func leaderFaults(t *testing.T, needNet bool, inject func(r *faultRun, victim int) (heal func() error, err error)) {
	r := newFaultRun(t, 3, needNet)
	r.produce(4)
	r.read(2)
	began := time.Now()
	var healed time.Time
	for range 2 * faultScale() {
		r.sleep(2 * time.Second)
		heal, err := inject(r, r.pickLeader(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		r.sleep(10 * time.Second)
		if err := heal(); err != nil {
			t.Fatal(err)
		}
		healed = time.Now()
	}
	r.finish(healed, began)
}

// TestFaultNodePaused: a node leading partitions is frozen for 10 s (CI:
// twice; full: ten times) while the others carry on.
func TestFaultNodePaused(t *testing.T) {
	leaderFaults(t, false, func(r *faultRun, victim int) (func() error, error) {
		return func() error { return r.bed.Resume(victim) }, r.bed.Pause(victim)
	})
}

// TestFaultLeaderIsolated: a node leading partitions is cut off the
// network, a minority of one, for 10 s (CI: twice; full: ten times).
func TestFaultLeaderIsolated(t *testing.T) {
	leaderFaults(t, true, func(r *faultRun, victim int) (func() error, error) {
		return func() error { return r.bed.Heal(victim) }, r.bed.Isolate(victim)
	})
}

// TestFaultPartialPartition: a partition leader loses its link to one
// other node while both still reach the third, for 10 s (CI: twice;
// full: ten times).
func TestFaultPartialPartition(t *testing.T) {
	leaderFaults(t, true, func(r *faultRun, a int) (func() error, error) {
		return r.bed.HealCuts, r.bed.Cut(a, (a+1+r.rng.IntN(2))%3)
	})
}

// TestFaultRollingRestart: every node in turn is killed and restarted once
// the cluster has every replica again (full: three rounds).
func TestFaultRollingRestart(t *testing.T) {
	r := newFaultRun(t, 3, false)
	r.produce(4)
	r.read(2)
	began := time.Now()
	var healed time.Time
	for round := range max(1, faultScale()-2) {
		for i := range r.bed.Size() {
			r.sleep(time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			if err := r.bed.Kill(i); err != nil {
				t.Fatal(err)
			}
			if err := r.bed.Start(ctx, i); err != nil {
				t.Fatal(err)
			}
			r.waitPlaced(ctx, 3)
			cancel()
			healed = time.Now()
			t.Logf("round %d: %s restarted", round+1, testbed.NodeID(i))
		}
	}
	r.finish(healed, began)
}

// TestFaultJoinAndLeave: a fourth node joins under load and receives
// replicas; then it leaves (drained first) and the first node leaves too,
// so the three left hold every partition.
func TestFaultJoinAndLeave(t *testing.T) {
	r := newFaultRunOf(t, runSpec{nodes: 5, started: 3})
	r.produce(4)
	r.read(2)
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	r.sleep(2 * time.Second)
	for _, i := range []int{3, 4} {
		if err := r.bed.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for { // the new nodes receive replicas
		st, err := r.adm.Status(ctx)
		if err == nil && len(st.Moves) == 0 && slices.ContainsFunc(st.Replicas, func(p client.PartitionStatus) bool {
			return slices.Contains(p.Voters, testbed.NodeID(3)) || slices.Contains(p.Voters, testbed.NodeID(4))
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the joined nodes received no replica within 2 minutes")
		}
		r.sleep(200 * time.Millisecond)
	}
	r.waitPlaced(ctx, 3)
	t.Logf("n4 and n5 joined and hold replicas")
	for _, i := range []int{3, 0} {
		start := time.Now()
		if err := r.adm.Leave(ctx, testbed.NodeID(i), false, func(msg string) { t.Logf("leave %s: %s", testbed.NodeID(i), msg) }); err != nil {
			t.Fatalf("leave %s: %v", testbed.NodeID(i), err)
		}
		r.gone[i] = true
		r.setAdmin()
		if err := r.bed.Kill(i); err != nil {
			t.Fatal(err)
		}
		r.waitPlaced(ctx, 3)
		t.Logf("%s left in %v", testbed.NodeID(i), time.Since(start).Round(time.Millisecond))
	}
	r.finish(time.Now(), began)
}

// TestFaultSnapshotInstall: with snapshots every 32 entries and 8 kept
// after them, a node paused for 8 s falls behind every leader's log and
// must install snapshots when it resumes (counted by its
// topkd_snapshot_seconds{phase="restore"}); twice (full: five times).
func TestFaultSnapshotInstall(t *testing.T) {
	r := newFaultRun(t, 3, false, "--snapshot-entries", "32", "--trailing-logs", "8", "--snapshot-interval", "500ms")
	r.produce(4)
	r.read(2)
	began := time.Now()
	var healed time.Time
	for range max(2, faultScale()) {
		r.sleep(2 * time.Second)
		victim := r.rng.IntN(r.bed.Size())
		before := restores(t, r.bed.URL(victim))
		if err := r.bed.Pause(victim); err != nil {
			t.Fatal(err)
		}
		r.sleep(8 * time.Second)
		if err := r.bed.Resume(victim); err != nil {
			t.Fatal(err)
		}
		healed = time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		r.waitPlaced(ctx, 3)
		cancel()
		deadline := time.Now().Add(30 * time.Second)
		for restores(t, r.bed.URL(victim)) == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s installed no snapshot within 30 s of resuming", testbed.NodeID(victim))
			}
			r.sleep(200 * time.Millisecond)
		}
		t.Logf("%s resumed and installed %d snapshots", testbed.NodeID(victim), restores(t, r.bed.URL(victim))-before)
	}
	r.finish(healed, began)
}

// restores reads how many snapshots a node restored since it started.
func restores(t *testing.T, url string) int {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `topkd_snapshot_seconds_count{phase="restore"} `); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestFaultDivergentFollower builds hashicorp/raft #697's state on purpose:
// a node leading partitions is cut from both peers but not from the
// clients, so it keeps appending entries it cannot commit while the other
// two elect leaders and, with snapshots every 32 entries and 8 kept after
// them, compact past it. Healed, it holds divergent uncommitted entries and
// must take a snapshot; every replica must agree within 60 s (twice; full:
// five times).
func TestFaultDivergentFollower(t *testing.T) {
	r := newFaultRun(t, 3, true, "--snapshot-entries", "32", "--trailing-logs", "8", "--snapshot-interval", "500ms")
	r.produce(6)
	r.read(2)
	began := time.Now()
	var healed time.Time
	for range max(2, faultScale()) {
		r.sleep(2 * time.Second)
		old := r.pickLeader(t.Context())
		before := restores(t, r.bed.URL(old))
		for j := range r.bed.Size() {
			if j != old {
				if err := r.bed.Cut(old, j); err != nil {
					t.Fatal(err)
				}
			}
		}
		r.sleep(8 * time.Second)
		if err := r.bed.HealCuts(); err != nil {
			t.Fatal(err)
		}
		healed = time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		r.waitPlaced(ctx, 3)
		for restores(t, r.bed.URL(old)) == before && ctx.Err() == nil {
			r.sleep(200 * time.Millisecond)
		}
		cancel()
		t.Logf("%s rejoined in %v, %d snapshots installed", testbed.NodeID(old), time.Since(healed).Round(time.Millisecond),
			restores(t, r.bed.URL(old))-before)
	}
	r.finish(healed, began)
}

// TestFaultTransferChurn: the preferred leader of a random partition is
// paused for 1.5 s (leadership moves away), resumed (the placement loop
// hands leadership back to it: a transfer), and while that transfer may be
// under way a random node is paused for 1 s, as in hashicorp/raft #696
// where a transfer stalls when a leader steps down midway. Ten rounds (full:
// fifty); transfers are counted in the nodes' logs.
func TestFaultTransferChurn(t *testing.T) {
	r := newFaultRun(t, 3, false)
	r.produce(4)
	r.read(2)
	began := time.Now()
	var healed time.Time
	for range 10 * faultScale() {
		st, err := r.adm.Status(t.Context())
		if err != nil || len(st.Replicas) == 0 {
			t.Fatalf("status: %v", err)
		}
		p := st.Replicas[r.rng.IntN(len(st.Replicas))]
		preferred := -1
		for i := range r.bed.Size() {
			if len(p.Placement) > 0 && testbed.NodeID(i) == p.Placement[0] {
				preferred = i
			}
		}
		if preferred < 0 {
			t.Fatalf("partition %d has no placement", p.Partition)
		}
		for _, step := range []struct {
			node  int
			pause time.Duration
		}{{preferred, 1500 * time.Millisecond}, {r.rng.IntN(r.bed.Size()), time.Second}} {
			if err := r.bed.Pause(step.node); err != nil {
				t.Fatal(err)
			}
			r.sleep(step.pause)
			if err := r.bed.Resume(step.node); err != nil {
				t.Fatal(err)
			}
			r.sleep(time.Duration(300+r.rng.IntN(500)) * time.Millisecond)
		}
		healed = time.Now()
	}
	transfers := 0
	for i := range r.bed.Size() {
		transfers += strings.Count(r.bed.LogTail(i, 1<<20), "handing leadership to the preferred leader")
	}
	t.Logf("%d leadership transfers to preferred leaders in the nodes' logs", transfers)
	if transfers == 0 {
		t.Error("no leadership transfer happened: the scenario proves nothing")
	}
	r.finish(healed, began)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestFaultPowerLoss: three processes whose data directories lose every
// write not fsynced when their power goes (lossyfs). Cycles of ingest and
// the power of one random node lost, then of all three at once, each
// followed by restarts: every node comes back and no acknowledged event is
// lost. CI: 10 single and 2 whole-cluster cycles; full: 100 and 10.
func TestFaultPowerLoss(t *testing.T) {
	r := newFaultRunOf(t, runSpec{nodes: 3, started: 3, powerLoss: true})
	r.produce(4)
	r.read(2)
	began := time.Now()
	singles, wholes := 10, 2
	if faultScale() > 1 {
		singles, wholes = 100, 10
	}
	var healed time.Time
	restart := func(nodes ...int) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		// Together: a node alone waits for a quorum of the meta group.
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for k, i := range nodes {
			wg.Go(func() { errs[k] = r.bed.Start(ctx, i) })
		}
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				t.Fatalf("%s did not restart after losing power: %v", testbed.NodeID(nodes[k]), err)
			}
		}
		healed = time.Now()
		if _, ok := r.h.FirstAckAfter(healed); !ok {
			deadline := time.Now().Add(30 * time.Second)
			for ; ; r.sleep(100 * time.Millisecond) {
				if _, ok := r.h.FirstAckAfter(healed); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no write acknowledged within 30 s of the restart")
				}
			}
		}
	}
	for c := range singles {
		r.sleep(time.Duration(300+r.rng.IntN(700)) * time.Millisecond)
		victim := r.rng.IntN(3)
		if err := r.bed.PowerOff(victim); err != nil {
			t.Fatal(err)
		}
		restart(victim)
		if c%10 == 9 {
			t.Logf("%d single power losses", c+1)
		}
	}
	for range wholes {
		r.sleep(time.Second)
		for i := range 3 {
			if err := r.bed.PowerOff(i); err != nil {
				t.Fatal(err)
			}
		}
		restart(0, 1, 2)
		t.Logf("whole cluster powered off and back")
	}
	r.finish(healed, began)
}
