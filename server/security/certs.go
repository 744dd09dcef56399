package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultNodeName is the DNS name a node certificate carries. A certificate
// the cluster CA signed without it is a client certificate: it may call the
// client API (with a token), never Raft or the node-to-node API (Consul's
// verify_server_hostname does the same with server.<dc>.<domain>).
const DefaultNodeName = "node.topkd"

// CertFiles names the PEM files of a node's TLS identity.
type CertFiles struct {
	CA   string // the cluster CA: clients and peers are verified against it
	Cert string // this node's certificate (it may include intermediates)
	Key  string
}

// Certs is a node's TLS identity, reloaded from its files. Configurations
// built from it read the current identity at each handshake, so a reload
// takes effect for new connections without a restart.
type Certs struct {
	files    CertFiles
	nodeName string
	cur      atomic.Pointer[identity]
}

type identity struct {
	cert  *tls.Certificate
	pool  *x509.CertPool
	stamp string // the files' sizes and modification times

	// nodes caches IsNode's verdicts under this CA by the peer's chain:
	// every node-to-node request asks, and a chain verification costs an
	// ECDSA or RSA signature check. Bounded: cleared when full.
	mu    sync.Mutex
	nodes map[string]bool
}

const maxCachedChains = 1024

// LoadCerts reads the files; nodeName is DefaultNodeName when empty.
func LoadCerts(files CertFiles, nodeName string) (*Certs, error) {
	if files.CA == "" || files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs a CA, a certificate and a key file")
	}
	if nodeName == "" {
		nodeName = DefaultNodeName
	}
	c := &Certs{files: files, nodeName: nodeName}
	id, err := c.load()
	if err != nil {
		return nil, err
	}
	if err := c.checkNode(id.cert.Leaf, id.pool); err != nil {
		return nil, fmt.Errorf("%s is not a node certificate of this CA: %w", files.Cert, err)
	}
	c.cur.Store(id)
	return c, nil
}

// NodeName is the name node certificates must carry.
func (c *Certs) NodeName() string { return c.nodeName }

func (c *Certs) stamp() string {
	return fileStamp(c.files.CA) + ";" + fileStamp(c.files.Cert) + ";" + fileStamp(c.files.Key)
}

func (c *Certs) load() (*identity, error) {
	stamp := c.stamp()
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	pem, err := os.ReadFile(c.files.CA)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("load CA: no certificate in %s", c.files.CA)
	}
	return &identity{cert: &cert, pool: pool, stamp: stamp}, nil
}

// Reload reads the files again. On any error the current identity stays.
func (c *Certs) Reload() error {
	id, err := c.load()
	if err != nil {
		return err
	}
	if err := c.checkNode(id.cert.Leaf, id.pool); err != nil {
		return fmt.Errorf("%s is not a node certificate of this CA: %w", c.files.Cert, err)
	}
	c.cur.Store(id)
	return nil
}

// Watch reloads whenever the files' sizes or modification times change,
// checking every interval, until ctx ends. Errors are logged and the
// identity in use stays (a half-written file is retried next time).
func (c *Certs) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.stamp() == c.cur.Load().stamp {
			continue
		}
		if err := c.Reload(); err != nil {
			log.Warn("TLS files changed but cannot be loaded; keeping the certificate in use", "err", err)
			continue
		}
		log.Info("TLS certificate reloaded", "not_after", c.NotAfter())
	}
}

// NotAfter is when the certificate in use expires.
func (c *Certs) NotAfter() time.Time { return c.cur.Load().cert.Leaf.NotAfter }

// checkNode verifies a certificate against the CA as a node's: signed by
// it and carrying the node name.
func (c *Certs) checkNode(leaf *x509.Certificate, pool *x509.CertPool, inter ...*x509.Certificate) error {
	if leaf == nil {
		return errors.New("no certificate")
	}
	ip := x509.NewCertPool()
	for _, ic := range inter {
		ip.AddCert(ic)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: ip, DNSName: c.nodeName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// IsNode reports whether a connection's client presented a node
// certificate of the current CA.
func (c *Certs) IsNode(cs *tls.ConnectionState) bool {
	if cs == nil || len(cs.PeerCertificates) == 0 || time.Now().After(cs.PeerCertificates[0].NotAfter) {
		return false
	}
	id := c.cur.Load()
	var key strings.Builder
	for _, pc := range cs.PeerCertificates {
		key.Write(pc.Raw)
	}
	id.mu.Lock()
	ok, found := id.nodes[key.String()]
	id.mu.Unlock()
	if found {
		return ok
	}
	ok = c.checkNode(cs.PeerCertificates[0], id.pool, cs.PeerCertificates[1:]...) == nil
	id.mu.Lock()
	if id.nodes == nil || len(id.nodes) >= maxCachedChains {
		id.nodes = map[string]bool{}
	}
	id.nodes[key.String()] = ok
	id.mu.Unlock()
	return ok
}

// ServerConfig is for the HTTP port: clients may present a certificate
// (verified against the CA when they do) and authenticate with a token;
// the node-to-node API checks IsNode on each request.
func (c *Certs) ServerConfig() *tls.Config {
	return c.serverConfig(tls.VerifyClientCertIfGiven)
}

// RaftServerConfig is for the Raft port: only nodes connect.
func (c *Certs) RaftServerConfig() *tls.Config {
	return c.serverConfig(tls.RequireAndVerifyClientCert)
}

func (c *Certs) serverConfig(auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			id := c.cur.Load()
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*id.cert},
				ClientCAs: id.pool, ClientAuth: auth, NextProtos: []string{"h2", "http/1.1"}}
			if auth == tls.RequireAndVerifyClientCert {
				cfg.NextProtos = nil
				cfg.VerifyConnection = func(cs tls.ConnectionState) error {
					if !c.IsNode(&cs) {
						return errors.New("the client certificate is not a node certificate")
					}
					return nil
				}
			}
			return cfg, nil
		},
	}
}

// ClientConfig is for calls to other nodes (Raft and the node-to-node
// API): it presents this node's certificate and accepts only a peer with a
// node certificate of the current CA, whatever address it was dialled at.
func (c *Certs) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.cur.Load().cert, nil
		},
		// The standard check would compare the dialled address with the
		// certificate; VerifyConnection checks the node name against the
		// CA in use instead.
		InsecureSkipVerify: true,
		ServerName:         c.nodeName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if !c.IsNode(&cs) {
				return errors.New("the peer's certificate is not a node certificate of this cluster's CA")
			}
			return nil
		},
	}
}
