package rpc

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/topkd/topkd/server"
)

// Handler serves every API of a node on one HTTP port.
func Handler(n *server.Node) http.Handler {
	mux := http.NewServeMux()
	(&rest{n: n}).register(mux)
	registerConnect(mux, n)
	registerPeer(mux, n)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 50*time.Millisecond)
		defer cancel()
		if err := n.Ready(ctx); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

// NewServer returns an HTTP server speaking HTTP/1.1 and HTTP/2 without TLS
// (h2c), so gRPC clients work on the same port. A connection that sends no
// complete request headers within 10 s, or stays idle between requests for
// 2 minutes, is closed, so slow and idle clients cannot hold a node's
// connections (cluster-test TestSlowAndIdleClients).
func NewServer(addr string, h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Addr: addr, Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}
