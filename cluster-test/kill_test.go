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

	led := &ledger{want: map[string]int64{}}
	var (
		stop     atomic.Bool
		acked    atomic.Int64
		wg       sync.WaitGroup
		failures = make(chan error, 4)
		client   = &http.Client{Timeout: 5 * time.Second}
	)
	for pr := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(pr), 11))
			for seq := uint64(1); !stop.Load(); seq++ {
				body, local := randomBatch(rng, 100, 300)
				deadline := time.Now().Add(90 * time.Second)
				for try := 0; ; try++ {
					p := procs[(int(seq)+try)%len(procs)]
					if _, err := postEvents(client, p.url(), fmt.Sprintf("prod-%d", pr), seq, body); err == nil {
						break
					} else if time.Now().After(deadline) {
						failures <- fmt.Errorf("producer %d seq %d: not acknowledged in 90 s: %v", pr, seq, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				acked.Add(1)
				led.add(local)
			}
		})
	}
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
		before := acked.Load()
		victim.kill()
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		victim.start()
		for deadline := time.Now().Add(30 * time.Second); acked.Load() < before+20; {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d (%s): ingest did not resume within 30 s", k+1, victim.args[1])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("10 leader kills: %d batches acknowledged", acked.Load())

	// Dead past the grace period: its replicas move to the three others.
	dead := procs[3]
	dead.kill()
	waitConverged(t, procs[:3], 4, 90*time.Second)
	t.Logf("%s dead past the grace period: its replicas re-created on the others", dead.args[1])
	dead.start()
	waitConverged(t, procs, 3, 90*time.Second)
	before := acked.Load()
	for acked.Load() < before+20 {
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}
	for _, p := range procs {
		checkExact(t, p, led.want)
	}
	verifyAll(t, procs[0])
	t.Logf("%d batches acknowledged; exact on every node after 10 leader kills and a dead node replaced and back", acked.Load())
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
