package clustertest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
)

// TestSlowAndIdleClients: 1,000 connections that send nothing and 100
// that send a request's headers a byte a second, each reopened when the
// node closes it, against one node. A normal client's ingest and queries
// keep succeeding; the node closes the slow and idle connections (its
// header timeout) rather than holding them; the normal client's p99 under
// the attack is logged against its unloaded p99 (target 2x: a benchmark's
// figure, not asserted here).
func TestSlowAndIdleClients(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,100 connections to a real process; skipped with -short")
	}
	p := newProc(t)
	p.args = []string{"--node-id", "n1"}
	p.start()
	c, err := client.New([]string{p.http}, client.WithDiscovery(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// measure sends 200 batches of 100 events and 200 top-100 queries, one
	// at a time, and returns the p99 of each.
	measure := func(label string) (ingest, query time.Duration) {
		var in, q []time.Duration
		events := make([]client.Event, 100)
		for i := range 200 {
			for j := range events {
				events[j] = client.Event{Item: fmt.Sprintf("item-%d", (i*7+j)%500)}
			}
			start := time.Now()
			if _, err := c.IngestBatch(ctx, "", events); err != nil {
				t.Fatalf("%s: ingest: %v", label, err)
			}
			in = append(in, time.Since(start))
			start = time.Now()
			if _, err := c.TopK(ctx, "", "all", 100); err != nil {
				t.Fatalf("%s: top-k: %v", label, err)
			}
			q = append(q, time.Since(start))
		}
		return p99(in), p99(q)
	}
	measure("warm-up")
	inBase, qBase := measure("unloaded")

	attack, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var opened, closedByNode atomic.Int64
	// hold keeps one connection open, reopening it when the node closes it;
	// slow ones send a request's headers a byte a second, the others nothing.
	hold := func(slow bool) {
		defer wg.Done()
		req := []byte("POST /api/events HTTP/1.1\r\nHost: topkd\r\nContent-Type: application/x-ndjson\r\nX-Padding: " +
			string(slices.Repeat([]byte("a"), 200)) + "\r\n\r\n")
		for attack.Err() == nil {
			conn, err := net.DialTimeout("tcp", p.http, 2*time.Second)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			opened.Add(1)
			done := make(chan struct{})
			go func() { // the node closing the connection ends the read
				buf := make([]byte, 512)
				for {
					if _, err := conn.Read(buf); err != nil {
						break
					}
				}
				close(done)
			}()
			for i := 0; ; i++ {
				if slow && i < len(req) {
					if _, err := conn.Write(req[i : i+1]); err != nil {
						break
					}
				}
				select {
				case <-done:
					closedByNode.Add(1)
				case <-attack.Done():
				case <-time.After(time.Second):
					continue
				}
				break
			}
			conn.Close()
			<-done
		}
	}
	for i := range 1100 {
		wg.Add(1)
		go hold(i < 100)
	}
	time.Sleep(2 * time.Second) // every connection open
	inLoad, qLoad := measure("under 1,000 idle and 100 slow connections")
	time.Sleep(12 * time.Second) // past the node's header timeout
	closed := closedByNode.Load()
	stop()
	wg.Wait()
	t.Logf("ingest p99 %v unloaded, %v under attack (%.2fx); top-100 p99 %v and %v (%.2fx); %d attacking connections opened, %d closed by the node",
		inBase, inLoad, float64(inLoad)/float64(inBase), qBase, qLoad, float64(qLoad)/float64(qBase), opened.Load(), closed)
	if closed < 1000 {
		t.Errorf("the node closed %d of the 1,100 idle and slow connections past its header timeout, want all", closed)
	}
	// The node still answers, and stays ready.
	if _, err := c.TopK(ctx, "", "all", 10); err != nil {
		t.Fatalf("after the attack: %v", err)
	}
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}
