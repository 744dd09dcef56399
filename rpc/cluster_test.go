package rpc_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// clusterNode is one node of an in-process cluster: a server.Node served by
// rpc.Handler on a real loopback HTTP listener.
type clusterNode struct {
	id       string
	node     *server.Node
	srv      *http.Server
	addr     string // HTTP
	raft     string
	gossip   string
	replicas int // R as configured
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
			srv := rpc.NewServer(m.HTTPAddr, rpc.Handler(node, rpc.Security{}), nil)
			go srv.Serve(httpLns[i])
			nodes[i] = &clusterNode{id: m.ID, node: node, srv: srv, addr: m.HTTPAddr, replicas: server.DefaultReplicas}
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
	w := newWorkload(t, ctx)
	w.ingest(nodes, 30)
	w.check(nodes, "three nodes")
	verifyReplicas(t, nodes[1], 3)

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
	w.ingest(rest, 30)
	w.check(rest, "after stopping "+victim.id)
	verifyReplicas(t, rest[0], 2)
}

// verifyReplicas asks via to compare every partition's replica digests at
// a checksum entry: all that report one must agree, and at least min must.
func verifyReplicas(t *testing.T, via *clusterNode, min int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, p := range via.node.VerifyReplicas(ctx) {
		found, digest := 0, uint64(0)
		for _, r := range p.Replicas {
			if r.Found {
				found++
				digest = r.Digest
			}
		}
		if p.Err != nil || !p.Agree || found < min {
			t.Errorf("partition %d at index %d: agree=%v, %d digests (want >= %d), err %v: %+v", p.Partition, p.Index, p.Agree, found, min, p.Err, p.Replicas)
		} else {
			t.Logf("partition %d: %d replicas agree at index %d on %016x", p.Partition, found, p.Index, digest)
		}
	}
}

// startNode opens one node that creates a cluster (join empty) or joins
// one through the HTTP addresses in join, and serves it.
func startNode(t *testing.T, id, dir, join string, opts ...func(*server.Config)) *clusterNode {
	return startNodeAt(t, id, dir, join, "127.0.0.1:0", "127.0.0.1:0", opts...)
}

// startNodeAt is startNode on given Raft and HTTP addresses.
func startNodeAt(t *testing.T, id, dir, join, raftAddr, httpAddr string, opts ...func(*server.Config)) *clusterNode {
	t.Helper()
	raftLn, err := net.Listen("tcp", raftAddr)
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	pol := server.DefaultRaftPolicy()
	pol.HeartbeatTimeout, pol.ElectionTimeout = 100*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The HTTP port serves before Open returns: a joining node's replicas
	// are promoted once the leaders can ask it how far it has caught up.
	h := &lateHandler{}
	srv := rpc.NewServer(httpLn.Addr().String(), h, nil)
	go srv.Serve(httpLn)
	cfg := server.Config{NodeID: id, DataDir: dir, RaftAddr: raftLn.Addr().String(), RaftListener: raftLn,
		HTTPAddr: httpLn.Addr().String(), Partitions: 4, Raft: pol, Join: join, Logger: testLogger(id)}
	for _, o := range opts {
		o(&cfg)
	}
	node, err := server.Open(ctx, cfg)
	if err != nil {
		srv.Close()
		raftLn.Close()
		t.Fatalf("open %s: %v", id, err)
	}
	h.set(rpc.Handler(node, rpc.Security{}))
	cn := &clusterNode{id: id, node: node, srv: srv, addr: httpLn.Addr().String(), raft: raftLn.Addr().String(), gossip: node.GossipAddr(),
		replicas: cmp.Or(cfg.Replicas, server.DefaultReplicas)}
	t.Cleanup(cn.stop)
	return cn
}

// lateHandler answers 503 until the node's handler is set.
type lateHandler struct {
	mu sync.RWMutex
	h  http.Handler
}

func (l *lateHandler) set(h http.Handler) {
	l.mu.Lock()
	l.h = h
	l.mu.Unlock()
}

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.RLock()
	h := l.h
	l.mu.RUnlock()
	if h == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}

// waitVoters waits until every group on cn has want voters.
func waitVoters(t *testing.T, cn *clusterNode, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := cn.node.Voters()
		ok := true
		for _, v := range got {
			if v != want {
				ok = false
			}
		}
		if ok && len(got) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("voters per group on %s: %v, want %d each", cn.id, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterJoin: a single node with data is joined by two more (the
// second through the first joiner); every group ends with three voters,
// the counts stay exact on every node, and they survive the first node's
// stop. A node that comes back with wiped data under a member's id is
// refused.
func TestClusterJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	n1 := startNode(t, "n1", t.TempDir(), "")
	w := newWorkload(t, ctx)
	w.ingest([]*clusterNode{n1}, 10)
	n2 := startNode(t, "n2", t.TempDir(), n1.addr)
	w.ingest([]*clusterNode{n1, n2}, 10)
	n3dir := t.TempDir()
	n3 := startNode(t, "n3", n3dir, n2.addr)
	all := []*clusterNode{n1, n2, n3}
	waitVoters(t, n1, 3)
	w.ingest(all, 20)
	w.check(all, "three nodes")
	// n3 restarted with its data rejoins: on its addresses, then on new ones.
	n3.stop()
	n3 = startNodeAt(t, "n3", n3dir, n2.addr, n3.raft, n3.addr)
	all = []*clusterNode{n1, n2, n3}
	w.check(all, "n3 restarted")
	n3.stop()
	n3 = startNode(t, "n3", n3dir, "")
	all = []*clusterNode{n1, n2, n3}
	w.ingest(all, 10)
	w.check(all, "n3 restarted on new addresses")
	// An admin call at a node that does not lead the meta group is forwarded.
	for _, cn := range all {
		name := "board-" + cn.id
		if _, err := cn.node.CreateLeaderboard(ctx, &pb.LeaderboardConfig{Name: name}); err != nil {
			t.Fatalf("create %s through %s: %v", name, cn.id, err)
		}
	}
	n1.stop()
	rest := []*clusterNode{n2, n3}
	w.ingest(rest, 20)
	w.check(rest, "after stopping n1")
	// A node with wiped data under a member's id is refused.
	if _, err := server.Open(ctx, server.Config{NodeID: "n3", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:1",
		Join: n2.addr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err == nil || !strings.Contains(err.Error(), "another data directory") {
		t.Errorf("n3 with wiped data joined: %v; want a refusal naming its data directory", err)
	}
}

// waitPlaced waits until no move is in flight and every partition's leader
// has exactly the voters placement lists, and returns the placement.
func waitPlaced(t *testing.T, nodes []*clusterNode) [][]string {
	t.Helper()
	// Every partition on min(R, nodes) replicas: while nodes join, moves
	// are planned one at a time, and between two of them none is in flight.
	replicas := min(nodes[0].replicas, len(nodes))
	deadline := time.Now().Add(60 * time.Second)
	for {
		placed, ok := map[int][]string{}, true
		for _, cn := range nodes {
			st := cn.node.Status(t.Context())
			ok = ok && len(st.Moves) == 0
			for _, p := range st.Partitions {
				if p.State != "Leader" {
					continue
				}
				v, want := slices.Clone(p.Voters), slices.Clone(p.Placement)
				slices.Sort(v)
				slices.Sort(want)
				if len(want) == 0 || !slices.Equal(v, want) || len(p.NonVoters) > 0 {
					ok = false
				}
				placed[p.Partition] = p.Placement
			}
		}
		for _, reps := range placed {
			ok = ok && len(reps) == replicas
		}
		if ok && len(placed) == len(nodes[0].node.Status(t.Context()).Partitions) {
			out := make([][]string, len(placed))
			for p, r := range placed {
				out[p] = r
			}
			return out
		}
		if time.Now().After(deadline) {
			for _, cn := range nodes {
				for _, p := range cn.node.Status(t.Context()).Partitions {
					if p.State == "Leader" {
						t.Logf("p%d led by %s: voters %v non-voters %v placement %v", p.Partition, cn.id, p.Voters, p.NonVoters, p.Placement)
					}
				}
			}
			t.Fatal("groups did not reach their placement within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterPlacement: five nodes with R = 3 spread the partitions by the
// placement ring (each partition on three of them, every node holding some,
// each led by its preferred leader) and answer the same exact counts from
// every node, including nodes that hold no replica of a partition; two
// nodes then leave (5 -> 3) with the counts intact, and a third may not.
func TestClusterPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a five-node cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	nodes := []*clusterNode{startNode(t, "n1", t.TempDir(), "")}
	w := newWorkload(t, ctx)
	w.ingest(nodes, 5)
	// 1 -> 3 -> 5 nodes while batches keep coming through the nodes there
	// were before each step.
	for _, grow := range [][]int{{2, 3}, {4, 5}} {
		via, sent := slices.Clone(nodes), make(chan error, 1)
		go func() { sent <- w.send(via, 30) }()
		for _, i := range grow {
			nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), t.TempDir(), nodes[0].addr))
		}
		if err := <-sent; err != nil {
			t.Fatalf("ingest while growing to %d nodes: %v", len(nodes), err)
		}
		waitPlaced(t, nodes)
		w.check(nodes, fmt.Sprintf("grown to %d nodes under ingest", len(nodes)))
	}
	placement := waitPlaced(t, nodes)
	held := map[string]int{}
	for p, reps := range placement {
		if len(reps) != 3 {
			t.Fatalf("partition %d placed on %v, want 3 replicas", p, reps)
		}
		for _, id := range reps {
			held[id]++
		}
	}
	if len(held) != 5 {
		t.Fatalf("replicas per node %v: every node should hold some", held)
	}
	t.Logf("placement %v; replicas per node %v", placement, held)
	// Leadership moves to each partition's preferred leader.
	for deadline := time.Now().Add(30 * time.Second); ; {
		led := map[int]string{}
		for _, cn := range nodes {
			for _, p := range cn.node.Status(ctx).Partitions {
				if p.State == "Leader" {
					led[p.Partition] = cn.id
				}
			}
		}
		ok := len(led) == len(placement)
		for p, reps := range placement {
			ok = ok && led[p] == reps[0]
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaders %v, want each partition led by its preferred leader (placement %v)", led, placement)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.ingest(nodes, 25)
	w.check(nodes, "five nodes")
	// A client given only n5 learns the other members, and keeps working
	// once n5 has left and stopped.
	cl, err := client.New([]string{nodes[4].addr}, client.WithDiscovery(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); len(cl.Addrs()) < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("client knows %v, want all five nodes", cl.Addrs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 5 -> 3 by leave, asked at different nodes, ingesting in between.
	for _, leaving := range []int{4, 3} {
		id := nodes[leaving].id
		via := nodes[(leaving+2)%len(nodes)]
		var steps []string
		if err := via.node.Leave(ctx, id, false, func(msg string, _ int) { steps = append(steps, msg) }); err != nil {
			t.Fatalf("leave %s through %s: %v (steps %q)", id, via.id, err, steps)
		}
		t.Logf("leave %s: %q", id, steps)
		nodes[leaving].stop()
		nodes = slices.Delete(nodes, leaving, leaving+1)
		for _, p := range waitPlaced(t, nodes) {
			if slices.Contains(p, id) {
				t.Fatalf("placement %v still holds %s after it left", p, id)
			}
		}
		w.check(nodes, id+" left")
	}
	if _, err := cl.IngestBatch(ctx, "default", []client.Event{{Item: "item-00"}}); err != nil {
		t.Fatalf("client given only n5, after n5 left: %v", err)
	}
	w.want["item-00"]++
	top, err := cl.TopK(ctx, "default", "all", 100, client.WithConsistency(client.Linearizable))
	if err != nil || len(top.Items) != len(w.want) {
		t.Fatalf("client given only n5, after n5 left: %d items, %v", len(top.Items), err)
	}
	verifyReplicas(t, nodes[0], 3)
	// Below R only by force.
	if err := nodes[0].node.Leave(ctx, "n3", false, func(string, int) {}); err == nil || !strings.Contains(err.Error(), "add a node first") {
		t.Errorf("leave below R: %v, want a refusal", err)
	}
}

// withGossip gives a node a gossip address (port 0 lets memberlist choose
// one free for both TCP and UDP; clusterNode.gossip then holds it) and a
// dead-node grace period.
func withGossip(addr string, grace time.Duration) func(*server.Config) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return func(c *server.Config) {
		c.GossipAddr, c.DeadNodeGrace = addr, grace
	}
}

// TestClusterDeadNode: a node stopped without leaving is marked down once
// gossip has missed it for the grace period; its replicas are re-created
// on the others (new replica first) and the counts stay exact. Started
// again with its data, it is taken back into placement.
func TestClusterDeadNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a four-node cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	const grace = 2 * time.Second
	nodes := []*clusterNode{startNode(t, "n1", t.TempDir(), "", withGossip("", grace))}
	dirs := []string{""}
	for i := 2; i <= 4; i++ {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), dir, nodes[0].gossip, withGossip("", grace)))
	}
	before := waitPlaced(t, nodes)
	w := newWorkload(t, ctx)
	w.ingest(nodes, 10)
	dead := nodes[3]
	dead.stop()
	live := nodes[:3]
	w.ingest(live, 10)
	var after [][]string
	for deadline := time.Now().Add(60 * time.Second); ; {
		after = waitPlaced(t, live)
		still := false
		for _, reps := range after {
			still = still || slices.Contains(reps, dead.id)
		}
		if !still {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("placement %v still holds %s a minute after it died", after, dead.id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("placement %v -> %v after %s died", before, after, dead.id)
	w.check(live, dead.id+" dead")
	back := startNodeAt(t, dead.id, dirs[3], "", dead.raft, dead.addr, withGossip(dead.gossip, grace))
	nodes = append(live, back)
	for deadline := time.Now().Add(60 * time.Second); ; {
		placed := waitPlaced(t, nodes)
		found := false
		for _, reps := range placed {
			found = found || slices.Contains(reps, back.id)
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s came back but placement %v never took it back", back.id, placed)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.ingest(nodes, 10)
	w.check(nodes, back.id+" back")
	verifyReplicas(t, back, 3)
}

// workload sends exactly-once batches through given nodes and remembers
// what each item must count.
type workload struct {
	t    *testing.T
	ctx  context.Context
	want map[string]int64
	seq  uint64
}

func newWorkload(t *testing.T, ctx context.Context) *workload {
	return &workload{t: t, ctx: ctx, want: map[string]int64{}}
}

// ingest sends batches of 200 events over 61 items, round-robin over via.
func (w *workload) ingest(via []*clusterNode, batches int) {
	w.t.Helper()
	if err := w.send(via, batches); err != nil {
		w.t.Fatal(err)
	}
}

// send is ingest for any goroutine: it returns the first failure.
func (w *workload) send(via []*clusterNode, batches int) error {
	for b := range batches {
		w.seq++
		cn := via[b%len(via)]
		var evs []server.Event
		for i := range 200 {
			item := fmt.Sprintf("item-%02d", (int(w.seq)*13+i*7)%61)
			evs = append(evs, server.Event{Item: item, Count: int64(i%3 + 1), TimeMs: time.Now().UnixMilli()})
			w.want[item] += int64(i%3 + 1)
		}
		res, err := cn.node.Ingest(w.ctx, server.IngestRequest{Events: evs, ProducerID: "p", Epoch: 1, Sequence: w.seq})
		if err != nil || res.Accepted != 200 {
			return fmt.Errorf("batch %d through %s: %+v, %v", w.seq, cn.id, res, err)
		}
	}
	return nil
}

// check asks every node of via for the top items at leader and
// linearizable consistency, and one item's count: all must be exact.
func (w *workload) check(via []*clusterNode, when string) {
	w.t.Helper()
	for _, cn := range via {
		for _, c := range []server.Consistency{server.Linearizable, server.Leader} {
			a, err := cn.node.TopK(w.ctx, server.TopKQuery{K: 100, Consistency: c})
			if err != nil {
				w.t.Fatalf("%s: top-k from %s at %v: %v", when, cn.id, c, err)
			}
			if len(a.Items) != len(w.want) {
				w.t.Fatalf("%s: %s at %v answered %d items, want %d", when, cn.id, c, len(a.Items), len(w.want))
			}
			for _, it := range a.Items {
				if it.Count != w.want[it.Item] {
					w.t.Errorf("%s: %s at %v: %s = %d, want %d", when, cn.id, c, it.Item, it.Count, w.want[it.Item])
				}
			}
		}
		got, err := cn.node.Count(w.ctx, "default", "item-07", 0, server.Linearizable)
		if err != nil || got.Count != w.want["item-07"] {
			w.t.Errorf("%s: count from %s: %d (%v), want %d", when, cn.id, got.Count, err, w.want["item-07"])
		}
	}
}

// testLogger discards a node's log, or with TOPKD_TEST_LOG=1 writes it to
// stderr tagged with the node's id.
func testLogger(id string) *slog.Logger {
	if os.Getenv("TOPKD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", id)
}

// TestClusterRebalance: one partition takes most of the ingest; its leader
// also leads another partition. Rebalance hands the hot partition's
// leadership to another replica (taking a cold one back), placement keeps
// the swap, leadership follows it, and the counts stay exact.
func TestClusterRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	nodes := []*clusterNode{startNode(t, "n1", t.TempDir(), "")}
	for i := 2; i <= 3; i++ {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), t.TempDir(), nodes[0].addr))
	}
	placement := waitPlaced(t, nodes)
	// The node leading two partitions; the first of them runs hot.
	leads := map[string][]int{}
	for p, reps := range placement {
		leads[reps[0]] = append(leads[reps[0]], p)
	}
	hot, busy := -1, ""
	for id, ps := range leads {
		if len(ps) == 2 {
			hot, busy = ps[0], id
		}
	}
	if hot < 0 {
		t.Fatalf("placement %v: no node leads two partitions", placement)
	}
	var hotItems, coldItems []string
	for i := 0; len(hotItems) < 20 || len(coldItems) < 20; i++ {
		item := fmt.Sprintf("it-%d", i)
		if server.PartitionOf("default", item, len(placement)) == hot {
			hotItems = append(hotItems, item)
		} else {
			coldItems = append(coldItems, item)
		}
	}
	want := map[string]int64{}
	for b := range 40 {
		var evs []server.Event
		for i := range 500 {
			item := hotItems[i%len(hotItems)]
			if i%25 == 0 {
				item = coldItems[(b+i)%len(coldItems)]
			}
			evs = append(evs, server.Event{Item: item, Count: 1})
			want[item]++
		}
		if _, err := nodes[b%3].node.Ingest(ctx, server.IngestRequest{Events: evs, ProducerID: "rb", Epoch: 1, Sequence: uint64(b + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // rates count complete seconds
	var msgs []string
	if err := nodes[2].node.Rebalance(ctx, false, func(p server.RebalanceProgress) { msgs = append(msgs, p.Message) }); err != nil {
		t.Fatalf("rebalance: %v (%q)", err, msgs)
	}
	t.Logf("rebalance: %q", msgs)
	after := waitPlaced(t, nodes)
	if after[hot][0] == busy {
		t.Fatalf("partition %d (hot) still prefers %s, which leads %v: placement %v -> %v", hot, busy, leads[busy], placement, after)
	}
	for id, ps := range leads {
		n := 0
		for _, reps := range after {
			if reps[0] == id {
				n++
			}
		}
		if n != len(ps) {
			t.Errorf("%s leads %d partitions after rebalance, %d before", id, n, len(ps))
		}
	}
	for item, c := range want {
		got, err := nodes[0].node.Count(ctx, "default", item, 0, server.Linearizable)
		if err != nil || got.Count != c {
			t.Fatalf("%s = %d (%v), want %d", item, got.Count, err, c)
		}
	}
}

// TestClusterPartialAnswer: with R = 1 on two nodes, stopping one leaves
// its partitions without a replica. A leader read then fails naming a
// partition, or, when the caller allows a partial answer, answers from the
// other partitions exactly and names the missing ones.
func TestClusterPartialAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a two-node cluster; skipped with -short")
	}
	oneReplica := func(c *server.Config) { c.Replicas = 1 }
	n1 := startNode(t, "n1", t.TempDir(), "", oneReplica)
	n2 := startNode(t, "n2", t.TempDir(), n1.addr, oneReplica)
	placement := waitPlaced(t, []*clusterNode{n1, n2})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	w := newWorkload(t, ctx)
	w.ingest([]*clusterNode{n1, n2}, 10)
	// Status from n1 shows the leader and indexes of the partitions only n2 holds.
	for _, ps := range n1.node.Status(ctx).Partitions {
		if placement[ps.Partition][0] != "n2" {
			continue
		}
		if ps.State != "NotPlaced" || ps.Leader != "n2" || ps.AppliedIndex == 0 || !slices.Equal(ps.Voters, []string{"n2"}) {
			t.Errorf("n1's status of partition %d (on n2): %+v; want n2's leadership and indexes", ps.Partition, ps)
		}
	}
	n2.stop()
	var gone []int
	for p, reps := range placement {
		if reps[0] == "n2" {
			gone = append(gone, p)
		}
	}
	if len(gone) == 0 || len(gone) == len(placement) {
		t.Fatalf("placement %v: want n2 to hold some partitions, not all", placement)
	}
	qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := n1.node.TopK(qctx, server.TopKQuery{K: 100, Consistency: server.Leader})
	qcancel()
	if err == nil || !strings.Contains(err.Error(), "partition") {
		t.Fatalf("whole answer with n2 stopped: %v, want an error naming a partition", err)
	}
	qctx, qcancel = context.WithTimeout(ctx, 2*time.Second)
	a, err := n1.node.TopK(qctx, server.TopKQuery{K: 100, Consistency: server.Leader, AllowPartial: true})
	qcancel()
	if err != nil {
		t.Fatalf("partial answer: %v", err)
	}
	if !slices.Equal(a.Missing, gone) {
		t.Errorf("missing %v, want %v", a.Missing, gone)
	}
	want := 0
	for item, c := range w.want {
		if slices.Contains(gone, server.PartitionOf("default", item, len(placement))) {
			continue
		}
		want++
		found := false
		for _, it := range a.Items {
			if it.Item == item {
				found = it.Count == c
			}
		}
		if !found {
			t.Errorf("%s: missing or not %d in the partial answer", item, c)
		}
	}
	if len(a.Items) != want {
		t.Errorf("partial answer has %d items, want %d", len(a.Items), want)
	}
}
