package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/topkd/topkd/server/security"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true, "[::1]:7070": true, "localhost:7070": true, "127.0.0.2:1": true,
		":7070": false, "0.0.0.0:7070": false, "[::]:7070": false, "10.1.2.3:7070": false, "not an address": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Every port beyond loopback needs its protection, or --insecure; with
// --insecure each start warns, naming what is exposed.
func TestExposure(t *testing.T) {
	full := protection{certs: &security.Certs{}, tokens: &security.Tokens{}, gossipKeys: [][]byte{make([]byte, 32)}}
	lo := "127.0.0.1:1"
	out := "10.0.0.1:1"
	for _, tc := range []struct {
		name              string
		p                 protection
		http, raft, gossp string
		exposed           []string
	}{
		{"loopback, no protection", protection{}, lo, lo, lo, nil},
		{"everything out, fully protected", full, out, out, out, nil},
		{"HTTP out without tokens", protection{certs: full.certs, gossipKeys: full.gossipKeys}, out, lo, lo, []string{"HTTP 10.0.0.1:1 without tokens"}},
		{"HTTP out without TLS", protection{tokens: full.tokens}, out, lo, lo, []string{"HTTP 10.0.0.1:1 without TLS"}},
		{"Raft out without TLS", protection{}, lo, out, lo, []string{"Raft 10.0.0.1:1 without mutual TLS"}},
		{"gossip out without a key", protection{certs: full.certs, tokens: full.tokens}, lo, lo, out, []string{"gossip 10.0.0.1:1 without a key"}},
		{"no gossip", protection{}, lo, lo, "", nil},
	} {
		got := tc.p.exposure(tc.http, tc.raft, tc.gossp)
		if strings.Join(got, "|") != strings.Join(tc.exposed, "|") {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.exposed)
		}
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		err := checkExposure(tc.p, false, tc.http, tc.raft, tc.gossp, log)
		if (err != nil) != (len(tc.exposed) > 0) {
			t.Errorf("%s: without --insecure: %v", tc.name, err)
		}
		if err := checkExposure(tc.p, true, tc.http, tc.raft, tc.gossp, log); err != nil {
			t.Errorf("%s: with --insecure: %v", tc.name, err)
		}
		if warned := strings.Contains(logs.String(), "INSECURE"); warned != (len(tc.exposed) > 0) {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.name, warned, len(tc.exposed) > 0, logs.String())
		}
	}
}
