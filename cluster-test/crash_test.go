package clustertest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrashDuringIngest SIGKILLs topkd twice while producers ingest. Every
// producer retries each batch with the same sequence until it is
// acknowledged, so at the end every batch was acknowledged exactly once and
// every item's count must equal the sum of its batches: nothing lost, nothing
// counted twice.
func TestCrashDuringIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real topkd processes; skipped with -short")
	}
	p := newProc(t)
	p.start()
	const (
		producers = 4
		batches   = 150
		batchSize = 200
		items     = 300
	)
	var (
		mu       sync.Mutex
		want     = map[string]int64{}
		acked    atomic.Int64
		retries  atomic.Int64
		dups     atomic.Int64
		wg       sync.WaitGroup
		client   = &http.Client{Timeout: 10 * time.Second}
		deadline = time.Now().Add(2 * time.Minute)
		failures = make(chan error, producers)
	)
	for pr := 0; pr < producers; pr++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(pr), 7))
			for seq := uint64(1); seq <= batches; seq++ {
				var sb strings.Builder
				local := map[string]int64{}
				for i := 0; i < batchSize; i++ {
					item := fmt.Sprintf("item-%03d", rng.IntN(items))
					c := int64(rng.IntN(3) + 1)
					local[item] += c
					fmt.Fprintf(&sb, "{\"item\":%q,\"count\":%d}\n", item, c)
				}
				body := []byte(sb.String())
				for attempt := 0; ; attempt++ {
					out, err := postEvents(client, p.url(), fmt.Sprintf("prod-%d", pr), seq, body)
					if err == nil {
						if out["duplicate"] == true {
							dups.Add(1)
						}
						break
					}
					if time.Now().After(deadline) {
						failures <- fmt.Errorf("producer %d seq %d: %v", pr, seq, err)
						return
					}
					retries.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
				acked.Add(1)
				mu.Lock()
				for k, v := range local {
					want[k] += v
				}
				mu.Unlock()
			}
		}()
	}
	for kill := 0; kill < 2; kill++ {
		target := int64((kill + 1) * producers * batches / 3)
		for acked.Load() < target {
			time.Sleep(5 * time.Millisecond)
		}
		p.kill()
		t.Logf("SIGKILL %d after %d acknowledged batches", kill+1, acked.Load())
		time.Sleep(200 * time.Millisecond)
		p.start()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}
	t.Logf("%d batches acknowledged, %d retried attempts, %d answered as duplicates", acked.Load(), retries.Load(), dups.Load())
	if retries.Load() == 0 {
		t.Fatal("no request failed during the kills: the test did not exercise a crash")
	}
	got := getTop(t, p.url(), 1000)
	if len(got.Items) != len(want) {
		t.Fatalf("%d items, want %d", len(got.Items), len(want))
	}
	for _, it := range got.Items {
		if it.Count != want[it.ID] {
			t.Errorf("%s = %d, want %d (acknowledged)", it.ID, it.Count, want[it.ID])
		}
	}
	// And once more after a clean restart.
	p.kill()
	p.start()
	got = getTop(t, p.url(), 1000)
	for _, it := range got.Items {
		if it.Count != want[it.ID] {
			t.Errorf("after restart: %s = %d, want %d", it.ID, it.Count, want[it.ID])
		}
	}
}
