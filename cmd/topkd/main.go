// Command topkd runs a topkd node. With no flags it bootstraps a single-node
// cluster in ./data on localhost ports and serves immediately; started again
// it recovers from its data.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/topkd/topkd/rpc"
	"github.com/topkd/topkd/server"
	"github.com/topkd/topkd/server/failpoint"
	"github.com/topkd/topkd/server/security"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // the usage is printed; asking for it is not a failure
		}
		fmt.Fprintln(os.Stderr, "topkd:", err)
		os.Exit(1)
	}
}

// env returns TOPKD_<NAME> or def: every flag has an environment override.
func env(name, def string) string {
	if v, ok := os.LookupEnv("TOPKD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
		return v
	}
	return def
}

// setProcs runs twice as many scheduler threads as CPUs unless GOMAXPROCS
// is set. Partition leaders block in fdatasync, and apply loops run for
// milliseconds between preemption points; spare threads let the kernel
// interleave request handling with both. Measured on 2 CPUs at 16 producers:
// 905-943K vs 688-730K acknowledged events/s, and cached top-100 p99 at
// 115K events/s of 2.0-2.6 ms vs 2.8-3.8 ms.
func setProcs(n int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
	}
	runtime.GOMAXPROCS(n)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(env(name, "")); err == nil {
		return v
	}
	return def
}

func envUint(name string, def uint64) uint64 {
	if v, err := strconv.ParseUint(env(name, ""), 10, 64); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(env(name, "")); err == nil {
		return v
	}
	return def
}

func run(args []string) error {
	fs := flag.NewFlagSet("topkd", flag.ContinueOnError)
	host, _ := os.Hostname()
	dataDir := fs.String("data-dir", env("data-dir", "./data"), "directory for Raft logs and snapshots (TOPKD_DATA_DIR)")
	httpAddr := fs.String("http-addr", env("http-addr", "127.0.0.1:7070"), "client, admin and node-to-node HTTP address (TOPKD_HTTP_ADDR)")
	raftAddr := fs.String("raft-addr", env("raft-addr", "127.0.0.1:7071"), "Raft address shared by every group (TOPKD_RAFT_ADDR)")
	gossipAddr := fs.String("gossip-addr", env("gossip-addr", "127.0.0.1:7072"), "membership gossip address (TOPKD_GOSSIP_ADDR)")
	nodeID := fs.String("node-id", env("node-id", ""), "node id, stable across restarts (TOPKD_NODE_ID; default: stored in the data dir, else the hostname)")
	join := fs.String("join", env("join", ""), "members to join, comma-separated: gossip addresses (or HTTP addresses); used only by a node without data (TOPKD_JOIN)")
	replicas := fs.Int("replicas", envInt("replicas", server.DefaultReplicas), "R, replicas of each partition once the cluster has that many nodes (TOPKD_REPLICAS)")
	maxMoves := fs.Int("max-moves", envInt("max-moves", server.DefaultMaxMoves), "partition moves in flight across the cluster at most; a node receives one new replica at a time (TOPKD_MAX_MOVES)")
	deadGrace := fs.Duration("dead-node-grace", envDuration("dead-node-grace", server.DefaultDeadNodeGrace), "how long gossip must see a member dead before its replicas are re-created elsewhere (TOPKD_DEAD_NODE_GRACE)")
	metaVoters := fs.Int("meta-voters", envInt("meta-voters", server.DefaultMetaVoters), "members voting in the meta group, 3 or 5; the others follow it (TOPKD_META_VOTERS)")
	maxBoards := fs.Int("max-leaderboards", envInt("max-leaderboards", server.DefaultMaxLeaderboards), "leaderboards a cluster holds at most; creating one more is refused (TOPKD_MAX_LEADERBOARDS)")
	partitions := fs.Int("partitions", envInt("partitions", server.DefaultPartitions), "partitions of a new cluster, fixed at creation (TOPKD_PARTITIONS)")
	memLimit := fs.Int("memory-high-water-mb", envInt("memory-high-water-mb", 0), "refuse ingest above this heap size (plus off-heap item records) in MiB, 0 = 75% of RAM (TOPKD_MEMORY_HIGH_WATER_MB)")
	logLevel := fs.String("log-level", env("log-level", "info"), "debug, info, warn or error (TOPKD_LOG_LEVEL)")
	procs := fs.Int("procs", envInt("procs", 0), "Go scheduler threads, 0 = twice the CPUs available; GOMAXPROCS, if set, wins (TOPKD_PROCS)")
	logStore := fs.String("raft-log-store", env("raft-log-store", server.LogStoreShared), "where partitions keep their Raft logs: shared (one file per node, group commit) or per-group (a raft-boltdb file each, the earlier layout, kept for comparison) (TOPKD_RAFT_LOG_STORE)")
	defRaft := server.DefaultRaftPolicy()
	snapEntries := fs.Uint64("snapshot-entries", envUint("snapshot-entries", defRaft.SnapshotThreshold), "snapshot a group once this many log entries followed its last snapshot (TOPKD_SNAPSHOT_ENTRIES)")
	snapInterval := fs.Duration("snapshot-interval", envDuration("snapshot-interval", defRaft.SnapshotInterval), "how often each group checks whether to snapshot (TOPKD_SNAPSHOT_INTERVAL)")
	trailing := fs.Uint64("trailing-logs", envUint("trailing-logs", defRaft.TrailingLogs), "log entries kept after a snapshot, so a follower that far behind catches up from the log instead of a snapshot (TOPKD_TRAILING_LOGS)")
	var sf secureFlags
	fs.StringVar(&sf.caFile, "tls-ca", env("tls-ca", ""), "PEM file of the cluster CA: clients and nodes are verified against it (TOPKD_TLS_CA)")
	fs.StringVar(&sf.certFile, "tls-cert", env("tls-cert", ""), "PEM file of this node's certificate; it must carry --tls-node-name (TOPKD_TLS_CERT)")
	fs.StringVar(&sf.keyFile, "tls-key", env("tls-key", ""), "PEM file of this node's private key (TOPKD_TLS_KEY)")
	fs.StringVar(&sf.nodeName, "tls-node-name", env("tls-node-name", security.DefaultNodeName), "DNS name every node certificate carries; a certificate without it is a client's (TOPKD_TLS_NODE_NAME)")
	fs.StringVar(&sf.tokenFile, "token-file", env("token-file", ""), "bearer tokens, one per line: ROLE SHA256-HEX [NAME] (topkctl token create); reloaded when it changes (TOPKD_TOKEN_FILE; or the lines in TOPKD_TOKENS)")
	fs.StringVar(&sf.gossipKeyFile, "gossip-key-file", env("gossip-key-file", ""), "file holding the gossip encryption key, base64 of 16, 24 or 32 bytes (TOPKD_GOSSIP_KEY_FILE; or the key in TOPKD_GOSSIP_KEY)")
	fs.BoolVar(&sf.insecure, "insecure", env("insecure", "") == "true", "allow ports beyond loopback without TLS, tokens or a gossip key, with a warning at every start (TOPKD_INSECURE=true)")
	acceptLoss := fs.Bool("accept-data-loss", env("accept-data-loss", "") == "true", "start groups whose Raft log or snapshots lost entries this node had applied, serving what is left (one-node clusters only; TOPKD_ACCEPT_DATA_LOSS=true)")
	debugAddr := fs.String("debug-addr", env("debug-addr", ""), "serve Go's /debug/pprof profiles on this address, off when empty (TOPKD_DEBUG_ADDR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	setProcs(*procs)
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	prot, err := loadProtection(sf)
	if err != nil {
		return err
	}
	if err := checkExposure(prot, sf.insecure, *httpAddr, *raftAddr, *gossipAddr, log); err != nil {
		return err
	}
	id, err := resolveNodeID(*dataDir, *nodeID, host)
	if err != nil {
		return err
	}
	raftPolicy := defRaft
	raftPolicy.SnapshotThreshold, raftPolicy.SnapshotInterval, raftPolicy.TrailingLogs = *snapEntries, *snapInterval, *trailing
	if *snapEntries == 0 || *snapInterval <= 0 {
		return errors.New("--snapshot-entries and --snapshot-interval must be positive")
	}
	limit := uint64(*memLimit) << 20
	if *memLimit == 0 {
		limit = defaultHighWater()
	}
	if *debugAddr != "" {
		// Its own listener: profiles stay off the client port.
		ln, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		dbg := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := dbg.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("debug server stopped", "err", err)
			}
		}()
		defer dbg.Close()
		log.Info("profiles served", "debug", ln.Addr().String())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	prot.watch(ctx, log)
	start := time.Now()
	n, err := server.Open(ctx, server.Config{NodeID: id, DataDir: *dataDir, RaftAddr: *raftAddr, HTTPAddr: *httpAddr,
		GossipAddr: *gossipAddr, Join: *join, Partitions: *partitions, Replicas: *replicas, MetaVoters: *metaVoters, DeadNodeGrace: *deadGrace, MaxMoves: *maxMoves, MaxLeaderboards: *maxBoards,
		MemoryHighWater: limit, Logger: log, Raft: raftPolicy, TLS: prot.certs, GossipKeys: prot.gossipKeys, AcceptDataLoss: *acceptLoss,
		LogStore: *logStore, Fatal: func(err error) {
			// A failed fsync is not retried: the page cache may have dropped
			// the data. Stop before anything else is acknowledged.
			log.Error("stopping: the Raft log cannot be written", "err", err)
			os.Exit(3)
		}})
	if err != nil {
		return err
	}
	var tlsConf *tls.Config
	if prot.certs != nil {
		tlsConf = prot.certs.ServerConfig()
	}
	srv := rpc.NewServer(*httpAddr, rpc.Handler(n, rpc.Security{Tokens: prot.tokens, Certs: prot.certs}), tlsConf)
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn) // failed TLS handshakes, among others
	errc := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			errc <- srv.ListenAndServeTLS("", "")
			return
		}
		errc <- srv.ListenAndServe()
	}()
	log.Info("topkd serving", "node", id, "http", *httpAddr, "raft", *raftAddr, "data", *dataDir, "tls", prot.certs != nil,
		"tokens", prot.tokens != nil, "gossip_encrypted", len(prot.gossipKeys) > 0,
		"partitions", n.Partitions(), "procs", runtime.GOMAXPROCS(0), "startup", time.Since(start).Round(time.Millisecond))
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			n.Close()
			return fmt.Errorf("http: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return n.Close()
}

// resolveNodeID keeps a node's id stable: the flag, else the id stored in
// the data dir, else the hostname; the choice is stored on first start.
func resolveNodeID(dir, flagID, host string) (string, error) {
	path := dir + "/node-id"
	stored, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := strings.TrimSpace(string(stored))
		if flagID != "" && flagID != s {
			return "", fmt.Errorf("--node-id %q differs from %q stored in %s", flagID, s, path)
		}
		return s, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	id := flagID
	if id == "" {
		id = host
	}
	if id == "" {
		id = "node1"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return id, server.WriteFileDurable(path, []byte(id+"\n"))
}

// defaultHighWater is 75% of physical memory, or 8 GiB when unknown.
func defaultHighWater() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			var kb uint64
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				return kb * 1024 / 4 * 3
			}
		}
	}
	return 8 << 30
}

func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if failpoint.Enabled {
		// Test builds only (-tags failpoint): arm points at run time.
		mux.HandleFunc("PUT /debug/failpoints", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			failpoint.Arm(string(b))
			w.WriteHeader(http.StatusNoContent)
		})
	}
	return mux
}
