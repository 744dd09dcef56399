// Package rpc exposes a server.Node over HTTP: the Connect service topk.v1
// (also gRPC and gRPC-Web), the plain HTTP/JSON API under /api, health
// checks and metrics. It validates input, calls the node and maps errors to
// codes in one place (errors.go). It holds no state of its own and never
// talks to Raft directly.
package rpc
