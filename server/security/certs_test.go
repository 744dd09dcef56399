package security_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/topkd/topkd/server/security"
	"github.com/topkd/topkd/server/security/securitytest"
)

func load(t *testing.T, ca *securitytest.CA, p securitytest.Pair) *security.Certs {
	t.Helper()
	c, err := security.LoadCerts(security.CertFiles{CA: ca.File, Cert: p.Cert, Key: p.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake over loopback TCP and returns the
// client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (cerr, serr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte("x")) // the client's certificate is checked by now in TLS 1.3
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	return err, <-done
}

func TestNodeCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, dir, "cluster")
	other := securitytest.NewCA(t, dir, "other")
	n1 := load(t, ca, ca.Node("n1", security.DefaultNodeName))
	n2 := load(t, ca, ca.Node("n2", security.DefaultNodeName))
	stranger := load(t, other, other.Node("x", security.DefaultNodeName))

	if _, err := security.LoadCerts(security.CertFiles{CA: ca.File, Cert: ca.Issue("c", []string{"client"}).Cert, Key: dir + "/c-key.pem"}, ""); err == nil {
		t.Error("a client certificate loaded as a node's")
	}
	client := ca.Issue("client", []string{"client.example"})
	clientCert, err := tls.LoadX509KeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	clientAsNode := n2.ClientConfig()
	clientAsNode.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &clientCert, nil }

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
	}{
		{"node to node", n1.RaftServerConfig(), n2.ClientConfig(), true},
		{"node of another CA dials", n1.RaftServerConfig(), stranger.ClientConfig(), false},
		{"node dials another CA's node", stranger.RaftServerConfig(), n1.ClientConfig(), false},
		{"client certificate of the cluster CA on the Raft port", n1.RaftServerConfig(), clientAsNode, false},
		{"client certificate on the HTTP port", n1.ServerConfig(), clientAsNode, true},
		{"no certificate on the Raft port", n1.RaftServerConfig(), &tls.Config{InsecureSkipVerify: true}, false},
	} {
		cerr, serr := handshake(t, tc.server, tc.client)
		if ok := cerr == nil && serr == nil; ok != tc.ok {
			t.Errorf("%s: client %v, server %v; want ok=%v", tc.name, cerr, serr, tc.ok)
		}
	}
}

func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, dir, "cluster")
	n1 := load(t, ca, ca.Node("n1", security.DefaultNodeName))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go n1.Watch(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler))

	// A CA the old one did not sign: until the reload, n1 refuses its nodes.
	time.Sleep(20 * time.Millisecond)
	ca2 := securitytest.NewCA(t, dir, "cluster2")
	n3 := load(t, ca2, ca2.Node("n3", security.DefaultNodeName))
	if cerr, serr := handshake(t, n1.RaftServerConfig(), n3.ClientConfig()); cerr == nil && serr == nil {
		t.Fatal("another CA's node accepted before the reload")
	}
	// Replace n1's files in place (as a secret mount does) with ca2's.
	p := ca2.Node("n1-new", security.DefaultNodeName)
	for from, to := range map[string]string{ca2.File: ca.File, p.Cert: dir + "/n1.pem", p.Key: dir + "/n1-key.pem"} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".tmp", to); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cerr, serr := handshake(t, n1.RaftServerConfig(), n3.ClientConfig())
		if cerr == nil && serr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reloaded: %v / %v", cerr, serr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkIsNode: the check each node-to-node request makes, answered
// from the cache of verified chains, against verifying the chain again.
func BenchmarkIsNode(b *testing.B) {
	dir := b.TempDir()
	ca := securitytest.NewCA(b, dir, "cluster")
	p := ca.Node("n1", security.DefaultNodeName)
	c, err := security.LoadCerts(security.CertFiles{CA: ca.File, Cert: p.Cert, Key: p.Key}, "")
	if err != nil {
		b.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{pair.Leaf}}
		for b.Loop() {
			if !c.IsNode(cs) {
				b.Fatal("not a node")
			}
		}
	})
	b.Run("verified", func(b *testing.B) {
		pool := poolOf(b, ca.File)
		for b.Loop() {
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: security.DefaultNodeName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func poolOf(b *testing.B, file string) *x509.CertPool {
	pem, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}
