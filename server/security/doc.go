// Package security holds what a node checks callers against: certificates
// (TLS for clients, mutual TLS between nodes, reloaded when their files
// change), bearer tokens with roles, and gossip encryption keys.
//
// It never logs or returns a token, and never keeps one: token files hold
// SHA-256 digests, and a presented token is hashed and compared in constant
// time against every digest.
package security
