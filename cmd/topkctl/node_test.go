package main

import (
	"testing"

	"github.com/topkd/topkd/rpc/rpctest"
)

func newTestNode(t *testing.T) *rpctest.Node { return rpctest.New(t) }
