# Herald build, test, benchmark and fuzz entry points.
#
#   make tools   install pinned developer tools into ./.bin
#   make build   compile every package
#   make test    gofmt check, go vet, staticcheck, race-enabled tests, jepsen-quick
#   make jepsen-quick  the consistency harness, 3 nodes: the quick preset,
#                then one power-loss run on lazy disks where FUSE works
#                (without it that run says so and leaves power loss out);
#                about 3 minutes
#   make jepsen-powerloss  the harness with power losses on lazy FUSE disks
#   make jepsen  the consistency harness, 5 nodes, every fault, 3 seeds,
#                then the planted bugs it must find (docs/jepsen.md)
#   make bench   run benchmarks (BENCH=regexp, BENCHTIME=1s|100x)
#   make bench-e2e  the end-to-end suite (docs/benchmarks.md), with the
#                pinned nats-server of its JetStream baseline in ./.bin
#   make fuzz    run every fuzz target for FUZZTIME each

GO ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt

# staticcheck: prefer the pinned binary installed by `make tools`.
STATICCHECK_VERSION := v0.7.0
# Evaluated lazily, so `make tools test` in one run finds the fresh binary.
STATICCHECK ?= $(if $(wildcard $(CURDIR)/.bin/staticcheck),$(CURDIR)/.bin/staticcheck,staticcheck)

# nats-server of herald-bench's JetStream baseline: only make bench-e2e
# needs it (make nats-server), never make test.
NATS_SERVER_VERSION := v2.15.2

BENCH ?= .
BENCHTIME ?= 1s
FUZZTIME ?= 10s
TESTTIMEOUT ?= 15m

.PHONY: all build test fmt-check vet staticcheck unit bench fuzz tools jepsen-quick jepsen jepsen-powerloss bench-e2e nats-server

all: build

build:
	$(GO) build ./...

test: fmt-check vet staticcheck unit jepsen-quick

fmt-check:
	@echo "gofmt -l ."
	@out=$$($(GOFMT) -l .) || exit 1; \
	if [ -n "$$out" ]; then \
		echo "these files need gofmt (run: gofmt -w <file>):"; \
		echo "$$out"; \
		exit 1; \
	fi

vet:
	$(GO) vet ./...

# Installs the pinned staticcheck on first use, so `make test` works on a
# fresh machine with nothing but Go.
staticcheck:
	@bin="$(STATICCHECK)"; \
	if ! command -v "$$bin" >/dev/null 2>&1; then \
		$(MAKE) tools && bin="$(CURDIR)/.bin/staticcheck"; \
	fi; \
	echo "$$bin ./..."; "$$bin" ./...

unit:
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) ./...

# The consistency harness (docs/jepsen.md): real herald processes, faults,
# checkers. Each run leaves a report folder in JEPSEN_OUT; the command exits
# non-zero when a run finds an anomaly or the cluster does not recover.
JEPSEN_OUT ?= jepsen/runs

# Plain disks: the quick run has no power losses, so the lazy filesystem
# would add nothing but its own cost (make jepsen-powerloss uses it).
jepsen-quick:
	$(GO) run ./cmd/herald-jepsen -preset quick -disks plain -out $(JEPSEN_OUT)
	$(GO) run ./cmd/herald-jepsen -preset powerloss -disks auto -seed 1 -out $(JEPSEN_OUT)

# Power losses (one node or every node at once: kill -9 and drop what was
# not fsynced) mixed with kills, partitions and pauses; needs root and
# /dev/fuse for the lazy filesystems, two seeds of 60 s.
jepsen-powerloss:
	$(GO) run ./cmd/herald-jepsen -preset powerloss -seed 1,2 -out $(JEPSEN_OUT)

jepsen:
	$(GO) run ./cmd/herald-jepsen -preset long -seed 1,2,3 -out $(JEPSEN_OUT)
	HERALD_JEPSEN_BUGS=1 HERALD_JEPSEN_OUT=$(abspath $(JEPSEN_OUT)) $(GO) test -count=1 -v -timeout 40m -run TestPlantedBugs ./jepsen/

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./...

# The end-to-end suite: builds herald and herald-bench, runs every scenario
# against 3 herald serve processes on loopback (a fresh cluster per step,
# stopped after it) with its baselines, and rewrites the generated table in
# docs/benchmarks.md. About 10 minutes on a quiet machine (a step is rerun
# when other processes took CPU during it); bounded by the tool. More flags of
# `herald-bench suite` go in BENCH_E2E_FLAGS (e.g. "--only conns
# --json-dir /tmp/e2e --plot-dir /tmp/e2e").
#
# The publish steps measure a NATS JetStream cluster beside Herald; the
# pinned nats-server is installed into ./.bin first. Where it cannot be
# installed (no module proxy), the suite runs without that baseline and
# says so in the table.
bench-e2e:
	@$(MAKE) --no-print-directory nats-server || echo "bench-e2e: nats-server not installed; the suite runs without the JetStream baseline"
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(GO) build -o "$$dir/herald" ./cmd/herald && \
	$(GO) build -o "$$dir/herald-bench" ./cmd/herald-bench && \
	"$$dir/herald-bench" suite --herald-bin "$$dir/herald" --nats-server-bin "$(CURDIR)/.bin/nats-server" --doc docs/benchmarks.md $(BENCH_E2E_FLAGS)

# Installs the pinned nats-server into ./.bin unless that version is there.
nats-server:
	@if [ "$$($(CURDIR)/.bin/nats-server --version 2>/dev/null)" != "nats-server: $(NATS_SERVER_VERSION)" ]; then \
		echo "GOBIN=$(CURDIR)/.bin $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)"; \
		GOBIN=$(CURDIR)/.bin $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION); \
	fi

# Discovers fuzz targets per package with `go test -list`; -fuzz accepts
# exactly one target in exactly one package per run. Zero targets is fine;
# a failing fuzz run (or a package that does not compile) fails the target.
fuzz:
	@set -e; n=0; \
	for pkg in $$($(GO) list ./...); do \
		list=$$($(GO) test -list '^Fuzz' "$$pkg"); \
		for t in $$(printf '%s\n' "$$list" | grep -E '^Fuzz[^[:space:]]*$$' || true); do \
			n=$$((n+1)); \
			echo "== fuzz $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done; \
	echo "fuzz: $$n target(s) run"

tools:
	GOBIN=$(CURDIR)/.bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
