# bpfnet — Docker-style bridge networks for container hosts.
# Run `make help` for the targets.

# sudo resets PATH (secure_path), which rarely holds Go: fall back to where
# Go is usually installed.
GO      ?= $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go),$(wildcard /usr/lib/go/bin/go),go)
BIN     := bin
# `make install` layout; DESTDIR stages it (packaging, tests).
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
MANDIR  := $(PREFIX)/share/man/man1
# Shell completion, where each shell looks for a command's script.
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  := $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d
# CNI plugins live where runtimes look for them (CNI_PATH).
CNIDIR  ?= /opt/cni/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VERSION_PKG := github.com/bpfnet/bpfnet/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).Date=$(DATE)
# Debian packages, by what needs them: running the daemon (make run,
# make demo), regenerating the BPF objects (make generate), and the tests and
# benchmarks (make test, which also needs the other two).
RUN_PACKAGES  := iptables iproute2
GEN_PACKAGES  := clang-19 llvm-19 libbpf-dev linux-libc-dev gcc
TEST_PACKAGES := nftables iputils-ping conntrack iperf3 sockperf prometheus systemd docker.io containerd runc podman debootstrap util-linux ca-certificates
# Where the UAPI asm/ headers live for this architecture.
BPF_INCLUDES := -I/usr/include/$(shell gcc -dumpmachine 2>/dev/null || echo $$(uname -m)-linux-gnu)

# Arguments of `make run` (the daemon runs in the current network namespace).
RUN_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# apt_install installs the Debian packages of $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "system packages present: $(strip $(1))"; fi
endef

.PHONY: deps-run
deps-run: ## install what running the daemon needs (iptables, iproute2)
	$(call apt_install,$(RUN_PACKAGES))

.PHONY: deps-generate
deps-generate: ## install what `make generate` needs (clang-19, llvm-19, libbpf-dev)
	$(call apt_install,$(GEN_PACKAGES))

.PHONY: deps
deps: ## install everything the tests and benchmarks need (includes deps-run and deps-generate; docker.io, prometheus, iperf3, ...)
	$(call apt_install,$(RUN_PACKAGES) $(GEN_PACKAGES) $(TEST_PACKAGES))

.PHONY: build
build: ## build bin/bpfnetd, bin/bpfnet and bin/bpfnet-cni
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/bpfnetd ./cmd/bpfnet ./cmd/bpfnet-cni

.PHONY: generate
generate: deps-generate ## rebuild the BPF objects and their Go bindings (bpf/*_bpfel.*) with clang-19
	BPF_INCLUDES="$(BPF_INCLUDES)" $(GO) generate ./bpf/

.PHONY: check-generated
check-generated: generate ## fail if the committed BPF objects differ from a fresh `make generate`
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale; run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- bpf/)" || { git status --porcelain -- bpf/; echo "bpf/: uncommitted generated files"; exit 1; }

.PHONY: test
test: deps ## run every test tier (privileged ones need root; CI=1 makes them fail instead of skip); packages one at a time, so timing checks are not skewed by each other
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 40m ./...

.PHONY: bench
bench: deps ## same-network sweep over 1-1000 networks: bare bridge, Docker 20.10 (nft, legacy), Docker 29 nftables, bpfnet; 4 workloads (root; ~50 min)
	$(GO) test -count=1 -timeout 120m ./bench -run TestSameNetworkSweep -sweep -v -duration=2s -sweep-report=$(CURDIR)/bench/sweep-results.md -sweep-charts=$(CURDIR)/docs/perf

.PHONY: bench-ipv6
bench-ipv6: deps ## same-network sweep over IPv6, 1 and 1000 dual-stack networks: bare bridge, Docker 20.10 (ip6tables), bpfnet-ebpf; 4 workloads (root; ~10 min)
	$(GO) test -count=1 -timeout 120m ./bench -run TestSameNetworkSweep -sweep -sweep-ipv6 -v -duration=2s -sweep-networks=1,1000 -sweep-worlds=docker-20.10,bpfnet-ebpf -sweep-report=$(CURDIR)/bench/ipv6-results.md -sweep-charts=$(CURDIR)/docs/perf

.PHONY: bench-outside
bench-outside: deps ## container → outside (masquerade) sweep over 1-1000 networks: routed bare bridge, Docker 20.10, Docker 29 nftables, bpfnet; 4 workloads (root; ~25 min)
	$(GO) test -count=1 -timeout 120m ./bench -run TestSameNetworkSweep -sweep -sweep-path=outside -v -duration=2s -sweep-networks=1,100,1000 -sweep-worlds=docker-20.10,docker-29-nft,bpfnet-iptables,bpfnet-ebpf -sweep-report=$(CURDIR)/bench/outside-results.md -sweep-charts=$(CURDIR)/docs/perf

.PHONY: bench-published
bench-published: deps ## outside → published port sweep over 1-1000 networks: routed bare bridge, Docker 20.10, Docker 29 nftables, bpfnet; 4 workloads (root; ~25 min)
	$(GO) test -count=1 -timeout 120m ./bench -run TestSameNetworkSweep -sweep -sweep-path=published -v -duration=2s -sweep-networks=1,100,1000 -sweep-worlds=docker-20.10,docker-29-nft,bpfnet-iptables,bpfnet-ebpf -sweep-report=$(CURDIR)/bench/published-results.md -sweep-charts=$(CURDIR)/docs/perf

.PHONY: bench-dockerd
bench-dockerd: deps ## control plane of a real Docker Engine 20.10 in a namespace: 1000 networks, 1000 endpoints (network connect) (root; ~10 min)
	$(GO) test -count=1 -timeout 90m ./bench -run TestDockerdControlPlane -dockerd -v -dockerd-report=$(CURDIR)/bench/dockerd-results.md

.PHONY: bench-nat
bench-nat: deps ## benchmark container → outside, eBPF vs iptables datapath (root; ~2 min)
	$(GO) test -count=1 -timeout 30m ./bench -run TestNATBench -nat -v -report=$(CURDIR)/bench/nat-results.md

.PHONY: bench-ports
bench-ports: deps ## benchmark outside → published port: routed floor, Docker 20.10 layout, bpfnet iptables and eBPF (root; ~3 min)
	$(GO) test -count=1 -timeout 30m ./bench -run TestPublishedPortBench -ports -v -ports-report=$(CURDIR)/bench/ports-results.md

.PHONY: install
install: build ## install binaries, the CNI plugin (CNIDIR=/opt/cni/bin, as bpfnet), the systemd unit, a default config, man pages and shell completion (PREFIX=/usr/local, DESTDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/bpfnet $(DESTDIR)$(CNIDIR) $(DESTDIR)$(MANDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(BIN)/bpfnetd $(BIN)/bpfnet $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BIN)/bpfnet-cni $(DESTDIR)$(CNIDIR)/bpfnet
	$(BIN)/bpfnet gen-man $(DESTDIR)$(MANDIR)
	$(BIN)/bpfnet completion bash > $(DESTDIR)$(BASHCOMPDIR)/bpfnet
	$(BIN)/bpfnet completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_bpfnet
	$(BIN)/bpfnet completion fish > $(DESTDIR)$(FISHCOMPDIR)/bpfnet.fish
	sed 's|@BINDIR@|$(BINDIR)|g' deploy/systemd/bpfnetd.service > $(DESTDIR)$(UNITDIR)/bpfnetd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/bpfnetd.service
	@if [ -e $(DESTDIR)/etc/bpfnet/bpfnetd.yaml ]; then echo "keeping existing $(DESTDIR)/etc/bpfnet/bpfnetd.yaml"; \
	else install -m 0644 deploy/bpfnetd.yaml $(DESTDIR)/etc/bpfnet/bpfnetd.yaml; fi

.PHONY: uninstall
uninstall: ## remove what install put in place (a config you changed is kept)
	rm -f $(DESTDIR)$(BINDIR)/bpfnetd $(DESTDIR)$(BINDIR)/bpfnet $(DESTDIR)$(UNITDIR)/bpfnetd.service $(DESTDIR)$(CNIDIR)/bpfnet \
		$(DESTDIR)$(MANDIR)/bpfnet.1 $(DESTDIR)$(MANDIR)/bpfnet-*.1 \
		$(DESTDIR)$(BASHCOMPDIR)/bpfnet $(DESTDIR)$(ZSHCOMPDIR)/_bpfnet $(DESTDIR)$(FISHCOMPDIR)/bpfnet.fish
	@if cmp -s deploy/bpfnetd.yaml $(DESTDIR)/etc/bpfnet/bpfnetd.yaml; then rm -f $(DESTDIR)/etc/bpfnet/bpfnetd.yaml; \
	elif [ -e $(DESTDIR)/etc/bpfnet/bpfnetd.yaml ]; then echo "keeping changed $(DESTDIR)/etc/bpfnet/bpfnetd.yaml"; fi
	@# Empty directories go: all of them up to DESTDIR when staging, only
	@# /etc/bpfnet on a real system.
	@if [ -n "$(DESTDIR)" ]; then for d in $(DESTDIR)/etc/bpfnet $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CNIDIR) \
		$(DESTDIR)$(MANDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR); do \
		while [ "$$d" != "$(DESTDIR)" ] && [ "$$d" != "/" ] && rmdir "$$d" 2>/dev/null; do d=$$(dirname "$$d"); done; done; \
	else rmdir /etc/bpfnet 2>/dev/null || true; fi

.PHONY: bench-progs
bench-progs: ## cost per packet of each BPF program (kernel-measured BPF_PROG_TEST_RUN; root)
	$(GO) test -count=1 ./datapath -run TestProgramCost -progcost -v -progcost-report=$(CURDIR)/bench/progs-results.md

.PHONY: run
run: deps-run build ## start the daemon with its defaults in this network namespace (root; RUN_ARGS adds flags; undo with `make cleanup`)
	./$(BIN)/bpfnetd $(RUN_ARGS)

.PHONY: cleanup
cleanup: build ## undo `make run`: remove every bridge, veth, rule, program and state file bpfnetd made (root; stop the daemon first)
	./$(BIN)/bpfnetd --cleanup $(RUN_ARGS)

.PHONY: demo
demo: deps-run build ## run a short demo entirely inside throw-away network namespaces
	./scripts/demo.sh

# The linter, pinned; `make lint` installs it into bin/tools from the Go
# module proxy the first time.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)

$(GOLANGCI_LINT):
	mkdir -p $(BIN)/tools
	GOBIN=$(abspath $(BIN)/tools) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/tools/golangci-lint $@

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint (.golangci.yml: goimports, vet, import directions, netlink dumps) and a build for another OS (Linux-only code lives in _linux.go files)
	$(GOLANGCI_LINT) run ./...
	GOOS=darwin $(GO) build ./...

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
