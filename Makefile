# Herald build, test, benchmark and fuzz entry points.
#
#   make tools   install pinned developer tools into ./.bin
#   make build   compile every package
#   make test    gofmt check, go vet, staticcheck, race-enabled tests, jepsen-quick
#   make jepsen-quick  the consistency harness, 3 nodes, about 2 minutes
#   make jepsen-powerloss  the harness with power losses on lazy FUSE disks
#   make jepsen  the consistency harness, 5 nodes, every fault, 3 seeds,
#                then the planted bugs it must find (docs/jepsen.md)
#   make bench   run benchmarks (BENCH=regexp, BENCHTIME=1s|100x)
#   make fuzz    run every fuzz target for FUZZTIME each

GO ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt

# staticcheck: prefer the pinned binary installed by `make tools`.
STATICCHECK_VERSION := v0.7.0
# Evaluated lazily, so `make tools test` in one run finds the fresh binary.
STATICCHECK ?= $(if $(wildcard $(CURDIR)/.bin/staticcheck),$(CURDIR)/.bin/staticcheck,staticcheck)

BENCH ?= .
BENCHTIME ?= 1s
FUZZTIME ?= 10s
TESTTIMEOUT ?= 15m

.PHONY: all build test fmt-check vet staticcheck unit bench fuzz tools jepsen-quick jepsen jepsen-powerloss bench-e2e

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

jepsen-quick:
	$(GO) run ./cmd/herald-jepsen -preset quick -out $(JEPSEN_OUT)

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
# docs/benchmarks.md. About 5 minutes on a quiet machine (a step is rerun
# when other processes took CPU during it); bounded by the tool. More flags of
# `herald-bench suite` go in BENCH_E2E_FLAGS (e.g. "--only conns
# --json-dir /tmp/e2e --plot-dir /tmp/e2e").
bench-e2e:
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(GO) build -o "$$dir/herald" ./cmd/herald && \
	$(GO) build -o "$$dir/herald-bench" ./cmd/herald-bench && \
	"$$dir/herald-bench" suite --herald-bin "$$dir/herald" --doc docs/benchmarks.md $(BENCH_E2E_FLAGS)

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
