package rpc_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

// forwardedParts sums topkd_ingest_forwarded_parts_total over the nodes.
func forwardedParts(t *testing.T, nodes []*clusterNode) float64 {
	t.Helper()
	return metricSum(t, nodes, "topkd_ingest_forwarded_parts_total")
}

// metricSum sums an unlabelled metric over the nodes.
func metricSum(t *testing.T, nodes []*clusterNode, name string) float64 {
	t.Helper()
	var sum float64
	for _, cn := range nodes {
		resp, err := http.Get("http://" + cn.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				sum += f
			}
		}
		resp.Body.Close()
	}
	return sum
}

// TestClusterRoutedIngest: a client given one node learns the partitions'
// leaders and sends each batch's parts straight to them, so no node
// forwards; with routing off, the node it was given forwards the parts it
// does not lead. Both count exactly once, including a resend of a split
// batch, and a batch with an event a node would refuse is refused whole.
func TestClusterRoutedIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	nodes := newCluster(t, 3, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	w := newWorkload(t, ctx)
	w.ingest(nodes, 1) // every partition has a leader

	// Enter through the node leading the fewest partitions: most parts are
	// led elsewhere.
	entry, fewest := nodes[0], 5
	for _, cn := range nodes {
		led := 0
		for _, p := range cn.node.Status(ctx).Partitions {
			if p.State == "Leader" {
				led++
			}
		}
		if led < fewest {
			entry, fewest = cn, led
		}
	}
	routed, err := client.New([]string{entry.addr}, client.WithDiscovery(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer routed.Close(context.Background())
	direct, err := client.New([]string{entry.addr}, client.WithRouting(false))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	// Discovery learned every member (and with them the routes).
	deadline := time.Now().Add(10 * time.Second)
	for len(routed.Addrs()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	batch := func(b int) []client.Event {
		evs := make([]client.Event, 100)
		for i := range evs {
			item := fmt.Sprintf("item-%02d", (b*17+i*7)%61)
			evs[i] = client.Event{Item: item, Count: int64(i%3 + 1)}
			w.want[item] += int64(i%3 + 1)
		}
		return evs
	}
	send := func(c *client.Client, batches int) float64 {
		t.Helper()
		before := forwardedParts(t, nodes)
		for b := range batches {
			res, err := c.IngestBatch(ctx, "", batch(b))
			if err != nil || res.Accepted != 100 || res.Duplicate {
				t.Fatalf("batch %d: %+v, %v", b, res, err)
			}
		}
		return forwardedParts(t, nodes) - before
	}
	const batches = 50
	// A leadership that moves during the measurement (an election on a
	// loaded host) makes routes stale for a moment: measure again.
	var viaRouting, viaEntry float64
	for attempt := 0; ; attempt++ {
		before := leaderMap(ctx, nodes)
		viaRouting = send(routed, batches)
		viaEntry = send(direct, batches)
		if leaderMap(ctx, nodes) == before || attempt == 2 {
			break
		}
		t.Logf("a partition's leadership moved during the measurement; measuring again")
	}
	t.Logf("forwarded parts for %d batches through %s (leads %d of 4 partitions): %v routed, %v unrouted",
		batches, entry.id, fewest, viaRouting, viaEntry)
	if viaEntry < batches {
		t.Fatalf("unrouted: %v forwarded parts for %d batches, want at least one per batch", viaEntry, batches)
	}
	if viaRouting > viaEntry/10 {
		t.Fatalf("routed: %v forwarded parts, want at most a tenth of unrouted's %v", viaRouting, viaEntry)
	}

	// A resend of a split batch is a duplicate of every part.
	evs := batch(batches)
	res, err := routed.IngestBatch(ctx, "", evs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := routed.Resend(ctx, "", evs, res.Sequence)
	if err != nil || !again.Duplicate || again.Accepted != 100 {
		t.Fatalf("resend of sequence %d: %+v, %v; want the original outcome, duplicate", res.Sequence, again, err)
	}

	// An item over the limit: the batch goes whole and is refused whole.
	bad := batch(batches + 1)
	for _, e := range bad {
		w.want[e.Item] -= max(e.Count, 1)
	}
	bad[len(bad)-1].Item = strings.Repeat("x", 600)
	if _, err := routed.IngestBatch(ctx, "", bad); err == nil || client.OutcomeUnknown(err) ||
		!strings.Contains(err.Error(), fmt.Sprintf("events[%d].item", len(bad)-1)) {
		t.Fatalf("batch with a 600-byte item: %v; want it refused whole, naming the event", err)
	}
	w.check(nodes, "after routed and unrouted ingest")
}

// TestClusterAddBatchesPerLeader: Add queues events by the node leading
// their partition, so every batch it cuts by size goes whole to one leader:
// each node receives requests of WithBatchSize events, not a 1/N share of
// one, and none forwards.
func TestClusterAddBatchesPerLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	nodes := newCluster(t, 3, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	w := newWorkload(t, ctx)
	w.ingest(nodes, 1) // every partition has a leader

	var mu sync.Mutex
	sizes := map[int]int{} // events per batch -> batches
	c, err := client.New([]string{nodes[0].addr}, client.WithDiscovery(50*time.Millisecond), client.WithBatchSize(100),
		client.WithBatchAge(time.Hour), client.WithBatchHandler(func(r client.BatchResult) {
			if r.Err != nil {
				t.Errorf("batch of %d: %v", r.Events, r.Err)
			}
			mu.Lock()
			sizes[r.Events]++
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for len(c.Addrs()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a discovery round after the last member: routes learned

	const events = 3000
	var reqs, fwd float64
	var batches, full int
	// Measured again if a leadership moved meanwhile (routes were stale).
	for attempt := 0; ; attempt++ {
		mu.Lock()
		clear(sizes)
		mu.Unlock()
		before := leaderMap(ctx, nodes)
		reqs, fwd = metricSum(t, nodes, "topkd_ingest_requests_total"), forwardedParts(t, nodes)
		for i := range events {
			item := fmt.Sprintf("item-%02d", i%61) // the workload's items: check compares a top-100
			w.want[item]++
			if err := c.Add(ctx, "", client.Event{Item: item}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		reqs, fwd = metricSum(t, nodes, "topkd_ingest_requests_total")-reqs, forwardedParts(t, nodes)-fwd
		mu.Lock()
		batches, full = 0, sizes[100]
		for _, n := range sizes {
			batches += n
		}
		mu.Unlock()
		if leaderMap(ctx, nodes) == before || attempt == 2 {
			break
		}
		t.Logf("a partition's leadership moved during the measurement; measuring again")
	}
	t.Logf("%d events: %d batches (%d of 100), %v requests received, %v parts forwarded", events, batches, full, reqs, fwd)
	if reqs != float64(batches) {
		t.Errorf("%v requests for %d batches: want one request per batch, each to its leader", reqs, batches)
	}
	if fwd != 0 {
		t.Errorf("%v parts forwarded, want 0", fwd)
	}
	if full < events/100-3 {
		t.Errorf("%d full batches of %d, want at least %d (the rest are the flush's, at most one per leader)", full, batches, events/100-3)
	}
	w.check(nodes, "after Add")
}

// leaderMap names each partition's leader as the nodes see them.
func leaderMap(ctx context.Context, nodes []*clusterNode) string {
	var b strings.Builder
	for _, cn := range nodes {
		for _, p := range cn.node.Status(ctx).Partitions {
			if p.State == "Leader" {
				fmt.Fprintf(&b, "%d:%s ", p.Partition, cn.id)
			}
		}
	}
	return b.String()
}
