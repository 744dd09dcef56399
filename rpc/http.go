package rpc

import (
	"context"
	"crypto/tls"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/topkd/topkd/server"
)

// Handler serves every API of a node on one HTTP port. /metrics, /healthz
// and /readyz need no token: orchestration reads them.
func Handler(n *server.Node, sec Security) http.Handler {
	mux := http.NewServeMux()
	g := newGuard(sec, n.Registry())
	(&rest{n: n}).register(mux, g)
	registerConnect(mux, n, g)
	registerPeer(mux, n, g)
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

// NewServer returns an HTTP server speaking HTTP/1.1 and HTTP/2: over TLS
// when tlsConf is set (serve it with ListenAndServeTLS("", "")), else
// without (h2c), so gRPC clients work on the same port. A connection that sends no
// complete request headers within 10 s, or stays idle between requests for
// 2 minutes, is closed, so slow and idle clients cannot hold a node's
// connections (cluster-test TestSlowAndIdleClients).
func NewServer(addr string, h http.Handler, tlsConf *tls.Config) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	if tlsConf != nil {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Server{Addr: addr, Handler: h, Protocols: &p, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}
