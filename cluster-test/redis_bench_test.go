//go:build bench

package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topkd/topkd/client"
)

// TestRedisComparison measures topkd against redis-server side by side on
// the same stream: Zipf(1.1) over 1M items, the same producer count, client
// batches of 1,000. Durability is equal: Redis with appendfsync always,
// topkd acknowledging only what Raft committed to disk. Run: make bench-redis.
func TestRedisComparison(t *testing.T) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server); make bench-redis installs it")
	}
	events := envInt("TOPKD_BENCH_EVENTS", 4_000_000)
	producers := envInt("TOPKD_BENCH_PRODUCERS", 4)
	items := envInt("TOPKD_BENCH_ITEMS", 1_000_000)
	const batch = 1000
	stream := zipfStream(producers, events/producers/batch, batch, items)
	t.Logf("stream: %d producers x %d batches x %d events, Zipf(1.1) over %d items", producers, len(stream[0]), batch, items)

	// Redis, durable: every write fsynced before the reply.
	rport := freePort(t)
	_, portStr, _ := cutLast(rport, ":")
	rdir := t.TempDir()
	rcmd := exec.Command(redisBin, "--port", portStr, "--bind", "127.0.0.1", "--appendonly", "yes",
		"--appendfsync", "always", "--save", "", "--dir", rdir)
	rlog, err := os.Create(filepath.Join(rdir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer rlog.Close()
	rcmd.Stdout, rcmd.Stderr = rlog, rlog
	if err := rcmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { rcmd.Process.Kill(); rcmd.Wait() }()
	rdb := redis.NewClient(&redis.Options{Addr: rport, PoolSize: producers + 2})
	defer rdb.Close()
	for i := 0; ; i++ {
		if rdb.Ping(context.Background()).Err() == nil {
			break
		}
		if i > 100 {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	p := newProc(t)
	if store := os.Getenv("TOPKD_BENCH_RAFT_LOG_STORE"); store != "" {
		// memory and shared-nosync exist only in a logbound build (make bench-logstore-bounds).
		p.bin, p.args = taggedBin(t, "logbound"), []string{"--raft-log-store", store}
		t.Logf("topkd with --raft-log-store %s", store)
	}
	p.start()
	if prof := os.Getenv("TOPKD_BENCH_CPUPROFILE"); prof != "" {
		// A CPU profile of the server during the topkd runs, for tuning.
		go func() {
			time.Sleep(time.Duration(envInt("TOPKD_BENCH_PROFILE_DELAY_S", 12)) * time.Second)
			out, err := exec.Command("curl", "-s", "-o", prof, "http://"+p.debug+"/debug/pprof/profile?seconds=5").CombinedOutput()
			if err != nil {
				t.Logf("profile: %v %s", err, out)
			}
		}()
	}
	c, err := client.New([]string{p.http})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx := context.Background()
	if _, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "bench", Windows: []string{"all"}}); err != nil {
		t.Fatal(err)
	}

	var results []result
	results = append(results, run(t, "redis ZINCRBY pipeline", stream, func(pr int, evs []string) error {
		pipe := rdb.Pipeline()
		for _, it := range evs {
			pipe.ZIncrBy(ctx, "raw", 1, it)
		}
		_, err := pipe.Exec(ctx)
		return err
	}, func() error { return rdb.ZRevRangeWithScores(ctx, "raw", 0, 99).Err() }))
	results = append(results, run(t, "redis pre-aggregated", stream, func(pr int, evs []string) error {
		agg := map[string]int{}
		for _, it := range evs {
			agg[it]++
		}
		pipe := rdb.Pipeline()
		for it, n := range agg {
			pipe.ZIncrBy(ctx, "agg", float64(n), it)
		}
		_, err := pipe.Exec(ctx)
		return err
	}, func() error { return rdb.ZRevRangeWithScores(ctx, "agg", 0, 99).Err() }))

	clients := make([]*client.Client, producers)
	for i := range clients {
		if clients[i], err = client.New([]string{p.http}); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close(context.Background())
	}
	for _, lb := range []string{"bench", "default"} {
		name := "topkd exact, all-time only"
		if lb == "default" {
			name = "topkd exact, all+1m+1h+1d+7d"
		}
		results = append(results, run(t, name, stream, func(pr int, evs []string) error {
			batch := make([]client.Event, len(evs))
			for i, it := range evs {
				batch[i] = client.Event{Item: it}
			}
			_, err := clients[pr].IngestBatch(ctx, lb, batch)
			return err
		}, func() error {
			_, err := c.TopK(ctx, lb, "all", 100, client.WithConsistency(client.Cached))
			return err
		}))
	}
	// Same answers: the all-time top-10 of topkd equals Redis's.
	top, err := c.TopK(ctx, "bench", "all", 10, client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatal(err)
	}
	rtop, err := rdb.ZRevRangeWithScores(ctx, "agg", 0, 9).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rtop {
		if i >= len(top.Items) || int64(rtop[i].Score) != top.Items[i].Count {
			t.Errorf("rank %d: redis %v, topkd %+v", i+1, rtop[i], top.Items)
			break
		}
	}
	bestRedis := results[0]
	if results[1].eps > bestRedis.eps {
		bestRedis = results[1]
	}
	fmt.Printf("\n%-32s %12s %10s %10s %12s %12s\n", "system", "events/s", "ack p50", "ack p99", "query p50", "query p99")
	for _, r := range results {
		fmt.Printf("%-32s %12.0f %10s %10s %12s %12s\n", r.name, r.eps, r.ackP50, r.ackP99, r.qP50, r.qP99)
	}
	for _, r := range results[2:] {
		fmt.Printf("%s vs best Redis (%s): ingest %.2fx, query p99 %.2fx (lower is better)\n", r.name, bestRedis.name,
			r.eps/bestRedis.eps, float64(r.qP99)/float64(bestRedis.qP99))
	}
}

type result struct {
	name                       string
	eps                        float64
	ackP50, ackP99, qP50, qP99 time.Duration
}

// run drives one system: producers send their batches in order while a
// querier asks for the top-100 every 10 ms.
func run(t *testing.T, name string, stream [][][]string, send func(pr int, evs []string) error, query func() error) result {
	t.Helper()
	var mu sync.Mutex
	var acks, queries []time.Duration
	stop := make(chan struct{})
	var qwg sync.WaitGroup
	qwg.Add(1)
	go func() {
		defer qwg.Done()
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			s := time.Now()
			if err := query(); err == nil {
				mu.Lock()
				queries = append(queries, time.Since(s))
				mu.Unlock()
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var total int
	errs := make(chan error, len(stream))
	for pr, batches := range stream {
		for _, b := range batches {
			total += len(b)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range batches {
				s := time.Now()
				if err := send(pr, b); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				mu.Lock()
				acks = append(acks, time.Since(s))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(stop)
	qwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := result{name: name, eps: float64(total) / el.Seconds(), ackP50: pct(acks, 50), ackP99: pct(acks, 99), qP50: pct(queries, 50), qP99: pct(queries, 99)}
	t.Logf("%s: %d events in %v", name, total, el.Round(time.Millisecond))
	return r
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func zipfStream(producers, batches, size, items int) [][][]string {
	out := make([][][]string, producers)
	names := make([]string, items)
	for i := range names {
		names[i] = "song_" + strconv.Itoa(i)
	}
	for pr := range out {
		z := rand.NewZipf(rand.New(rand.NewPCG(uint64(pr), 42)), 1.1, 1, uint64(items-1))
		for b := 0; b < batches; b++ {
			evs := make([]string, size)
			for i := range evs {
				evs[i] = names[z.Uint64()]
			}
			out[pr] = append(out[pr], evs)
		}
	}
	return out
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func cutLast(s, sep string) (string, string, bool) {
	i := len(s) - 1
	for i >= 0 && s[i:i+1] != sep {
		i--
	}
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}
