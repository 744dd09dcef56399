package clustertest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/topkd/topkd/client"
	"github.com/topkd/topkd/server/security"
	"github.com/topkd/topkd/server/security/securitytest"
)

// secureBed is a secured cluster of topkd processes on loopback and the
// credentials of its callers.
type secureBed struct {
	t          *testing.T
	dir        string
	ca, other  *securitytest.CA
	nodeCert   securitytest.Pair // every node's: one name, node.topkd
	gossipKey  string            // file holding the first gossip key
	tokenFile  string
	tokens     map[security.Role]string
	clientTLS  *tls.Config
	nodes      []*secureProc
	logs       []string // every process's log, for the token check
	mu         sync.Mutex
	joinGossip string
}

type secureProc struct {
	id, dir, http, raft, gossip, log string
	args                             []string
	cmd                              *exec.Cmd
	exited                           chan struct{}
}

func newSecureBed(t *testing.T) *secureBed {
	dir := t.TempDir()
	b := &secureBed{t: t, dir: dir, ca: securitytest.NewCA(t, dir, "cluster"), other: securitytest.NewCA(t, dir, "other"),
		tokens: map[security.Role]string{}}
	b.nodeCert = b.ca.Node("node", security.DefaultNodeName)
	k, err := security.NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b.gossipKey = b.writeFile("gossip.key", k)
	var lines []string
	for _, r := range []security.Role{security.Read, security.Write, security.Admin} {
		tok, line, err := security.NewToken(r, r.String())
		if err != nil {
			t.Fatal(err)
		}
		b.tokens[r], lines = tok, append(lines, line)
	}
	b.tokenFile = b.writeFile("tokens", strings.Join(lines, "\n")+"\n")
	if b.clientTLS, err = client.LoadTLS(b.ca.File, "", "", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range b.nodes {
			p.kill()
		}
		if t.Failed() {
			for _, p := range b.nodes {
				lb, _ := os.ReadFile(p.log)
				if len(lb) > 3000 {
					lb = lb[len(lb)-3000:]
				}
				t.Logf("%s log tail:\n%s", p.id, lb)
			}
		}
	})
	return b
}

func (b *secureBed) writeFile(name, content string) string {
	path := filepath.Join(b.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// secureArgs are a member's flags: the cluster CA, the node certificate,
// the tokens and the first gossip key.
func (b *secureBed) secureArgs() []string {
	return []string{"--tls-ca", b.ca.File, "--tls-cert", b.nodeCert.Cert, "--tls-key", b.nodeCert.Key,
		"--token-file", b.tokenFile, "--gossip-key-file", b.gossipKey}
}

// proc prepares a process; args replace secureArgs when given.
func (b *secureBed) proc(id string, args ...string) *secureProc {
	if args == nil {
		args = b.secureArgs()
	}
	p := &secureProc{id: id, dir: filepath.Join(b.dir, id), http: freePort(b.t), raft: freePort(b.t), gossip: freePort(b.t),
		log: filepath.Join(b.dir, id+".log"), args: args}
	b.mu.Lock()
	b.nodes = append(b.nodes, p)
	b.logs = append(b.logs, p.log)
	b.mu.Unlock()
	return p
}

func (b *secureBed) launch(p *secureProc, join bool) error {
	args := append([]string{"--data-dir", p.dir, "--node-id", p.id, "--http-addr", p.http, "--raft-addr", p.raft,
		"--gossip-addr", p.gossip, "--partitions", "4", "--replicas", "3"}, p.args...)
	if join {
		args = append(args, "--join", b.joinGossip)
	}
	lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(topkdBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		lf.Close()
		close(done)
	}(p.cmd, p.exited)
	return nil
}

// start launches a member and waits until it answers /readyz over TLS.
func (b *secureBed) start(p *secureProc, join bool) {
	b.t.Helper()
	if err := b.launch(p, join); err != nil {
		b.t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: b.clientTLS.Clone()}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			b.t.Fatalf("%s exited before it was ready: %v", p.id, p.cmd.ProcessState)
		default:
		}
		if resp, err := hc.Get("https://" + p.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("%s not ready within 60 s", p.id)
}

func (p *secureProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
}

func (p *secureProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (b *secureBed) client(role security.Role, addrs ...string) *client.Client {
	b.t.Helper()
	c, err := client.New(addrs, client.WithTLS(b.clientTLS), client.WithToken(b.tokens[role]))
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// waitMembers waits until the admin client sees exactly ids as members,
// every one alive in gossip, and each partition on 3 voters.
func (b *secureBed) waitMembers(ctx context.Context, adm *client.Client, ids ...string) {
	b.t.Helper()
	var last string
	for {
		st, err := adm.Status(ctx)
		if err == nil {
			var got []string
			alive := true
			for _, n := range st.Nodes {
				got = append(got, n.NodeID)
				alive = alive && n.Alive && !n.Down
			}
			slices.Sort(got)
			placed := len(st.Moves) == 0 && len(st.Replicas) == int(st.Partitions)
			for _, p := range st.Replicas {
				placed = placed && p.Leader != "" && len(p.Voters) == 3
			}
			if slices.Equal(got, ids) && alive && placed {
				return
			}
			last = fmt.Sprintf("members %v (all alive: %v), placed: %v", got, alive, placed)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("members not %v: %s", ids, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestSecureCluster: three processes with mutual TLS, tokens and encrypted
// gossip. Ingest is exact through certificate reload under load; nodes
// with the wrong CA, a client certificate or a wrong or missing gossip key
// cannot join or reach Raft; a gossip key rotation on the live cluster
// survives a restart; no token appears in any log.
func TestSecureCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	b := newSecureBed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	n1, n2, n3 := b.proc("n1"), b.proc("n2"), b.proc("n3")
	b.joinGossip = n1.gossip
	b.start(n1, false)
	b.start(n2, true)
	b.start(n3, true)
	adm := b.client(security.Admin, n1.http, n2.http, n3.http)
	b.waitMembers(ctx, adm, "n1", "n2", "n3")

	// Ingest with a write token through n2 while the certificates change.
	w := b.client(security.Write, n2.http)
	want := map[string]int64{}
	stop := make(chan struct{})
	var prodErr error
	var batches int
	var pwg sync.WaitGroup
	pwg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs := make([]client.Event, 200)
			for i := range evs {
				evs[i].Item = fmt.Sprintf("song-%d", rng.IntN(50))
			}
			if _, err := w.IngestBatch(ctx, "default", evs); err != nil {
				prodErr = err
				return
			}
			for _, e := range evs {
				want[e.Item]++
			}
			batches++
		}
	})
	time.Sleep(time.Second)
	served := func(addr string) string {
		c, err := tls.Dial("tcp", addr, b.clientTLS)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served(n1.http)
	fresh := b.ca.Node("node-renewed", security.DefaultNodeName)
	for from, to := range map[string]string{fresh.Cert: b.nodeCert.Cert, fresh.Key: b.nodeCert.Key} {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		tmp := to + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, to); err != nil {
			t.Fatal(err)
		}
	}
	var after string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		reloaded := 0
		for _, p := range []*secureProc{n1, n2, n3} {
			if after = served(p.http); after != before && !strings.HasPrefix(after, "dial") {
				reloaded++
			}
		}
		if reloaded == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate not reloaded on every node within 15 s: %s -> %s", before, after)
		}
	}
	t.Logf("certificate reloaded on 3 nodes under load (serial %s -> %s)", before, after)
	time.Sleep(time.Second)
	close(stop)
	pwg.Wait()
	if prodErr != nil {
		t.Fatalf("ingest during the certificate reload: %v", prodErr)
	}
	read := b.client(security.Read, n1.http, n2.http, n3.http)
	for _, p := range []*secureProc{n1, n2, n3} {
		c := b.client(security.Read, p.http)
		res, err := c.TopK(ctx, "default", "all", 100, client.WithConsistency(client.Linearizable))
		if err != nil {
			t.Fatalf("top-k through %s: %v", p.id, err)
		}
		got := map[string]int64{}
		for _, it := range res.Items {
			got[it.ID] = it.Count
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("through %s after %d batches: counts %v, want %v", p.id, batches, got, want)
		}
	}
	t.Logf("%d batches acknowledged with a write token over TLS, exact on every node", batches)

	// SIGHUP reloads at once, and the node keeps serving.
	if err := n1.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(n1.logText(), "SIGHUP: certificates and tokens reloaded"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within 5 s of SIGHUP:\n%s", n1.logText())
		}
	}
	if _, err := b.client(security.Read, n1.http).Status(ctx); err != nil {
		t.Fatalf("status after SIGHUP: %v", err)
	}

	// Strangers: none may join.
	badCert := b.other.Node("stranger", security.DefaultNodeName)
	clientCert := b.ca.Issue("client", []string{"client.example"})
	wrongKey, _ := security.NewGossipKey()
	withArgs := func(replace map[string]string) []string {
		args := b.secureArgs()
		var out []string
		for i := 0; i < len(args); i += 2 {
			v, ok := replace[args[i]]
			if !ok {
				v = args[i+1]
			}
			if v != "" {
				out = append(out, args[i], v)
			}
		}
		return out
	}
	strangers := []struct {
		p    *secureProc
		exit bool   // it gives up; else it keeps trying
		says string // in its log
	}{
		{b.proc("x-other-ca", withArgs(map[string]string{"--tls-ca": b.other.File, "--tls-cert": badCert.Cert, "--tls-key": badCert.Key})...), false, "certificate"},
		{b.proc("x-client-cert", withArgs(map[string]string{"--tls-cert": clientCert.Cert, "--tls-key": clientCert.Key})...), true, "not a node certificate"},
		{b.proc("x-wrong-key", withArgs(map[string]string{"--gossip-key-file": b.writeFile("wrong.key", wrongKey)})...), true, "gossip key"},
		{b.proc("x-no-key", withArgs(map[string]string{"--gossip-key-file": ""})...), false, "not admitted"},
		{b.proc("x-no-tls", withArgs(map[string]string{"--tls-ca": "", "--tls-cert": "", "--tls-key": ""})...), false, "not admitted"},
	}
	for _, s := range strangers {
		if err := b.launch(s.p, true); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(25 * time.Second)
	for _, s := range strangers {
		if s.exit {
			select {
			case <-s.p.exited:
			case <-time.After(20 * time.Second):
				t.Errorf("%s still running", s.p.id)
			}
		}
		s.p.kill()
		if !strings.Contains(s.p.logText(), s.says) {
			t.Errorf("%s's log does not say %q:\n%s", s.p.id, s.says, s.p.logText())
		}
	}
	b.waitMembers(ctx, adm, "n1", "n2", "n3")
	t.Logf("a node of another CA, one with a client certificate, one without TLS, one with a wrong and one without a gossip key did not join")

	// The Raft port takes no one but a node of this CA.
	nodeCerts, err := security.LoadCerts(security.CertFiles{CA: b.ca.File, Cert: b.nodeCert.Cert, Key: b.nodeCert.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	strangerCerts, err := security.LoadCerts(security.CertFiles{CA: b.other.File, Cert: badCert.Cert, Key: badCert.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tls.LoadX509KeyPair(clientCert.Cert, clientCert.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"node certificate", nodeCerts.ClientConfig(), true},
		{"node certificate of another CA", strangerCerts.ClientConfig(), false},
		{"client certificate of this CA", &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cc}}, false},
		{"no certificate", &tls.Config{InsecureSkipVerify: true}, false},
	} {
		err := raftHandshake(n1.raft, tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("Raft port, %s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if c, err := net.Dial("tcp", n1.raft); err == nil {
		_, _ = c.Write([]byte("TKR\x01\x01"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("Raft port answered a plain-text connection")
		}
		c.Close()
	}

	// Rotate the gossip key on the live cluster: install, use, remove.
	k2, _ := security.NewGossipKey()
	k1, _ := os.ReadFile(b.gossipKey)
	if _, err := adm.RotateGossipKey(ctx, "use", k2); err == nil {
		t.Error("a key no member has was put in use")
	}
	for _, op := range []string{"install", "use"} {
		if _, err := adm.RotateGossipKey(ctx, op, k2); err != nil {
			t.Fatalf("gossip key %s: %v", op, err)
		}
	}
	res, err := adm.RotateGossipKey(ctx, "remove", string(k1))
	if err != nil {
		t.Fatalf("gossip key remove: %v", err)
	}
	id2 := keyID(t, k2)
	for _, m := range res.Members {
		if !slices.Equal(m.KeyIds, []string{id2}) {
			t.Errorf("%s holds keys %v after the rotation, want [%s]", m.Node, m.KeyIds, id2)
		}
	}
	if len(res.Members) != 3 {
		t.Errorf("%d members answered the rotation, want 3", len(res.Members))
	}
	// n3 restarts with the old key on its command line: the keyring it
	// saved wins, and it rejoins gossip.
	if err := n3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-n3.exited
	b.start(n3, false)
	time.Sleep(3 * time.Second) // gossip's suspicion timeout would mark a silent member down by now
	b.waitMembers(ctx, adm, "n1", "n2", "n3")
	old := b.proc("x-old-key", withArgs(nil)...)
	if err := b.launch(old, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.exited:
	case <-time.After(45 * time.Second):
		t.Error("a node with the removed gossip key is still trying to join after 45 s")
	}
	old.kill()
	if !strings.Contains(old.logText(), "gossip key") {
		t.Errorf("the node with the removed key does not say why it failed:\n%s", old.logText())
	}
	b.waitMembers(ctx, adm, "n1", "n2", "n3")
	t.Logf("gossip key rotated on the live cluster; n3 restarted on its saved keyring; the old key no longer joins")

	// Refused calls, the status answer and every log: no token anywhere.
	_, err = read.IngestBatch(ctx, "default", []client.Event{{Item: "x"}})
	if err == nil {
		t.Fatal("ingest with a read token succeeded")
	}
	st, serr := adm.Status(ctx)
	if serr != nil {
		t.Fatal(serr)
	}
	said := err.Error() + fmt.Sprintf("%+v", st)
	for role, tok := range b.tokens {
		if strings.Contains(said, tok) {
			t.Errorf("an error or the status answer holds the %v token", role)
		}
	}
	for _, path := range b.logs {
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for role, tok := range b.tokens {
			if strings.Contains(string(data), tok) {
				t.Errorf("%s holds the %v token", path, role)
			}
		}
	}
}

// raftHandshake opens a TLS connection to a Raft port and waits for the
// server's verdict on the client certificate (sent after TLS 1.3's
// handshake): a refused client reads an alert, an accepted one a timeout.
func raftHandshake(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("closed: %v", err)
	}
	return err
}

func keyID(t *testing.T, key string) string {
	t.Helper()
	k, err := security.ParseGossipKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return security.GossipKeyID(k)
}
