# metal6 — make targets. `make help` lists them; `make ci` is what CI runs (via .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
METAL6 := target/debug/metal6

# Crates that hold protocol and decision code: no async runtime, no network stack, no I/O
# beyond what their docs allow. Checked by `make deps-rule`.
PURE_CRATES := metal6-inventory metal6-dhcp6 metal6-ra metal6-tftp metal6-render metal6-emulation metal6-cluster
FORBIDDEN_IN_PURE := tokio hyper reqwest mio socket2
# The installer runs in a minimal initramfs, the image builder only writes files: neither
# carries an async runtime or the server's HTTP stack.
NO_RUNTIME_CRATES := metal6-installer metal6-image
FORBIDDEN_IN_NO_RUNTIME := tokio hyper reqwest mio
# The netboot server never depends on the BMC (Redfish) code; the Redfish client, the
# orchestrator (which reads the server over HTTP only) and doctor (which reads this host's
# /proc and the link, never serve's internals) carry no HTTP server.
SERVER_CRATES := metal6-netboot
FORBIDDEN_IN_SERVER := metal6-redfish
CLIENT_CRATES := metal6-redfish metal6-orchestrator metal6-doctor
FORBIDDEN_IN_CLIENT := metal6-netboot metal6-emunet
# The shared state (PostgreSQL) sits below both serve and apply: it knows neither.
SHARED_STATE_CRATES := metal6-db
FORBIDDEN_IN_SHARED_STATE := metal6-netboot metal6-orchestrator metal6-redfish

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what builds and tests need (apt-get as root; idempotent)
	@./scripts/install-deps.sh

.PHONY: build
build: deps ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets --locked

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: fmt-check
fmt-check: ## Fail if the code is not formatted
	$(CARGO) fmt --all -- --check

.PHONY: lint
lint: ## clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: deps-rule
# $(call no_deps,CRATES,FORBIDDEN): fail if any of CRATES has any of FORBIDDEN in its tree.
define no_deps
	@for c in $(1); do \
	  tree=$$($(CARGO) tree --locked -p $$c -e normal --prefix none --format '{p}' | awk '{print $$1}' | sort -u); \
	  for f in $(2); do \
	    if grep -qx "$$f" <<<"$$tree"; then echo "dependency rule broken: $$c depends on $$f"; exit 1; fi; \
	  done; \
	  echo "deps-rule: $$c has none of: $(2)"; \
	done
endef
deps-rule: ## Check the dependency rule: pure crates pull in no runtime or network stack
	$(call no_deps,$(PURE_CRATES),$(FORBIDDEN_IN_PURE))
	$(call no_deps,$(NO_RUNTIME_CRATES),$(FORBIDDEN_IN_NO_RUNTIME))
	$(call no_deps,$(SERVER_CRATES),$(FORBIDDEN_IN_SERVER))
	$(call no_deps,$(CLIENT_CRATES),$(FORBIDDEN_IN_CLIENT))
	$(call no_deps,$(SHARED_STATE_CRATES),$(FORBIDDEN_IN_SHARED_STATE))

.PHONY: unit
unit: ## Every test, the QEMU end-to-end included (make e2e runs that one alone)
	@mkdir -p target
	# The binaries first: the end-to-end test puts metal6-installer into the installer UKI.
	$(CARGO) build --workspace --bins --locked
	$(CARGO) build --profile installer -p metal6-installer --locked
	rm -rf target/boot-matrix
	# --no-fail-fast: one failing test binary does not hide the results of the ones after it.
	$(CARGO) test --workspace --locked --no-fail-fast 2>&1 | tee target/unit-tests.log
	@./scripts/test-summary.sh target/unit-tests.log
	@python3 scripts/boot-matrix.py --check

.PHONY: test
test: deps fmt-check lint deps-rule fuzz-smoke unit ## Everything CI checks (fuzz-smoke: 10 s per fuzz target)

.PHONY: e2e
e2e: deps ## Blank QEMU disk to ready node over IPv6 (HTTP boot, then PXE/TFTP); minutes under TCG
	$(CARGO) build --workspace --bins --locked
	$(CARGO) build --profile installer -p metal6-installer --locked
	$(CARGO) test --locked -p metal6-cli --test e2e -- --nocapture

.PHONY: image
image: deps ## Build the lab image and installer UKI into artifacts/ (cached by content)
	$(CARGO) build --locked -p metal6-cli
	$(CARGO) build --profile installer -p metal6-installer --locked
	$(METAL6) image build images/lab.yaml --out artifacts --installer target/installer/metal6-installer

.PHONY: ci
ci: test ## What .ci/run runs

.PHONY: bless
bless: ## Rewrite golden files (corpus .expected, CLI snapshots, schema.json); review the diff
	METAL6_BLESS=1 $(CARGO) test --workspace --locked

.PHONY: schema
schema: ## Regenerate inventory/schema.json
	$(CARGO) run -q --locked -- inventory schema > inventory/schema.json

.PHONY: bench
bench: bench-inventory bench-dhcp bench-http bench-tftp bench-image bench-boot bench-emulation bench-apply ## All benchmarks

.PHONY: bench-inventory
bench-inventory: ## Validate a 10,000-node inventory (target < 1 s)
	$(CARGO) bench --locked -p metal6-inventory --bench validate

.PHONY: bench-dhcp
bench-dhcp: bench-deps ## DHCPv6 clean rate (0 % drops) by ramp: metal6 vs Kea single/multi-threaded, direct and relayed
	@./scripts/bench-dhcp.sh

.PHONY: bench-deps
bench-deps:
	@BENCH=1 ./scripts/install-deps.sh

.PHONY: bench-http
bench-http: bench-deps ## 100 clients x 1 GiB from metal6 vs nginx-light (target ratio >= 0.95, RSS <= 64 MiB)
	@./scripts/bench-http.sh

.PHONY: bench-tftp
bench-tftp: bench-deps ## 100 MB over TFTP: metal6 lock-step vs tftpd-hpa, windowed vs atftpd (targets >= 1.0x)
	@./scripts/bench-tftp.sh

.PHONY: bench-image
bench-image: bench-deps ## The lab image: metal6 vs mkosi 14, cold and sysctl-only warm, same run (targets: ratios <= 1.0)
	@./scripts/bench-image.sh

.PHONY: bench-boot
bench-boot: deps ## A lab node, QEMU start to installer running and to ready, median of 3, per phase (targets <= 20 s, <= 100 s)
	@./scripts/bench-boot.sh

.PHONY: bench-emulation
bench-emulation: deps ## 2,000 and 4,000 satellites x 5 interfaces in namespaces: create, update, teardown, memory
	@./scripts/bench-emulation.sh

.PHONY: soak-emulation
soak-emulation: deps ## 2,000 satellites with moving links and FRR on a block, checked for an hour (SOAK_SECONDS)
	@./scripts/soak-emulation.sh

.PHONY: bench-apply
bench-apply: deps ## metal6 apply on 200 simulated nodes (50 BMCs) through a real serve: CPU per node, per-BMC peak
	NODES=$${NODES:-200} $(CARGO) test --release --locked -p metal6-cli --test apply bench_apply -- --nocapture

# cargo-fuzz targets (fuzz/fuzz_targets/, what each covers: fuzz/README.md), built once with
# nightly and run one after the other by scripts/fuzz.sh; any finding fails the target.
FUZZ_TARGETS ?= dhcp6_decode_decide ra_rs tftp_request http_head inventory tle redfish_json
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
# Processes per target (make fuzz) and the sanitizer (address, or none for long runs: then
# make fuzz-replay checks what they kept under AddressSanitizer).
FUZZ_JOBS ?= 1
FUZZ_SANITIZER ?= address

.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZ_SECONDS each (default 60), continuing the working corpora
	@FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) \
	  FUZZ_SANITIZER=$(FUZZ_SANITIZER) ./scripts/fuzz.sh run

.PHONY: fuzz-smoke
fuzz-smoke: ## A short fuzz run of every target from the committed seeds (FUZZ_SMOKE_SECONDS, default 10)
	@FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) ./scripts/fuzz.sh smoke

.PHONY: fuzz-merge
fuzz-merge: ## Add the inputs fuzzing found that reach new code to the committed corpora (fuzz/corpus/)
	@FUZZ_TARGETS="$(FUZZ_TARGETS)" ./scripts/fuzz.sh merge

.PHONY: fuzz-replay
fuzz-replay: ## Run every input of the working corpora and seeds once under AddressSanitizer
	@FUZZ_TARGETS="$(FUZZ_TARGETS)" ./scripts/fuzz.sh replay

.PHONY: demo
demo: deps ## metal6 apply on the QEMU lab: both nodes powered on through their BMCs, netbooted over IPv6, installed, live
	@./scripts/demo.sh
