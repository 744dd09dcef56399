#!/usr/bin/env bash
# The shared Raft log against a raft-boltdb file per partition, side by side in one run (make
# bench-logstore): for each P and producer count, a fresh node per store, the stores alternating.
# Per run: acknowledged events/s, ack p50/p99, node CPU-s per million events, and the propose-to-
# applied p50 (topkd_ingest_commit_seconds) and the shared log's commit p50 (topkd_raftlog_commit_seconds),
# interpolated from the histograms.
# TOPKD_BENCH_PARTITIONS, TOPKD_BENCH_PRODUCERS, TOPKD_BENCH_STORES, TOPKD_BENCH_EVENTS override the sweep.
# The node is built with -tags logbound, which adds three stores that are not crash-safe, as bounds of
# the log's share (make bench-logstore-bounds): memory (a log that costs nothing), shared-nosync and
# shared-onesync (one fdatasync per commit where bbolt needs two).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill $(cat "$tmp/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -tags logbound -o "$tmp/topkd" ./cmd/topkd
go build -o "$tmp/topkctl" ./cmd/topkctl
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
events=${TOPKD_BENCH_EVENTS:-3000000}
printf '%-4s %-13s %-9s %12s %9s %9s %14s %14s %14s %10s\n' P store producers events/s ack-p50 ack-p99 node-CPU-s/1M commit-p50 log-commit-p50 groups/commit
for parts in ${TOPKD_BENCH_PARTITIONS:-4 8 16}; do
  for producers in ${TOPKD_BENCH_PRODUCERS:-4 16 64}; do
    for store in ${TOPKD_BENCH_STORES:-per-group shared}; do
      rm -rf "$tmp/data"
      http=127.0.0.1:$(port)
      "$tmp/topkd" --data-dir "$tmp/data" --node-id n1 --http-addr "$http" --raft-addr "127.0.0.1:$(port)" \
        --gossip-addr "127.0.0.1:$(port)" --partitions "$parts" --raft-log-store "$store" --log-level warn > "$tmp/topkd.log" 2>&1 &
      echo $! > "$tmp/pid"
      for _ in $(seq 200); do curl -sf "http://$http/readyz" >/dev/null && break; sleep 0.1; done
      "$tmp/topkctl" --addr "$http" bench --events "$events" --items 1000000 --producers "$producers" --batch 1000 \
        --query-rate 0 --progress=false --json > "$tmp/run.json"
      curl -s "http://$http/metrics" > "$tmp/metrics.txt"
      kill "$(cat "$tmp/pid")"; wait "$(cat "$tmp/pid")" 2>/dev/null || true
      python3 - "$tmp/run.json" "$tmp/metrics.txt" "$parts" "$store" "$producers" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def hist(name):
    b = []
    s = c = 0.0
    for line in open(sys.argv[2]):
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            b.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith(name + "_sum"):
            s = float(line.split()[-1])
        elif line.startswith(name + "_count"):
            c = float(line.split()[-1])
    return b, s, c
def quantile(b, q):
    if not b or b[-1][1] == 0:
        return float("nan")
    target, lo_le, lo_c = q * b[-1][1], 0.0, 0.0
    for le, c in b:
        if c >= target:
            if le == float("inf"):
                return lo_le
            return lo_le + (le - lo_le) * (target - lo_c) / max(c - lo_c, 1e-9)
        lo_le, lo_c = le, c
    return float("nan")
cb, _, _ = hist("topkd_ingest_commit_seconds")
gb, gs, gc = hist("topkd_raftlog_commit_groups")
lb, _, _ = hist("topkd_raftlog_commit_seconds")
logp50 = f"{quantile(lb, 0.5)*1e3:.2f}ms" if gc else "-"
groups = f"{gs / gc:.2f}" if gc else "-"
ev = r["events_acknowledged"]
print(f"{sys.argv[3]:<4} {sys.argv[4]:<13} {sys.argv[5]:<9} {r['events_per_second']:12.0f} "
      f"{r['ack_latency']['p50_ns']/1e6:7.1f}ms {r['ack_latency']['p99_ns']/1e6:7.1f}ms "
      f"{r['server_cpu_ns']/1e9/(ev/1e6):14.2f} {quantile(cb, 0.5)*1e3:12.2f}ms {logp50:>14} {groups:>10}", flush=True)
PY
    done
  done
done
