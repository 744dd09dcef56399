#!/usr/bin/env bash
# Scaling with R = 1 (make bench-scaling): 1, 2 and 4 topkd containers, each capped at
# TOPKD_SCALE_CPUS (default 0.15) CPUs by docker run --cpus so that the load generator (topkctl bench,
# in a container of its own capped at one CPU) keeps a core; at 0.25, four nodes and the generator
# ask for both of this host's cores and the nodes no longer get their share. Reports acknowledged events/s at each size
# as a ratio to N x one capped node, and events per node CPU-second (the nodes share one disk), for
# three ways of sending, alternating at each size:
#   per-leader  the client's Add queue (--batch-per-leader): batches of 1,000 to each partition leader;
#   split       batches of 1,000 split by the client across the leaders (about 1,000/N per node);
#   unrouted    batches of 1,000 sent whole to any node, which forwards the parts it does not lead.
set -euo pipefail
cd "$(dirname "$0")/.."
cpus=${TOPKD_SCALE_CPUS:-0.15}
per_node=${TOPKD_SCALE_EVENTS:-1200000}
net=topkd-scale
make image >/dev/null
cleanup() { docker rm -f $(docker ps -aq --filter label=topkd-scale) >/dev/null 2>&1 || true; docker network rm $net >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
docker network create $net >/dev/null
results=()
declare -A best
for n in 1 2 4; do
  cleanup; docker network create $net >/dev/null
  for i in $(seq 1 "$n"); do
    join=(); [ "$i" -gt 1 ] && join=(--join s1:7072)
    docker run -d --label topkd-scale --network $net --name "s$i" --hostname "s$i" --cpus "$cpus" topkd:latest \
      --node-id "s$i" --http-addr "s$i:7070" --raft-addr "s$i:7071" --gossip-addr "s$i:7072" --insecure --replicas 1 \
      --partitions 4 --log-level warn "${join[@]}" >/dev/null
    sleep 1
  done
  addrs=$(seq -s, -f "s%g:7070" 1 "$n")
  # Placement spreads the partitions once every node joined: wait until each is preferred leader of
  # one (N <= P) and no move is in flight.
  for _ in $(seq 120); do
    led=$(docker run --rm --label topkd-scale --network $net --entrypoint /topkctl topkd:latest --addr s1:7070 status --json \
      | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(set(p["placement"][0] for p in s.get("partition_status",[]) if p.get("placement"))), len(s.get("moves") or []))')
    [ "${led% *}" -ge "$n" ] && [ "${led#* }" = 0 ] && break
    sleep 0.5
  done
  events=$((per_node * n))
  # A first run, not reported, fills the item tables, so the runs compared start alike. Each mode then
  # runs twice in mirrored order (a snapshot or compaction left by one run slows the next), and the
  # better of its two runs is reported.
  for mode in warmup per-leader split unrouted unrouted split per-leader; do
    flags=(--routing=true)
    case $mode in
      per-leader) flags+=(bench --batch-per-leader) ;;
      unrouted) flags=(--routing=false bench) ;;
      *) flags+=(bench) ;;
    esac
    out=$(docker run --rm --label topkd-scale --network $net --cpus 1 --entrypoint /topkctl topkd:latest --addr "$addrs" \
      "${flags[@]}" --events "$events" --items 1000000 --producers $((16 * n)) --batch 1000 --query-rate 0 \
      --progress=false --json)
    [ "$mode" = warmup ] && continue
    eps=$(echo "$out" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["events_per_second"]))')
    cpu=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["server_cpu_ns"]/1e9)')
    gen=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(round((r["cpu_user_ns"]+r["cpu_system_ns"])/r["elapsed_ns"], 2))')
    echo "== $n node(s) at --cpus $cpus, $mode: $eps events/s acknowledged; node CPU $cpu s for $events events: $(python3 -c "print(round($events/$cpu))") events per node CPU-second; load generator busy $gen CPUs"
    results+=("$mode:$n:$eps")
    best["$mode:$n"]=$(( eps > ${best["$mode:$n"]:-0} ? eps : ${best["$mode:$n"]:-0} ))
  done
done
for mode in per-leader split unrouted; do
  one=${best["$mode:1"]}
  for n in 1 2 4; do
    eps=${best["$mode:$n"]}
    echo "$mode, $n nodes (best of two runs): $(python3 -c "print(f'{$eps/($n*$one):.2f}')")x of $n x one capped node"
  done
done
