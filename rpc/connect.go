package rpc

import (
	"net/http"

	"github.com/topkd/topkd/server"
)

// registerConnect mounts the topk.v1 Connect service.
func registerConnect(mux *http.ServeMux, n *server.Node) {}
