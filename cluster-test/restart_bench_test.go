//go:build bench

package clustertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

// TestRestartLargeState loads TOPKD_BENCH_DISTINCT (default 10M) distinct
// items, SIGKILLs topkd and measures the time until it serves a
// linearizable query again (snapshot restore plus log replay). Run: make bench-restart.
func TestRestartLargeState(t *testing.T) {
	distinct := envInt("TOPKD_BENCH_DISTINCT", 10_000_000)
	producers := envInt("TOPKD_BENCH_PRODUCERS", 4)
	p := newProc(t)
	p.start()
	ctx := context.Background()
	const batch = 1000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	per := distinct / producers
	for pr := 0; pr < producers; pr++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.New([]string{p.http})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			evs := make([]client.Event, 0, batch)
			for i := 0; i < per; i++ {
				evs = append(evs, client.Event{Item: "item_" + strconv.Itoa(pr*per+i)})
				if len(evs) == batch || i == per-1 {
					if _, err := c.IngestBatch(ctx, "default", evs); err != nil {
						errs <- err
						return
					}
					evs = evs[:0]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	load := time.Since(start)
	var du int64
	filepath.Walk(p.dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			du += fi.Size()
		}
		return nil
	})
	t.Logf("loaded %d distinct items in %v (%.0f events/s); data dir %d MiB", distinct, load.Round(time.Millisecond),
		float64(distinct)/load.Seconds(), du>>20)
	p.kill()
	restart := time.Now()
	p.start() // returns once /readyz answers 200
	ready := time.Since(restart)
	c, err := client.New([]string{p.http})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	top, err := c.TopK(ctx, "default", "all", 10, client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatal(err)
	}
	served := time.Since(restart)
	st, err := c.DescribeLeaderboard(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("restart with %d distinct items: ready in %v, first linearizable top-10 in %v (%d items listed, %d distinct in all)\n",
		distinct, ready.Round(time.Millisecond), served.Round(time.Millisecond), len(top.Items), st.Windows[0].DistinctItems)
	if st.Windows[0].DistinctItems != uint64(distinct) {
		t.Errorf("distinct items after restart: %d, want %d", st.Windows[0].DistinctItems, distinct)
	}
}
