package rpc_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

// forwardedParts sums topkd_ingest_forwarded_parts_total over the nodes.
func forwardedParts(t *testing.T, nodes []*clusterNode) float64 {
	t.Helper()
	var sum float64
	for _, cn := range nodes {
		resp, err := http.Get("http://" + cn.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "topkd_ingest_forwarded_parts_total "); ok {
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
	viaRouting := send(routed, batches)
	viaEntry := send(direct, batches)
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
