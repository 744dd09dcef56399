// Package rpctest starts a real single-node topkd in-process, on free
// loopback ports with a temporary data dir, for the tests and examples of
// packages that talk to it over HTTP (client, topkctl). Like httptest, it
// is for tests only.
package rpctest

import (
	"context"
	"crypto/tls"
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

// Node is a running single-node topkd.
type Node struct {
	Addr string // host:port of the HTTP API
	Node *server.Node
	srv  *http.Server
	done chan error
	dir  string
}

// Start starts a node with 2 partitions and fast Raft timeouts; Close stops it.
func Start() (*Node, error) { return StartSecure(rpc.Security{}) }

// StartSecure starts a node that checks callers against sec: with
// sec.Certs its HTTP port serves TLS and its Raft port mutual TLS.
func StartSecure(sec rpc.Security) (*Node, error) { return start(sec, nil) }

// NewWith starts a node whose configuration edit changes, closed by t.Cleanup.
func NewWith(t testing.TB, edit func(*server.Config)) *Node {
	t.Helper()
	tn, err := start(rpc.Security{}, edit)
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

func start(sec rpc.Security, edit func(*server.Config)) (*Node, error) {
	dir, err := os.MkdirTemp("", "topkd-rpctest-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Node, error) {
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
	cfg := server.Config{NodeID: "node1", DataDir: dir, RaftAddr: raftLn.Addr().String(),
		RaftListener: raftLn, HTTPAddr: httpLn.Addr().String(), Partitions: 2, Raft: pol, TLS: sec.Certs,
		Logger: slog.New(slog.DiscardHandler)}
	if edit != nil {
		edit(&cfg)
	}
	n, err := server.Open(ctx, cfg)
	if err != nil {
		httpLn.Close()
		return fail(fmt.Errorf("open node: %w", err))
	}
	var tlsConf *tls.Config
	if sec.Certs != nil {
		tlsConf = sec.Certs.ServerConfig()
	}
	tn := &Node{Addr: httpLn.Addr().String(), Node: n, srv: rpc.NewServer("", rpc.Handler(n, sec), tlsConf), done: make(chan error, 1), dir: dir}
	go func() {
		if tlsConf != nil {
			tn.done <- tn.srv.ServeTLS(httpLn, "", "")
			return
		}
		tn.done <- tn.srv.Serve(httpLn)
	}()
	return tn, nil
}

// Close stops the HTTP server and the node and removes the data dir.
func (tn *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := tn.srv.Shutdown(ctx)
	if serr := <-tn.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, tn.Node.Close(), os.RemoveAll(tn.dir))
}

// New starts a node closed by t.Cleanup.
func New(t testing.TB) *Node {
	t.Helper()
	return NewSecure(t, rpc.Security{})
}

// NewSecure starts a node checking callers against sec, closed by t.Cleanup.
func NewSecure(t testing.TB, sec rpc.Security) *Node {
	t.Helper()
	tn, err := StartSecure(sec)
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
