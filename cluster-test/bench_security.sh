#!/usr/bin/env bash
# TLS + tokens against plain text, side by side (make bench-security): three nodes on loopback, R = 3,
# 2 partitions so one node leads nothing; every batch and query goes to that node (it forwards the
# batches over the node-to-node API, mutual TLS when secured). The secured nodes also encrypt gossip.
# Modes alternate (plain, secured, plain, secured) so drift on the host hits both.
#  ingest:  16 producers, batches of 1,000, as fast as acknowledgements allow
#  queries: cached top-100 from 8 workers back to back, under 30,000 events/s of ingest
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
stop_all() {
  [ -f "$tmp/pids" ] || return 0
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$tmp/pids"
  while read -r p; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done < "$tmp/pids"
  rm -f "$tmp/pids"
}
trap 'stop_all; rm -rf "$tmp"' EXIT
go build -o "$tmp/topkd" ./cmd/topkd
go build -o "$tmp/topkctl" ./cmd/topkctl
deploy/gen-certs.sh "$tmp/secrets" localhost 127.0.0.1 > /dev/null
s=$tmp/secrets
secure_node=(--tls-ca "$s/ca.pem" --tls-cert "$s/node.pem" --tls-key "$s/node-key.pem" --token-file "$s/tokens" --gossip-key-file "$s/gossip.key")
secure_ctl=(--ca "$s/ca.pem" --token-file "$s/write.token")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
events=${TOPKD_BENCH_EVENTS:-1500000}
# start_nodes MODE RUN: three nodes; prints the HTTP addresses, comma-separated.
start_nodes() {
  local mode=$1 run=$2 addrs="" gossip1="" extra=() ctl=() scheme=http
  [ "$mode" = secured ] && extra=("${secure_node[@]}") && ctl=("${secure_ctl[@]}") && scheme=https
  for i in 1 2 3; do
    local http=127.0.0.1:$(port) gossip=127.0.0.1:$(port) join=()
    [ "$i" -gt 1 ] && join=(--join "$gossip1")
    "$tmp/topkd" --data-dir "$tmp/d$run-$i" --node-id "n$i" --http-addr "$http" --raft-addr "127.0.0.1:$(port)" \
      --gossip-addr "$gossip" --partitions 2 --replicas 3 --log-level warn "${extra[@]}" "${join[@]}" > "$tmp/n$run-$i.log" 2>&1 &
    echo $! >> "$tmp/pids"
    [ "$i" = 1 ] && gossip1=$gossip
    for _ in $(seq 100); do curl -sfk "$scheme://$http/readyz" >/dev/null && break; sleep 0.1; done
    addrs="${addrs:+$addrs,}$http"
  done
  for _ in $(seq 300); do
    "$tmp/topkctl" "${ctl[@]}" --addr "${addrs%%,*}" status --json > "$tmp/st.json" 2>/dev/null && python3 - "$tmp/st.json" <<'PY' && break
import json, sys
s = json.load(open(sys.argv[1]))
ok = not s.get("moves") and all(p.get("leader") and p.get("placement") and p["leader"] == p["placement"][0] for p in s["partition_status"])
sys.exit(0 if ok and len(s["nodes"]) == 3 else 1)
PY
    sleep 0.2
  done
  echo "$addrs"
}
idle_node() { # MODE ADDRS
  local ctl=()
  [ "$1" = secured ] && ctl=("${secure_ctl[@]}")
  for a in ${2//,/ }; do
    "$tmp/topkctl" "${ctl[@]}" --addr "$a" status --json > "$tmp/st.json"
    leads=$(python3 -c "import json; s=json.load(open('$tmp/st.json')); print(sum(1 for p in s['partition_status'] if p['state']=='Leader'))")
    [ "$leads" = 0 ] && echo "$a" && return
  done
}
: > "$tmp/results"
run=0
for mode in plain secured plain secured; do
  run=$((run + 1))
  addrs=$(start_nodes "$mode" "$run")
  idle=$(idle_node "$mode" "$addrs")
  ctl=()
  [ "$mode" = secured ] && ctl=("${secure_ctl[@]}")
  "$tmp/topkctl" "${ctl[@]}" --addr "$idle" --discovery 0 bench --events "$events" --items 1000000 --producers 16 --batch 1000 \
    --query-rate 0 --progress=false --json > "$tmp/i.json"
  "$tmp/topkctl" "${ctl[@]}" --addr "$idle" --discovery 0 bench --events 300000 --rate 30000 --items 1000000 --producers 4 --batch 1000 \
    --query-workers 8 --query-k 100 --query-consistency cached --progress=false --json > "$tmp/q.json"
  python3 - "$mode" "$tmp/i.json" "$tmp/q.json" <<'PY' | tee -a "$tmp/results"
import json, sys
i, q = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"{sys.argv[1]:8s} ingest {i['events_per_second']:9.0f} events/s (ack p99 {i['ack_latency']['p99_ns']/1e6:.1f} ms); "
      f"cached top-100 {q['queries_per_second']:6.0f} queries/s (p50 {q['query_latency']['p50_ns']/1e6:.2f} ms, p99 {q['query_latency']['p99_ns']/1e6:.2f} ms, {q['query_errors']} errors)")
PY
  stop_all
done
python3 - "$tmp/results" <<'PY'
import re, sys
rows = [l.split() for l in open(sys.argv[1])]
def best(mode, idx): return max(float(r[idx]) for r in rows if r[0] == mode)
for name, idx in (("ingest", 2), ("cached queries", 10)):
    p, s = best("plain", idx), best("secured", idx)
    print(f"{name}: secured / plain = {s/p:.2f} (best of two: {s:.0f} vs {p:.0f})")
PY
