package clustertest

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gapProbe sends small exactly-once batches one after another through a
// node and records the longest time between two acknowledgements: the
// write unavailability a client sees.
type gapProbe struct {
	stop    atomic.Bool
	done    chan struct{}
	mu      sync.Mutex
	last    time.Time
	longest time.Duration
	acks    int
}

func startGapProbe(t *testing.T, via *proc) *gapProbe {
	g := &gapProbe{done: make(chan struct{}), last: time.Now()}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(g.done)
		for seq := uint64(1); !g.stop.Load(); seq++ {
			var sb strings.Builder
			for i := range 64 {
				fmt.Fprintf(&sb, "{\"item\":\"probe-%d\"}\n", i)
			}
			for !g.stop.Load() {
				if _, err := postEvents(client, via.url(), "gap-probe", seq, []byte(sb.String())); err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			now := time.Now()
			g.mu.Lock()
			g.longest = max(g.longest, now.Sub(g.last))
			g.last, g.acks = now, g.acks+1
			g.mu.Unlock()
		}
	}()
	return g
}

// reset starts a new measuring period.
func (g *gapProbe) reset() {
	g.mu.Lock()
	g.longest, g.last, g.acks = 0, time.Now(), 0
	g.mu.Unlock()
}

func (g *gapProbe) read() (time.Duration, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.longest, time.Since(g.last)), g.acks
}

// TestMeasureJoinAndFailover measures, on three nodes with R = 3 and 4
// partitions holding TOPKD_MEASURE_ITEMS distinct items each (default 1M):
// how long a fourth node takes to receive its replicas, the longest gap
// between acknowledged batches meanwhile, and the longest gap when a node
// leading partitions is SIGKILLed. Run with TOPKD_MEASURE=1 (not in CI:
// it loads millions of items).
func TestMeasureJoinAndFailover(t *testing.T) {
	if os.Getenv("TOPKD_MEASURE") == "" {
		t.Skip("a measurement: set TOPKD_MEASURE=1")
	}
	perPartition := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TOPKD_MEASURE_ITEMS")); err == nil && v > 0 {
		perPartition = v
	}
	n1 := startMember(t, topkdBin, "n1", nil)
	procs := []*proc{n1, startMember(t, topkdBin, "n2", n1), startMember(t, topkdBin, "n3", n1)}
	waitConverged(t, procs, 4, 60*time.Second)

	total := 4 * perPartition
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 60 * time.Second}
	for pr := range 4 {
		wg.Go(func() {
			for seq := uint64(1); ; seq++ {
				from := next.Add(5000) - 5000
				if from >= int64(total) {
					return
				}
				var sb strings.Builder
				for i := from; i < min(from+5000, int64(total)); i++ {
					fmt.Fprintf(&sb, "{\"item\":\"u-%d\"}\n", i)
				}
				for {
					if _, err := postEvents(client, procs[pr%3].url(), fmt.Sprintf("load-%d", pr), seq, []byte(sb.String())); err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("loaded %d distinct items (%d per partition) in %s", total, perPartition, time.Since(start).Round(time.Second))

	probe := startGapProbe(t, n1)
	defer func() { probe.stop.Store(true); <-probe.done }()
	time.Sleep(2 * time.Second)
	probe.reset()
	joinStart := time.Now()
	n4 := startMember(t, topkdBin, "n4", n1)
	all := append(slices.Clone(procs), n4)
	waitConverged(t, all, 3, 30*time.Minute)
	joinTook := time.Since(joinStart)
	gapMove, acksMove := probe.read()
	t.Logf("join: n4 received 3 replicas of %d items each in %s; longest gap between acknowledged batches %s (%d acks)",
		perPartition, joinTook.Round(100*time.Millisecond), gapMove.Round(time.Millisecond), acksMove)

	// Kill a node that leads partitions (not the probe's node).
	victim := procs[1]
	time.Sleep(2 * time.Second)
	probe.reset()
	victim.kill()
	time.Sleep(10 * time.Second)
	gapKill, acksKill := probe.read()
	t.Logf("leader kill: %s SIGKILLed; longest gap between acknowledged batches over the next 10 s %s (%d acks)",
		victim.args[1], gapKill.Round(time.Millisecond), acksKill)
	fmt.Printf("MEASURE items_per_partition=%d join_s=%.1f gap_during_move_ms=%d gap_during_leader_kill_ms=%d\n",
		perPartition, joinTook.Seconds(), gapMove.Milliseconds(), gapKill.Milliseconds())
}
