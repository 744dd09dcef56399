package client_test

import (
	"testing"

	"github.com/topkd/topkd/rpc/rpctest"
)

func startNode() (*rpctest.Node, error) { return rpctest.Start() }

func newTestNode(t *testing.T) *rpctest.Node { return rpctest.New(t) }
