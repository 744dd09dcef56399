package rpc

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
	"github.com/topkd/topkd/server/security"
)

// Security is what a node's HTTP port checks callers against. The zero
// value checks nothing: a node on loopback, or started with --insecure.
type Security struct {
	// Tokens, when set, are required on the client API (REST, Connect,
	// gRPC, gRPC-Web), each call needing the role roles below name.
	Tokens *security.Tokens
	// Certs, when set, restricts the node-to-node API to callers with a
	// node certificate (the HTTP port serves TLS with them).
	Certs *security.Certs
}

// roles is what each client API call needs. A procedure missing here
// needs admin: a new call is closed until it is placed.
var roles = map[string]security.Role{
	topkv1connect.TopKServiceIngestProcedure:              security.Write,
	topkv1connect.TopKServiceTopKProcedure:                security.Read,
	topkv1connect.TopKServiceCountProcedure:               security.Read,
	topkv1connect.TopKServiceListLeaderboardsProcedure:    security.Read,
	topkv1connect.TopKServiceDescribeLeaderboardProcedure: security.Read,
	topkv1connect.TopKServiceStatusProcedure:              security.Read,
	topkv1connect.TopKServiceCreateLeaderboardProcedure:   security.Admin,
	topkv1connect.TopKServiceDropLeaderboardProcedure:     security.Admin,
	topkv1connect.TopKServiceLeaveProcedure:               security.Admin,
	topkv1connect.TopKServiceVerifyReplicasProcedure:      security.Admin,
	topkv1connect.TopKServiceRebalanceProcedure:           security.Admin,
	topkv1connect.TopKServiceRotateGossipKeyProcedure:     security.Admin,
	"/grpc.health.v1.Health/Check":                        security.None,
	"/grpc.health.v1.Health/Watch":                        security.None,
}

func procedureRole(procedure string) security.Role {
	if r, ok := roles[procedure]; ok {
		return r
	}
	if strings.HasPrefix(procedure, "/grpc.reflection.") {
		return security.Read
	}
	return security.Admin
}

// guard makes the one check every client API call passes, REST or
// Connect, on the node that receives it.
type guard struct {
	tokens  *security.Tokens
	certs   *security.Certs
	refused *prometheus.CounterVec
}

func newGuard(sec Security, reg prometheus.Registerer) *guard {
	g := &guard{tokens: sec.Tokens, certs: sec.Certs, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "topkd_auth_refused_total",
		Help: "Calls refused by authentication or authorization, by reason: no_token, unknown_token, not_permitted, not_a_node.",
	}, []string{"reason"})}
	if reg != nil {
		_ = reg.Register(g.refused)
	}
	return g
}

// check returns nil, or a Connect error (Unauthenticated or
// PermissionDenied) that says nothing about the token presented.
func (g *guard) check(authorization string, need security.Role) error {
	if g.tokens == nil || need == security.None {
		return nil
	}
	token, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		token = ""
	}
	_, err := g.tokens.Check(strings.TrimSpace(token), need)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, security.ErrNotPermitted):
		g.refused.WithLabelValues("not_permitted").Inc()
		return connect.NewError(connect.CodePermissionDenied, err)
	case errors.Is(err, security.ErrNoToken):
		g.refused.WithLabelValues("no_token").Inc()
	default:
		g.refused.WithLabelValues("unknown_token").Inc()
	}
	return connect.NewError(connect.CodeUnauthenticated, err)
}

// rest wraps a REST handler in the check.
func (g *guard) rest(need security.Role, h http.HandlerFunc) http.HandlerFunc {
	if g.tokens == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := g.check(r.Header.Get("Authorization"), need); err != nil {
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="topkd"`)
			}
			c := connect.CodeOf(err)
			writeJSON(w, httpStatus(c), map[string]apiError{"error": {Code: c.String(), Message: err.(*connect.Error).Message()}})
			return
		}
		h(w, r)
	}
}

// nodesOnly admits only callers with a node certificate, when the node
// has certificates.
func (g *guard) nodesOnly(h http.Handler) http.Handler {
	if g.certs == nil {
		return h
	}
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.certs.IsNode(r.TLS) {
			g.refused.WithLabelValues("not_a_node").Inc()
			_ = ew.Write(w, r, connect.NewError(connect.CodeUnauthenticated, errors.New("the node-to-node API needs a node certificate")))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// interceptor checks each Connect, gRPC and gRPC-Web call.
func (g *guard) interceptor() connect.Interceptor { return guardInterceptor{g} }

type guardInterceptor struct{ g *guard }

func (i guardInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.g.check(req.Header().Get("Authorization"), procedureRole(req.Spec().Procedure)); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i guardInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i guardInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.g.check(conn.RequestHeader().Get("Authorization"), procedureRole(conn.Spec().Procedure)); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
