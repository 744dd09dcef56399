package rpc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// clusterNode is one node of an in-process cluster: a server.Node served by
// rpc.Handler on a real loopback HTTP listener.
type clusterNode struct {
	id   string
	node *server.Node
	srv  *http.Server
	addr string
}

// newCluster starts n nodes that bootstrap together (InitialCluster): every
// group has all of them as voters.
func newCluster(t *testing.T, n, partitions int) []*clusterNode {
	t.Helper()
	members := make([]server.Member, n)
	raftLns := make([]net.Listener, n)
	httpLns := make([]net.Listener, n)
	for i := range n {
		var err error
		if raftLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if httpLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		members[i] = server.Member{ID: fmt.Sprintf("n%d", i+1), RaftAddr: raftLns[i].Addr().String(), HTTPAddr: httpLns[i].Addr().String()}
	}
	pol := server.DefaultRaftPolicy()
	pol.HeartbeatTimeout, pol.ElectionTimeout = 100*time.Millisecond, 100*time.Millisecond
	nodes := make([]*clusterNode, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for i := range n {
		wg.Go(func() {
			m := members[i]
			node, err := server.Open(ctx, server.Config{NodeID: m.ID, DataDir: t.TempDir(), RaftAddr: m.RaftAddr, RaftListener: raftLns[i],
				HTTPAddr: m.HTTPAddr, Partitions: partitions, Raft: pol, InitialCluster: members,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				errs[i] = err
				raftLns[i].Close()
				return
			}
			srv := rpc.NewServer(m.HTTPAddr, rpc.Handler(node))
			go srv.Serve(httpLns[i])
			nodes[i] = &clusterNode{id: m.ID, node: node, srv: srv, addr: m.HTTPAddr}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, cn := range nodes {
			if cn != nil {
				cn.stop()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open n%d: %v", i+1, err)
		}
	}
	return nodes
}

func (cn *clusterNode) stop() {
	if cn.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = cn.srv.Shutdown(ctx)
	cn.node.Close()
	cn.srv = nil
}

// TestClusterIngestAndQueryAnyNode: three nodes, every partition a
// three-voter group. Batches sent to every node reach the partitions'
// leaders (forwarded over the peer service where the node does not lead),
// and every node answers the same exact counts, before and after the node
// leading most partitions stops.
func TestClusterIngestAndQueryAnyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	nodes := newCluster(t, 3, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	want := map[string]int64{}
	seq := uint64(0)
	ingest := func(via []*clusterNode, batches int) {
		t.Helper()
		for b := range batches {
			seq++
			cn := via[b%len(via)]
			var evs []server.Event
			for i := range 200 {
				item := fmt.Sprintf("item-%02d", (int(seq)*13+i*7)%61)
				evs = append(evs, server.Event{Item: item, Count: int64(i%3 + 1), TimeMs: time.Now().UnixMilli()})
				want[item] += int64(i%3 + 1)
			}
			res, err := cn.node.Ingest(ctx, server.IngestRequest{Events: evs, ProducerID: "p", Epoch: 1, Sequence: seq})
			if err != nil || res.Accepted != 200 {
				t.Fatalf("batch %d through %s: %+v, %v", seq, cn.id, res, err)
			}
		}
	}
	check := func(via []*clusterNode, when string) {
		t.Helper()
		for _, cn := range via {
			for _, c := range []server.Consistency{server.Linearizable, server.Leader} {
				a, err := cn.node.TopK(ctx, server.TopKQuery{K: 100, Consistency: c})
				if err != nil {
					t.Fatalf("%s: top-k from %s at %v: %v", when, cn.id, c, err)
				}
				if len(a.Items) != len(want) {
					t.Fatalf("%s: %s at %v answered %d items, want %d", when, cn.id, c, len(a.Items), len(want))
				}
				for _, it := range a.Items {
					if it.Count != want[it.Item] {
						t.Errorf("%s: %s at %v: %s = %d, want %d", when, cn.id, c, it.Item, it.Count, want[it.Item])
					}
				}
			}
			got, err := cn.node.Count(ctx, "default", "item-07", 0, server.Linearizable)
			if err != nil || got.Count != want["item-07"] {
				t.Errorf("%s: count from %s: %d (%v), want %d", when, cn.id, got.Count, err, want["item-07"])
			}
		}
	}
	ingest(nodes, 30)
	check(nodes, "three nodes")

	// Stop the node that leads the most partitions; the others elect new
	// leaders and keep taking batches and answering exactly.
	leads := map[string]int{}
	for _, cn := range nodes {
		for _, p := range cn.node.Status(ctx).Partitions {
			if p.State == "Leader" {
				leads[cn.id]++
			}
		}
	}
	victim := nodes[0]
	for _, cn := range nodes {
		if leads[cn.id] > leads[victim.id] {
			victim = cn
		}
	}
	t.Logf("partitions led: %v; stopping %s", leads, victim.id)
	victim.stop()
	var rest []*clusterNode
	for _, cn := range nodes {
		if cn != victim {
			rest = append(rest, cn)
		}
	}
	ingest(rest, 30)
	check(rest, "after stopping "+victim.id)
}
