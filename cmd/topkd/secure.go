package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/topkd/topkd/server/security"
)

// secureFlags are the security settings as given.
type secureFlags struct {
	certFile, keyFile, caFile, nodeName string
	tokenFile, gossipKeyFile            string
	insecure                            bool
}

// protection is what a node runs with.
type protection struct {
	certs      *security.Certs
	tokens     *security.Tokens
	gossipKeys [][]byte
}

// loadProtection reads certificates, tokens (--token-file, else the
// TOPKD_TOKENS lines) and the gossip key (--gossip-key-file, else
// TOPKD_GOSSIP_KEY).
func loadProtection(f secureFlags) (protection, error) {
	var p protection
	var err error
	if f.certFile != "" || f.keyFile != "" || f.caFile != "" {
		if p.certs, err = security.LoadCerts(security.CertFiles{CA: f.caFile, Cert: f.certFile, Key: f.keyFile}, f.nodeName); err != nil {
			return p, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
		}
	}
	switch lines := os.Getenv("TOPKD_TOKENS"); {
	case f.tokenFile != "":
		if p.tokens, err = security.LoadTokens(f.tokenFile); err != nil {
			return p, fmt.Errorf("--token-file: %w", err)
		}
	case lines != "":
		if p.tokens, err = security.ParseTokens(lines); err != nil {
			return p, err
		}
	}
	key := os.Getenv("TOPKD_GOSSIP_KEY")
	if f.gossipKeyFile != "" {
		b, err := os.ReadFile(f.gossipKeyFile)
		if err != nil {
			return p, fmt.Errorf("--gossip-key-file: %w", err)
		}
		key = string(b)
	}
	if key != "" {
		k, err := security.ParseGossipKey(key)
		if err != nil {
			return p, err
		}
		p.gossipKeys = [][]byte{k}
	}
	return p, nil
}

// exposure lists each port bound beyond loopback without its protection:
// the HTTP port needs TLS and tokens, the Raft port mutual TLS, gossip a key.
func (p protection) exposure(httpAddr, raftAddr, gossipAddr string) []string {
	var out []string
	if !loopback(httpAddr) && (p.certs == nil || p.tokens == nil) {
		out = append(out, fmt.Sprintf("HTTP %s without %s", httpAddr, missing(p.certs != nil, "TLS", p.tokens != nil, "tokens")))
	}
	if !loopback(raftAddr) && p.certs == nil {
		out = append(out, fmt.Sprintf("Raft %s without mutual TLS", raftAddr))
	}
	if gossipAddr != "" && !loopback(gossipAddr) && len(p.gossipKeys) == 0 {
		out = append(out, fmt.Sprintf("gossip %s without a key", gossipAddr))
	}
	return out
}

func missing(a bool, an string, b bool, bn string) string {
	switch {
	case !a && !b:
		return an + " and " + bn
	case !a:
		return an
	}
	return bn
}

// checkExposure refuses to start with an unprotected port beyond loopback
// unless insecure is set, and then warns.
func checkExposure(p protection, insecure bool, httpAddr, raftAddr, gossipAddr string, log *slog.Logger) error {
	exposed := p.exposure(httpAddr, raftAddr, gossipAddr)
	switch {
	case len(exposed) > 0 && !insecure:
		return fmt.Errorf("refusing to listen beyond loopback unprotected: %s; give --tls-ca/--tls-cert/--tls-key, --token-file and --gossip-key-file (README, \"Securing a cluster\"), or --insecure to accept it",
			strings.Join(exposed, "; "))
	case len(exposed) > 0:
		log.Warn("INSECURE: anyone who reaches these ports can read and change this cluster", "unprotected", strings.Join(exposed, "; "))
	case p.certs == nil && p.tokens == nil && len(p.gossipKeys) == 0:
		log.Info("listening on loopback only, without TLS, tokens or gossip encryption")
	}
	if p.tokens != nil && p.certs == nil {
		log.Warn("tokens without TLS travel in clear text, and the node-to-node API takes no token")
	}
	return nil
}

// loopback reports whether addr (host:port) binds to loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false // ":7070" binds every interface
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	if host == "localhost" {
		return true
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// watch reloads certificates and tokens when their files change, and at
// once on SIGHUP, until ctx ends.
func (p protection) watch(ctx context.Context, log *slog.Logger) {
	const every = 2 * time.Second
	if p.certs != nil {
		go p.certs.Watch(ctx, every, log)
	}
	if p.tokens != nil {
		go p.tokens.Watch(ctx, every, log)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			var errs []error
			if p.certs != nil {
				errs = append(errs, p.certs.Reload())
			}
			if p.tokens != nil {
				errs = append(errs, p.tokens.Reload())
			}
			if err := errors.Join(errs...); err != nil {
				log.Warn("SIGHUP: reload failed; keeping what is in use", "err", err)
				continue
			}
			log.Info("SIGHUP: certificates and tokens reloaded")
		}
	}()
}
