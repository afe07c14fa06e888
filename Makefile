# Konstruct — `make help` lists the targets.
GO      ?= go
BIN     ?= bin/konstruct
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_TEST ?= -count=1 -timeout 20m

.DEFAULT_GOAL := help
.PHONY: help build test test-race test-short lint bench demo services package package-check clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/konstruct
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/konstruct

services: ## make PostgreSQL and Redis available on loopback (starts or installs them)
	@scripts/services

test: services ## run every test with the race detector against real Postgres, Redis and slacksim
	$(GO) test -race $(GOFLAGS_TEST) ./...

test-race: test ## same as test (the race detector is always on)

test-short: services ## run the tests without the race detector (faster)
	$(GO) test $(GOFLAGS_TEST) ./...

GOLANGCI_LINT ?= $(shell command -v golangci-lint 2>/dev/null || echo bin/golangci-lint)

lint: ## gofmt, go vet and golangci-lint (.golangci.yaml; installed into bin/ on first use)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@test -x "$(GOLANGCI_LINT)" || GOBIN=$(CURDIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	$(GOLANGCI_LINT) run ./...

bench: services build ## run the benchmark (ack path, router, pipeline, sockets); BENCH_FLAGS=--quick for a short run
	$(BIN) bench $(BENCH_FLAGS)

.PHONY: test-ha
test-ha: services build ## HA run (minutes, not in test): run + gateway + worker under load, one SIGKILLed, a Sentinel failover; 0 lost, 0 duplicates, 0 stuck (HA_FLAGS: e.g. KONSTRUCT_HA_LOAD=120s)
	KONSTRUCT_TEST_HA=1 KONSTRUCT_TEST_BINARY=$(CURDIR)/$(BIN) $(HA_FLAGS) $(GO) test -count=1 -timeout 30m -run 'TestHA$$' -v ./internal/hatest

.PHONY: chaos
chaos: services build ## chaos run: Slack retries, cut sockets, a 30 s Redis outage with a SIGKILL of the daemon inside it (CHAOS_FLAGS)
	$(BIN) bench --chaos $(CHAOS_FLAGS)

demo: services build ## start the demo: in-process Slack emulator + daemon + a terminal chat
	$(BIN) demo

# Packages: nfpm runs through `go run` at a pinned version, so nothing is
# installed; PKG_ARCH picks the architecture (amd64, arm64).
NFPM_VERSION ?= v2.48.0
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
PKG_VERSION ?= $(shell scripts/pkgversion)
DIST        ?= dist

package: ## build the .deb and .rpm into dist/ (nfpm; deploy/nfpm.yaml)
	@mkdir -p $(DIST)
	rm -f $(DIST)/konstruct*.deb $(DIST)/konstruct*.rpm
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "-s -w -X main.version=$(PKG_VERSION)" -o $(DIST)/konstruct-linux-$(PKG_ARCH) ./cmd/konstruct
	for p in deb rpm; do \
		PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) PKG_BIN=$(DIST)/konstruct-linux-$(PKG_ARCH) \
			$(NFPM) package --config deploy/nfpm.yaml --packager $$p --target $(DIST)/ || exit 1; \
	done
	@ls -l $(DIST)/konstruct*.deb $(DIST)/konstruct*.rpm

package-check: package ## build the packages and check their files, modes, conffiles and scripts (dpkg-deb; rpm if installed)
	scripts/check-packages $(DIST)

clean: ## remove build output and private services data
	rm -rf bin dist .services
