# Herald build, test, benchmark and fuzz entry points.
#
#   make tools   install pinned developer tools into ./.bin
#   make build   compile every package
#   make test    gofmt check, go vet, staticcheck, race-enabled tests
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

.PHONY: all build test fmt-check vet staticcheck unit bench fuzz tools

all: build

build:
	$(GO) build ./...

test: fmt-check vet staticcheck unit

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

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./...

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
