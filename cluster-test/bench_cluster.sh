#!/usr/bin/env bash
# Cluster load scenarios on loopback (make bench-cluster), side by side in one run:
#  1. durable ingest, 3 nodes with R = 3 against 1 node with R = 1, batches of 1,000 at 4, 16, 64 producers
#     (three nodes with the client's partition-aware routing on and off);
#  2. three nodes with R = 3 over 2 partitions, so one node leads nothing: with 115,000 events/s offered
#     through it, top-100 p99 from it at cached and at leader consistency, and its /healthz p99.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
# start_nodes runs in a command substitution (a subshell): it records the pids in a file.
stop_all() {
  [ -f "$tmp/pids" ] || return 0
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$tmp/pids"
  while read -r p; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done < "$tmp/pids"
  rm -f "$tmp/pids"
}
trap 'stop_all; rm -rf "$tmp"' EXIT
go build -o "$tmp/topkd" ./cmd/topkd
go build -o "$tmp/topkctl" ./cmd/topkctl
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
events=${TOPKD_BENCH_EVENTS:-3000000}
# start_nodes N PARTITIONS REPLICAS: prints the HTTP addresses, comma-separated.
start_nodes() {
  local n=$1 parts=$2 reps=$3 addrs="" gossip1=""
  for i in $(seq 1 "$n"); do
    local http=127.0.0.1:$(port) gossip=127.0.0.1:$(port) join=()
    [ "$i" -gt 1 ] && join=(--join "$gossip1")
    "$tmp/topkd" --data-dir "$tmp/d$n-$parts-$i" --node-id "n$i" --http-addr "$http" --raft-addr "127.0.0.1:$(port)" \
      --gossip-addr "$gossip" --partitions "$parts" --replicas "$reps" --log-level warn "${join[@]}" > "$tmp/n$n-$parts-$i.log" 2>&1 &
    echo $! >> "$tmp/pids"
    [ "$i" = 1 ] && gossip1=$gossip
    for _ in $(seq 100); do curl -sf "http://$http/readyz" >/dev/null && break; sleep 0.1; done
    addrs="${addrs:+$addrs,}$http"
  done
  # Moves done and every partition led by its preferred leader.
  for _ in $(seq 300); do
    "$tmp/topkctl" --addr "${addrs%%,*}" status --json > "$tmp/st.json" 2>/dev/null && python3 - "$tmp/st.json" "$n" <<'PY' && break
import json, sys
s = json.load(open(sys.argv[1]))
ok = not s.get("moves") and all(p.get("leader") and p.get("placement") and p["leader"] == p["placement"][0] for p in s["partition_status"])
sys.exit(0 if ok and len(s["nodes"]) == int(sys.argv[2]) else 1)
PY
    sleep 0.2
  done
  echo "$addrs"
}
summary() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
q, h = r.get('query_latency') or {}, r.get('healthz_latency') or {}
line = f"  {r['events_per_second']:.0f} events/s acknowledged; node CPU {r['server_cpu_ns']/1e9:.1f} s"
if q: line += f"; top-100 p50 {q['p50_ns']/1e6:.2f} ms p99 {q['p99_ns']/1e6:.2f} ms ({r['queries']} queries, {r['query_errors']} errors)"
if h: line += f"; /healthz p99 {h['p99_ns']/1e6:.2f} ms"
print(line)
PY
}
if [ "${TOPKD_BENCH_PART:-all}" != 2 ]; then
  for n in 1 3; do
    reps=$([ "$n" = 1 ] && echo 1 || echo 3)
    addrs=$(start_nodes "$n" 8 "$reps")
    for producers in 4 16 64; do
      for routing in $([ "$n" = 1 ] && echo true || echo true false); do
        echo "== $n node(s), R = $reps: $events events, $producers producers, batches of 1,000, routing $routing"
        "$tmp/topkctl" --addr "$addrs" --routing=$routing bench --events "$events" --items 1000000 --producers "$producers" \
          --batch 1000 --query-rate 0 --progress=false --json > "$tmp/r.json"
        summary "$tmp/r.json"
      done
    done
    stop_all
  done
fi
if [ "${TOPKD_BENCH_PART:-all}" != 1 ]; then
  addrs=$(start_nodes 3 2 3)
  idle=""
  for a in ${addrs//,/ }; do
    "$tmp/topkctl" --addr "$a" status --json > "$tmp/st.json"
    leads=$(python3 -c "import json; s=json.load(open('$tmp/st.json')); print(sum(1 for p in s['partition_status'] if p['state']=='Leader'))")
    [ "$leads" = 0 ] && idle=$a
  done
  echo "== 3 nodes, R = 3, 2 partitions: queries and ingest through $idle, which leads nothing"
  for c in cached leader; do
    echo "-- 115,000 events/s offered, top-100 at $c consistency, 200 queries/s"
    # --discovery 0: every query and batch goes to that node (it forwards the batches).
    "$tmp/topkctl" --addr "$idle" --discovery 0 bench --events 2300000 --items 1000000 --producers 16 --batch 1000 --rate 115000 \
      --query-rate 200 --query-k 100 --query-consistency "$c" --probe-healthz --progress=false --json > "$tmp/r.json"
    summary "$tmp/r.json"
  done
fi
