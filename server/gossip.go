package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossip is the node's memberlist: who is alive, and where to find a
// member's HTTP port when joining. It is a hint only: membership and
// placement change through the meta group, never through gossip.
type gossip struct {
	ml *memberlist.Memberlist
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

// startGossip listens on addr (host:port).
func startGossip(id, addr, httpAddr, raftAddr string, lg *slog.Logger) (*gossip, error) {
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
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", addr, err)
	}
	return &gossip{ml: ml}, nil
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
