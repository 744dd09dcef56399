package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/topkd/topkd/server/security"
)

// gossip is the node's memberlist: who is alive, and where to find a
// member's HTTP port when joining. It is a hint only: membership and
// placement change through the meta group, never through gossip.
type gossip struct {
	ml *memberlist.Memberlist
	// keyring is nil when gossip is not encrypted; keyFile keeps it across
	// restarts once a rotation changed it.
	keyring *memberlist.Keyring
	keyFile string
	keyMu   sync.Mutex // one rotation step at a time, saved before answering
}

// gossipMeta is what a node tells the others about itself.
type gossipMeta struct {
	HTTP string `json:"http"`
	Raft string `json:"raft"`
}

type gossipDelegate struct{ meta []byte }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// gossipKeyringFile holds the keyring once a rotation changed it: keys in
// base64, one per line, the one in use first.
const gossipKeyringFile = "gossip-keyring"

// loadGossipKeys returns the saved keyring if there is one, else keys.
func loadGossipKeys(dataDir string, keys [][]byte) ([][]byte, bool, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, gossipKeyringFile))
	if errors.Is(err, os.ErrNotExist) {
		return keys, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var saved [][]byte
	for line := range strings.FieldsSeq(string(b)) {
		k, err := security.ParseGossipKey(line)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", gossipKeyringFile, err)
		}
		saved = append(saved, k)
	}
	if len(saved) == 0 {
		return nil, false, fmt.Errorf("%s holds no key", gossipKeyringFile)
	}
	return saved, true, nil
}

// startGossip listens on addr (host:port). With keys, gossip is encrypted
// with keys[0] and accepted under any of them; a member without one of
// them cannot join.
func startGossip(id, addr, httpAddr, raftAddr string, keys [][]byte, keyFile string, lg *slog.Logger) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", addr, err)
	}
	// memberlist binds to an IP: resolve a host name (a container's).
	if net.ParseIP(host) == nil {
		ip, err := net.ResolveIPAddr("ip", host)
		if err != nil {
			return nil, fmt.Errorf("gossip address %q: %w", addr, err)
		}
		host = ip.IP.String()
	}
	meta, _ := json.Marshal(gossipMeta{HTTP: httpAddr, Raft: raftAddr})
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = id
	cfg.BindAddr, cfg.BindPort = host, port
	cfg.AdvertiseAddr, cfg.AdvertisePort = host, port
	cfg.Delegate = gossipDelegate{meta: meta}
	cfg.Logger = log.New(&levelWriter{log: lg}, "", 0)
	g := &gossip{keyFile: keyFile}
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		cfg.Keyring, g.keyring = kr, kr
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", addr, err)
	}
	g.ml = ml
	return g, nil
}

// Gossip key rotation steps, applied on every member in turn by the node
// the admin asked (Node.RotateGossipKey).
const (
	GossipKeyInstall = "install"
	GossipKeyUse     = "use"
	GossipKeyRemove  = "remove"
	GossipKeyList    = "list"
)

// ErrGossipNotEncrypted: a rotation on a node whose gossip has no key.
var ErrGossipNotEncrypted = errors.New("gossip is not encrypted on this node (start it with a gossip key)")

// rotateKey applies one step to this member's keyring and saves it. It
// returns the keys' ids after the step, the one in use first.
func (g *gossip) rotateKey(op string, key []byte) ([]string, error) {
	if g == nil || g.keyring == nil {
		return nil, ErrGossipNotEncrypted
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	var err error
	switch op {
	case GossipKeyInstall:
		err = g.keyring.AddKey(key)
	case GossipKeyUse:
		if !slices.ContainsFunc(g.keyring.GetKeys(), func(k []byte) bool { return bytes.Equal(k, key) }) {
			return nil, fmt.Errorf("%w: gossip key %s is not installed on this member", ErrInvalid, security.GossipKeyID(key))
		}
		err = g.keyring.UseKey(key)
	case GossipKeyRemove:
		if bytes.Equal(g.keyring.GetPrimaryKey(), key) {
			return nil, fmt.Errorf("%w: gossip key %s is in use; use another first", ErrInvalid, security.GossipKeyID(key))
		}
		err = g.keyring.RemoveKey(key)
	case GossipKeyList:
	default:
		return nil, fmt.Errorf("%w: gossip key operation %q", ErrInvalid, op)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	primary := g.keyring.GetPrimaryKey()
	keys := [][]byte{primary}
	for _, k := range g.keyring.GetKeys() {
		if !bytes.Equal(k, primary) {
			keys = append(keys, k)
		}
	}
	if op != GossipKeyList {
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
		}
		if err := writeSecretDurable(g.keyFile, []byte(b.String())); err != nil {
			return nil, fmt.Errorf("save gossip keyring: %w", err)
		}
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = security.GossipKeyID(k)
	}
	return ids, nil
}

// addr is the address gossip listens on (its port chosen when asked for 0).
func (g *gossip) addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// join contacts addrs as gossip addresses and returns the HTTP addresses
// of the members it then knows (itself excluded).
func (g *gossip) join(addrs []string, self string) ([]string, error) {
	if _, err := g.ml.Join(addrs); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range g.ml.Members() {
		var meta gossipMeta
		if m.Name != self && json.Unmarshal(m.Meta, &meta) == nil && meta.HTTP != "" {
			out = append(out, meta.HTTP)
		}
	}
	return out, nil
}

// joinRetrying retries join for up to limit: the members may be starting.
func (g *gossip) joinRetrying(ctx context.Context, addrs []string, self string, limit time.Duration) ([]string, error) {
	deadline := time.Now().Add(limit)
	for {
		https, err := g.join(addrs, self)
		if err == nil && len(https) == 0 {
			err = errors.New("no member answered")
		}
		if err == nil || time.Now().After(deadline) {
			return https, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// alive lists the members gossip currently sees alive, by node id.
func (g *gossip) alive() map[string]bool {
	out := map[string]bool{}
	for _, m := range g.ml.Members() {
		out[m.Name] = true
	}
	return out
}

func (g *gossip) close() {
	_ = g.ml.Leave(500 * time.Millisecond)
	_ = g.ml.Shutdown()
}

// levelWriter passes memberlist's warnings and errors to slog and drops
// its debug and info lines.
type levelWriter struct{ log *slog.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	switch {
	case bytes.Contains(p, []byte("[ERR]")):
		w.log.Error("gossip: " + line)
	case bytes.Contains(p, []byte("[WARN]")):
		w.log.Warn("gossip: " + line)
	}
	return len(p), nil
}
