# Lockbox — the targets a newcomer guesses.
GO          ?= go
LOCKBOX_TOOLS ?= /opt/lockbox/tools
BIN         := bin
export PATH := $(LOCKBOX_TOOLS)/bin:$(PATH)
export LOCKBOX_TOOLS

.PHONY: all deps build test unit windows integration bench proto lint demo clean install install-node fuzz test-resilience

all: build

deps:
	./hack/deps.sh

# lockbox-runtime is exec'd up to four times per container start, and a
# runtime shim three times per container (start, the shim itself, and the
# shim manager's delete): built static (no cgo), as containerd builds its
# own shims (its Makefile's SHIM_CGO_ENABLED ?= 0), they skip the dynamic
# loader (about 0.9-1.1 ms an exec here). hack/deps.sh builds the baseline,
# containerd-shim-runc-v2, the same way. lockbox (manager, agent, CLI) is
# static too: it needs nothing of libc (Go's own resolver and user
# lookup), and one binary then runs on any node's distribution.
# bin/node/lockbox is its node build (cmd/lockbox/node): the agent alone,
# without the manager, etcd and the admin CLI, which a node never runs and
# whose text would stay resident in the agent (docs/performance.md).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/lockbox
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/node/lockbox ./cmd/lockbox/node
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/lockbox-runtime
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/containerd-shim-lockbox-v2
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/containerd-shim-lockbox-v1

# test is what CI runs: lint, unit tests (with the race detector), then the
# root integration tests against real containerd, runc, crun and etcd, then
# a short fuzz of every target.
test: deps lint unit windows integration fuzz
# make test fuzzes each target for 1 s (33 targets, about 70 s here); make
# fuzz and make test-resilience for 5 s.
test: FUZZTIME = 1s

unit:
	$(GO) test -race -count=1 ./...

# windows runs the Windows tests of mounter/, windows/, plugin/shimproxy/,
# agent/, agent/daemon/ and agent/localapi/ under wine64 (hack/test-windows.sh lists them).
windows:
	./hack/test-windows.sh

integration: build
	LOCKBOX_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -tags integration ./integration/...

# bench runs the benchmark sets behind docs/performance.md (bench/README.md
# says what each prints and its baseline): by default the fast ones (a few
# minutes); BENCH='fanout grpc' names sets, BENCH=all runs every set,
# BENCH=list lists them.
BENCH       ?=
bench: build
	LOCKBOX_BIN=$(CURDIR)/$(BIN) GO=$(GO) ./bench/run.sh $(BENCH)

proto:
	./api/gen.sh

lint:
	gofmt -l . | tee /dev/stderr | (! read -r _)
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=windows $(GO) build ./...
	staticcheck ./...
	GOOS=windows staticcheck ./...

demo: deps build
	./hack/demo.sh

clean:
	rm -rf $(BIN)

# install copies what make build made (and lockbox-nri, if built into bin/)
# and the systemd units; it builds nothing, so that "sudo make install"
# never runs the Go toolchain as root. DESTDIR stages a package.
PREFIX      ?= /usr/local
SYSTEMDUNITDIR ?= /lib/systemd/system
INSTALL     ?= install
# install-node is install with the node build as lockbox and the agent's
# unit alone: what a containerd node needs.
LOCKBOX_BINARY ?= $(BIN)/lockbox
UNITS       ?= contrib/systemd/*.service
install:
	@test -x $(LOCKBOX_BINARY) || { echo "make install: run make build first" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSTEMDUNITDIR)
	$(INSTALL) -m 0755 $(LOCKBOX_BINARY) $(DESTDIR)$(PREFIX)/bin/lockbox
	for b in lockbox-runtime containerd-shim-lockbox-v2 containerd-shim-lockbox-v1 lockbox-nri; do \
		if [ -x $(BIN)/$$b ]; then $(INSTALL) -m 0755 $(BIN)/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; fi; \
	done
	for u in $(UNITS); do \
		sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' $$u >$(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}.tmp && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}.tmp && \
		mv $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/} || exit 1; \
	done

install-node:
	$(MAKE) install LOCKBOX_BINARY=$(BIN)/node/lockbox UNITS=contrib/systemd/lockbox-agent.service

# fuzz runs every Fuzz target that builds on this OS for FUZZTIME each and
# prints the inputs each tried (hack/fuzz.sh). FUZZTIME=10m for the figures.
FUZZTIME    ?= 5s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

# test-resilience: the fault suite of docs/reliability.md (kill -9 of a
# manager, every manager down, network partition, kill -9 of the agent, exit
# and shim-kill wipes, the 1,000 cycles, NRI evictions while the plugin was
# away), the fuzz targets, and RESILIENCE_CYCLES (10,000) cycles through the
# shim with the real agent (about 30 min here; its own run, so that
# LOCKBOX_CYCLES does not lengthen the 1,000-cycle tests).
# LOCKBOX_OUTAGE=10m lengthens TestAllManagersDown's outage (30 s).
RESILIENCE_TESTS := TestPartition|TestAgentKilled|TestAgentKilledBeforeBind|TestAllManagersDown|TestWipeOnExit|TestShimKilled|TestShimCyclesLeaveNothing|TestCyclesLeaveNothing|TestNRIEvictStartedWhileAway|TestHAKillLeaderAgents
RESILIENCE_CYCLES ?= 10000
# verbose runs go test -v into a log and shows only results and t.Log lines
# (the figures), or the whole log when a test fails.
verbose = log=$$(mktemp); $(1) -v >$$log 2>&1; rc=$$?; \
	if [ $$rc -eq 0 ]; then grep -E '^(--- |ok)|_test.go:[0-9]+: ' $$log; else cat $$log; fi; rm -f $$log; exit $$rc
test-resilience: build fuzz
	@$(call verbose,$(GO) test -count=1 -run '^(TestKillDuringCreates|TestHAKillLeader)$$' ./manager/)
	@$(call verbose,LOCKBOX_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -tags integration -run '^($(RESILIENCE_TESTS))$$' ./integration/)
	@$(call verbose,LOCKBOX_BIN=$(CURDIR)/$(BIN) LOCKBOX_CYCLES=$(RESILIENCE_CYCLES) $(GO) test -count=1 -timeout 90m -tags integration -run '^TestCyclesRealAgent$$' ./integration/)
