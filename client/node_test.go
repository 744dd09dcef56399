package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
)

// testNode is a real single-node topkd served in-process on free loopback
// ports with a temporary data dir.
type testNode struct {
	addr string // host:port of the HTTP API
	node *server.Node
	srv  *http.Server
	done chan error
	dir  string
}

// startNode starts a node; examples use it directly, tests through newTestNode.
func startNode() (*testNode, error) {
	dir, err := os.MkdirTemp("", "topkd-client-test-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*testNode, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		raftLn.Close()
		return fail(err)
	}
	pol := server.DefaultRaftPolicy()
	pol.HeartbeatTimeout, pol.ElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := server.Open(ctx, server.Config{NodeID: "node1", DataDir: dir, RaftAddr: raftLn.Addr().String(),
		RaftListener: raftLn, HTTPAddr: httpLn.Addr().String(), Partitions: 2, Raft: pol,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		httpLn.Close()
		return fail(fmt.Errorf("open node: %w", err))
	}
	// The node pushes the default leaderboard to its partitions in the
	// background after Open; events that reach a partition before it are
	// rejected, so wait until every partition answers for it.
	for {
		_, err := n.TopK(ctx, server.TopKQuery{Leaderboard: "default", K: 1, Consistency: server.Linearizable})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			n.Close()
			httpLn.Close()
			return fail(fmt.Errorf("default leaderboard never reached every partition: %w", err))
		case <-time.After(5 * time.Millisecond):
		}
	}
	tn := &testNode{addr: httpLn.Addr().String(), node: n, srv: rpc.NewServer("", rpc.Handler(n)), done: make(chan error, 1), dir: dir}
	go func() { tn.done <- tn.srv.Serve(httpLn) }()
	return tn, nil
}

// Close stops the HTTP server and the node and removes the data dir.
func (tn *testNode) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := tn.srv.Shutdown(ctx)
	if serr := <-tn.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	err = errors.Join(err, tn.node.Close(), os.RemoveAll(tn.dir))
	return err
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	tn, err := startNode()
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		if err := tn.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return tn
}
