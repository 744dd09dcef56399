# topkd — build, test, generate, benchmark.
GO        ?= go
BIN       := $(CURDIR)/bin
BUF_VERSION          := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
CONNECT_GO_VERSION    := v1.21.1
STATICCHECK_VERSION   := v0.8.2
export PATH := $(BIN):$(PATH)

.PHONY: all build run test test-fsmcheck test-short generate generate-check tools bench bench-fsm bench-fsm-10m bench-server bench-redis bench-restart bench-single bench-logstore bench-logstore-bounds bench-scaling bench-cluster bench-security lint ci accuracy mode-memory image cluster-up cluster-down cluster-test

all: build

build:
	$(GO) build ./...

# A working single-node topkd with the defaults: data in ./data, HTTP on 127.0.0.1:7070.
run:
	$(GO) build -o $(BIN)/topkd ./cmd/topkd
	$(BIN)/topkd

# The README's test command: vet, unit and property tests, then the race-sensitive suites under -race.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -tags failpoint ./server/failpoint
	$(MAKE) test-fsmcheck
	$(GO) test -race -count=1 -run 'Race|Raft|Smoke' ./fsm/...
	$(GO) test -race -count=1 ./server/... ./rpc/... ./client/...

# The fault scenarios at full length (CI runs them shortened): containers when Docker answers, else
# processes on loopback (network faults skipped). TOPKD_FAULT_SEED=<seed> replays a schedule.
cluster-test:
	TOPKD_FAULT_SCALE=full $(GO) test -count=1 -v -timeout 90m -run 'Fault' ./cluster-test/...

test-short:
	$(GO) test -short -count=1 ./...

tools:
	@mkdir -p $(BIN)
	@test -x $(BIN)/buf || GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@test -x $(BIN)/protoc-gen-go || GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(BIN)/protoc-gen-connect-go || GOBIN=$(BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(CONNECT_GO_VERSION)

# The container image topkd:latest, FROM scratch with static binaries.
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -o $(BIN)/linux/topkd ./cmd/topkd
	CGO_ENABLED=0 GOOS=linux $(GO) build -o $(BIN)/linux/topkctl ./cmd/topkctl
	docker build -f deploy/Dockerfile -t topkd:latest .

# A three-node cluster in containers, answering on the host at 127.0.0.1:7070, 7080 and 7090.
cluster-up: image
	docker-compose -f deploy/docker-compose.yml up -d

cluster-down:
	docker-compose -f deploy/docker-compose.yml down -v

# Regenerates the committed protobuf code.
generate: tools
	cd proto && buf lint && buf generate

# Fails when the committed generated code is stale.
generate-check: generate
	@git diff --exit-code -- proto || (echo "generated code in proto/ is stale: run 'make generate' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- proto)" || (git status --porcelain -- proto; echo "untracked generated files in proto/" && exit 1)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" && exit 1)
	$(GO) vet ./...
	$(GO) vet -tags logbound ./server/...
	@test -x $(BIN)/staticcheck || GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck ./...

# Benchmarks of the counting state machine (1M-item cases; the 10M cases: make bench-fsm-10m).
# The checked build of the state machine (fsm/checked_on.go): freed off-heap
# memory faults on use, every batch runs a GC and checks the invariants.
# Not under -race, which keeps the arrays on the Go heap.
test-fsmcheck:
	$(GO) test -count=1 -tags fsmcheck -run 'TestModel|Determinism|Snapshot|UseAfterFree|RecordSlabsRetired' ./fsm

bench: bench-fsm

bench-fsm:
	$(GO) test ./fsm -run '^$$' -bench '/items=1M' -benchtime 3x -timeout 60m

# LineMiss first: apply at 10M items moves with what a random line costs on the host.
bench-fsm-10m:
	$(GO) test ./fsm -run '^$$' -bench 'LineMiss' -benchtime 3x
	$(GO) test ./fsm -run '^$$' -bench '/items=10M' -benchtime 3x -timeout 60m

# The node in-process: validation, combiner, Raft on raft-boltdb, apply.
bench-server:
	$(GO) test ./server -run '^$$' -bench NodeIngest -benchtime 3000x -timeout 30m

# Side by side with redis-server (ZINCRBY + ZREVRANGE, appendfsync always) on the same stream, with
# 4 and with 32 producers (TOPKD_BENCH_PRODUCERS="4 32"): both systems gain from concurrent batches.
# TOPKD_BENCH_RAFT_LOG_STORE=<store> runs topkd with another --raft-log-store (a logbound build for the
# bounds of bench-logstore-bounds).
bench-redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	for p in $${TOPKD_BENCH_PRODUCERS:-4 32}; do \
	  TOPKD_BENCH_PRODUCERS=$$p $(GO) test -tags bench ./cluster-test -run TestRedisComparison -count=1 -v -timeout 30m || exit 1; \
	done

ci: lint generate-check test

# Restart with 10M distinct items: time until a linearizable query is served again.
bench-restart:
	$(GO) test -tags bench ./cluster-test -run TestRestartLargeState -count=1 -v -timeout 30m

# Single node through topkctl bench: maximum ingest, cached top-100 latency idle / at 115K events/s /
# at half the maximum, freshness.
bench-single:
	bash cluster-test/bench_single.sh

# The shared Raft log against a raft-boltdb file per partition: P = 4, 8, 16 x 4, 16, 64 producers,
# stores alternating on fresh nodes.
# Three nodes against one, and reads from a node that leads nothing (processes on loopback).
bench-cluster:
	cluster-test/bench_cluster.sh

# TLS + tokens + gossip encryption against plain text on three nodes, alternating runs.
bench-security:
	cluster-test/bench_security.sh

# Scaling with R = 1: 1, 2 and 4 containers capped at 0.25 CPUs each (docker run --cpus).
bench-scaling:
	cluster-test/bench_scaling.sh

bench-logstore:
	bash cluster-test/bench_logstore.sh

# The same with three stores that are not durable, as lower bounds of what any log store could give:
# memory (raft's in-memory log), shared-nosync (the shared file without fdatasync) and
# shared-onesync (one fdatasync per commit: what a log format needing one would cost).
bench-logstore-bounds:
	TOPKD_BENCH_STORES="$${TOPKD_BENCH_STORES:-per-group shared shared-onesync shared-nosync memory}" bash cluster-test/bench_logstore.sh

# Accuracy of the approximate modes (spacesaving, cms) at 10-512 KB of measured heap, on Zipf and real
# streams, single and merged over 16 partitions; fails only on a violated bound.
accuracy:
	$(GO) test -tags accuracy ./fsm/sketch -run TestAccuracy -count=1 -v -timeout 90m

# Measured live heap of exact vs cms vs spacesaving at 1M and 10M distinct items.
mode-memory:
	$(GO) test -tags accuracy ./fsm/sketch -run TestModeMemory -count=1 -v -timeout 60m
