package rpc_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/topkd/topkd/client"
	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/proto/topkd/node/v1/nodev1connect"
	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/rpc/rpctest"
	"github.com/topkd/topkd/server/security"
	"github.com/topkd/topkd/server/security/securitytest"
)

// secureNode is a node with TLS and tokens, and what its callers hold.
type secureNode struct {
	*rpctest.Node
	ca                   *securitytest.CA
	tokens               map[security.Role]string // by role; security.None: no token
	nodePair, clientPair securitytest.Pair
	clientTLS, nodeTLS   *tls.Config
	wrongCA              *securitytest.CA
}

func newSecureNode(t *testing.T) *secureNode {
	t.Helper()
	dir := t.TempDir()
	sn := &secureNode{ca: securitytest.NewCA(t, dir, "cluster"), wrongCA: securitytest.NewCA(t, dir, "other"),
		tokens: map[security.Role]string{}}
	sn.nodePair = sn.ca.Node("n1", security.DefaultNodeName)
	sn.clientPair = sn.ca.Issue("client", []string{"client.example"})
	certs, err := security.LoadCerts(security.CertFiles{CA: sn.ca.File, Cert: sn.nodePair.Cert, Key: sn.nodePair.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range []security.Role{security.Read, security.Write, security.Admin} {
		tok, line, err := security.NewToken(r, r.String())
		if err != nil {
			t.Fatal(err)
		}
		sn.tokens[r], lines = tok, append(lines, line)
	}
	tokens, err := security.ParseTokens(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	sn.Node = rpctest.NewSecure(t, rpc.Security{Tokens: tokens, Certs: certs})
	if sn.clientTLS, err = client.LoadTLS(sn.ca.File, "", "", ""); err != nil {
		t.Fatal(err)
	}
	sn.nodeTLS = certs.ClientConfig()
	return sn
}

func (sn *secureNode) client(t *testing.T, role security.Role, extra ...client.Option) *client.Client {
	t.Helper()
	opts := append([]client.Option{client.WithTLS(sn.clientTLS), client.WithDiscovery(0)}, extra...)
	if tok := sn.tokens[role]; tok != "" {
		opts = append(opts, client.WithToken(tok))
	}
	c, err := client.New([]string{sn.Addr}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Each role may do exactly what it is for, over REST and over Connect;
// otherwise the call is refused as unauthenticated (no or unknown token)
// or not permitted (a known token of a lesser role), and says nothing
// about the token.
func TestRoles(t *testing.T) {
	sn := newSecureNode(t)
	ctx := t.Context()
	admin := sn.client(t, security.Admin)
	if _, err := admin.CreateLeaderboard(ctx, client.Leaderboard{Name: "songs"}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: sn.clientTLS}}
	type call struct {
		name string
		need security.Role
		rest func(token string) (*http.Response, error)
		conn func(c *client.Client) error
	}
	req := func(method, path, body, token string) (*http.Response, error) {
		r, err := http.NewRequestWithContext(ctx, method, "https://"+sn.Addr+path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		r.Header.Set("Content-Type", "application/json")
		return hc.Do(r)
	}
	n := 0
	calls := []call{
		{"top items", security.Read, func(tok string) (*http.Response, error) {
			return req("GET", "/api/top-items?leaderboard=songs&k=3", "", tok)
		},
			func(c *client.Client) error { _, err := c.TopK(ctx, "songs", "all", 3); return err }},
		{"status", security.Read, func(tok string) (*http.Response, error) { return req("GET", "/api/status", "", tok) },
			func(c *client.Client) error { _, err := c.Status(ctx); return err }},
		{"list leaderboards", security.Read, func(tok string) (*http.Response, error) { return req("GET", "/api/leaderboards", "", tok) },
			func(c *client.Client) error { _, err := c.ListLeaderboards(ctx); return err }},
		{"ingest", security.Write, func(tok string) (*http.Response, error) {
			return req("POST", "/api/events", `{"leaderboard":"songs","events":[{"item":"a"}]}`, tok)
		}, func(c *client.Client) error {
			_, err := c.IngestBatch(ctx, "songs", []client.Event{{Item: "a"}})
			return err
		}},
		{"create and drop a leaderboard", security.Admin, func(tok string) (*http.Response, error) {
			n++
			name := fmt.Sprintf("r%d", n)
			resp, err := req("POST", "/api/leaderboards", `{"name":"`+name+`"}`, tok)
			if err != nil || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
				return resp, err
			}
			resp.Body.Close()
			return req("DELETE", "/api/leaderboards/"+name, "", tok)
		}, func(c *client.Client) error {
			n++
			name := fmt.Sprintf("c%d", n)
			if _, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: name}); err != nil {
				return err
			}
			return c.DropLeaderboard(ctx, name)
		}},
		{"verify replicas", security.Admin, func(tok string) (*http.Response, error) { return req("POST", "/api/verify-replicas", "", tok) },
			func(c *client.Client) error { _, err := c.VerifyReplicas(ctx); return err }},
	}
	unknown := sn.tokens[security.Admin][:len(sn.tokens[security.Admin])-2] + "xx"
	for _, c := range calls {
		for _, have := range []security.Role{security.None, security.Read, security.Write, security.Admin, -1} {
			tok := sn.tokens[have]
			if have == -1 {
				tok = unknown
			}
			wantStatus, wantCode := http.StatusOK, connect.Code(0)
			switch {
			case have == -1 || have == security.None:
				wantStatus, wantCode = http.StatusUnauthorized, connect.CodeUnauthenticated
			case have < c.need:
				wantStatus, wantCode = http.StatusForbidden, connect.CodePermissionDenied
			}
			name := fmt.Sprintf("%s with %v", c.name, have)
			if have == -1 {
				name = c.name + " with an unknown token"
			}
			resp, err := c.rest(tok)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			body := make([]byte, 4096)
			nb, _ := resp.Body.Read(body)
			resp.Body.Close()
			if got := resp.StatusCode; got != wantStatus && (wantStatus != http.StatusOK || got >= 300) {
				t.Errorf("REST %s: status %d, want %d (%s)", name, got, wantStatus, body[:nb])
			}
			if wantStatus == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("REST %s: 401 without WWW-Authenticate", name)
			}
			if tok != "" && strings.Contains(string(body[:nb]), tok) {
				t.Errorf("REST %s: the answer repeats the token", name)
			}
			var cl *client.Client
			if have == -1 {
				cl = sn.client(t, security.None, client.WithToken(unknown))
			} else {
				cl = sn.client(t, have)
			}
			err = c.conn(cl)
			if got := connect.CodeOf(err); err != nil && got != wantCode || err == nil && wantCode != 0 {
				t.Errorf("Connect %s: %v, want code %v", name, err, wantCode)
			}
			if err != nil && tok != "" && strings.Contains(err.Error(), tok) {
				t.Errorf("Connect %s: the error repeats the token", name)
			}
		}
	}
	// Orchestration's endpoints need no token.
	for _, path := range []string{"/healthz", "/metrics", "/readyz"} {
		resp, err := req("GET", path, "", "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s without a token: %d", path, resp.StatusCode)
		}
	}
}

// gRPC goes through the same check as Connect.
func TestRolesOverGRPC(t *testing.T) {
	sn := newSecureNode(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: sn.clientTLS, ForceAttemptHTTP2: true}}
	c := topkv1connect.NewTopKServiceClient(hc, "https://"+sn.Addr, connect.WithGRPC())
	withToken := func(r *connect.Request[topkv1.IngestRequest], tok string) *connect.Request[topkv1.IngestRequest] {
		if tok != "" {
			r.Header().Set("Authorization", "Bearer "+tok)
		}
		return r
	}
	for _, tc := range []struct {
		role security.Role
		want connect.Code
	}{{security.None, connect.CodeUnauthenticated}, {security.Read, connect.CodePermissionDenied}, {security.Write, 0}} {
		req := &topkv1.IngestRequest{Leaderboard: "default", Events: []*topkv1.Event{{Item: "a"}}}
		_, err := c.Ingest(t.Context(), withToken(connect.NewRequest(req), sn.tokens[tc.role]))
		if got := connect.CodeOf(err); err != nil && got != tc.want || err == nil && tc.want != 0 {
			t.Errorf("gRPC ingest with %v: %v, want %v", tc.role, err, tc.want)
		}
	}
}

// Only a node certificate reaches the node-to-node API: a client
// certificate of the same CA with a valid admin token does not.
func TestPeerAPINeedsNodeCertificate(t *testing.T) {
	sn := newSecureNode(t)
	clientCert, err := tls.LoadX509KeyPair(sn.clientPair.Cert, sn.clientPair.Key)
	if err != nil {
		t.Fatal(err)
	}
	withClientCert := sn.clientTLS.Clone()
	withClientCert.Certificates = []tls.Certificate{clientCert}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		want connect.Code
	}{
		{"no certificate", sn.clientTLS, connect.CodeUnauthenticated},
		{"client certificate", withClientCert, connect.CodeUnauthenticated},
		{"node certificate", sn.nodeTLS, 0},
	} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.tls, ForceAttemptHTTP2: true}}
		pc := nodev1connect.NewNodeServiceClient(hc, "https://"+sn.Addr)
		r := connect.NewRequest(&nodev1.ReplicaStatusRequest{Group: 1})
		r.Header().Set("Authorization", "Bearer "+sn.tokens[security.Admin])
		_, err := pc.ReplicaStatus(t.Context(), r)
		if got := connect.CodeOf(err); err != nil && got != tc.want || err == nil && tc.want != 0 {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// A client that trusts another CA does not talk to the node at all.
func TestClientTrustingAnotherCA(t *testing.T) {
	sn := newSecureNode(t)
	wrong, err := client.LoadTLS(sn.wrongCA.File, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New([]string{sn.Addr}, client.WithTLS(wrong), client.WithToken(sn.tokens[security.Admin]),
		client.WithDiscovery(0), client.WithRetryTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	_, err = c.Status(t.Context())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("status through a client trusting another CA: %v, want a certificate error", err)
	}
}
