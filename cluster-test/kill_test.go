package clustertest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterKillLoop: four nodes, R = 3, 4 partitions, producers ingesting
// exactly-once through every node. Ten times a node leading a partition is
// SIGKILLed and restarted; then one node stays dead past --dead-node-grace
// while its replicas are re-created on the others, and comes back. Every
// acknowledged batch counts exactly once on every node, and the replicas'
// digests agree.
func TestClusterKillLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("SIGKILLs nodes of a four-node cluster; skipped with -short")
	}
	grace := []string{"--dead-node-grace", "3s"}
	start := func(id string, first *proc) *proc {
		p := newProc(t)
		p.args = append([]string{"--node-id", id, "--replicas", "3"}, grace...)
		if first != nil {
			p.args = append(p.args, "--join", first.gossip)
		}
		p.start()
		return p
	}
	n1 := start("n1", nil)
	procs := []*proc{n1, start("n2", n1), start("n3", n1), start("n4", n1)}
	waitConverged(t, procs, 3, 60*time.Second)

	ps := startProducers(4, 300, 11, procs)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := range 10 {
		var leaders []*proc
		for _, p := range procs {
			if st, err := p.status(); err == nil && slices.ContainsFunc(st.Partitions, func(ps partitionState) bool { return ps.State == "Leader" }) {
				leaders = append(leaders, p)
			}
		}
		if len(leaders) == 0 {
			t.Fatalf("kill %d: no node leads a partition", k+1)
		}
		victim := leaders[rng.IntN(len(leaders))]
		victim.kill()
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		victim.start()
		ps.waitAcked(t, 20, 30*time.Second) // ingest resumes
	}
	t.Logf("10 leader kills: %d batches acknowledged", ps.acked.Load())

	// Dead past the grace period: its replicas move to the three others.
	dead := procs[3]
	dead.kill()
	waitConverged(t, procs[:3], 4, 90*time.Second)
	t.Logf("%s dead past the grace period: its replicas re-created on the others", dead.args[1])
	dead.start()
	waitConverged(t, procs, 3, 90*time.Second)
	ps.waitAcked(t, 20, 30*time.Second)
	ps.stop(t)
	for _, p := range procs {
		checkExact(t, p, ps.led.want)
	}
	verifyAll(t, procs[0])
	t.Logf("%d batches acknowledged; exact on every node after 10 leader kills and a dead node replaced and back", ps.acked.Load())
}

// verifyAll asks a node to compare every partition's replica digests.
func verifyAll(t *testing.T, via *proc) {
	t.Helper()
	resp, err := http.Post(via.url()+"/api/verify-replicas", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("verify-replicas: status %d", resp.StatusCode)
	}
}

// producers ingest exactly-once batches through a changing set of nodes
// until stopped: each batch is retried, with its sequence, on the next node
// until acknowledged, and only then added to the ledger.
type producers struct {
	led      *ledger
	acked    atomic.Int64
	stopped  atomic.Bool
	wg       sync.WaitGroup
	failures chan error
	mu       sync.Mutex
	targets  []*proc
}

// startProducers starts n producers of batches of 100 events over items ids.
func startProducers(n, items int, seed uint64, targets []*proc) *producers {
	ps := &producers{led: &ledger{want: map[string]int64{}}, failures: make(chan error, n), targets: slices.Clone(targets)}
	client := &http.Client{Timeout: 5 * time.Second}
	for pr := range n {
		ps.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(pr), seed))
			for seq := uint64(1); !ps.stopped.Load(); seq++ {
				body, local := randomBatch(rng, 100, items)
				deadline := time.Now().Add(90 * time.Second)
				for try := 0; ; try++ {
					ps.mu.Lock()
					p := ps.targets[(int(seq)+try)%len(ps.targets)]
					ps.mu.Unlock()
					if _, err := postEvents(client, p.url(), fmt.Sprintf("prod-%d", pr), seq, body); err == nil {
						break
					} else if time.Now().After(deadline) {
						ps.failures <- fmt.Errorf("producer %d seq %d: not acknowledged in 90 s: %v", pr, seq, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				ps.acked.Add(1)
				ps.led.add(local)
			}
		})
	}
	return ps
}

// sendTo replaces the nodes batches go to.
func (ps *producers) sendTo(targets []*proc) {
	ps.mu.Lock()
	ps.targets = slices.Clone(targets)
	ps.mu.Unlock()
}

// waitAcked waits until n more batches are acknowledged.
func (ps *producers) waitAcked(t *testing.T, n int64, within time.Duration) {
	t.Helper()
	before := ps.acked.Load()
	for deadline := time.Now().Add(within); ps.acked.Load() < before+n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d batches acknowledged in %v, want %d", ps.acked.Load()-before, within, n)
		}
	}
}

// stop ends the producers and fails t on any batch never acknowledged.
func (ps *producers) stop(t *testing.T) {
	t.Helper()
	ps.stopped.Store(true)
	ps.wg.Wait()
	close(ps.failures)
	for err := range ps.failures {
		t.Fatal(err)
	}
}
