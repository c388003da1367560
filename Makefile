# The README's two commands are `make lab` and `make test`; both install what
# they need first (scripts/deps.sh) and can be run again at any time.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: lab sim-lab test bench deps build sim lint deb rpm package-test

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --workspace --release

# The main job: the two-node lab on this machine (two network namespaces, a
# real libvirtd with QEMU, an ipmi_sim BMC and tandemd per host, the DRBD
# stand-in): a live migration and a failover, told as a timeline. Needs root.
lab: deps
	$(CARGO) build --workspace --bins
	TANDEMD_BIN=$(CURDIR)/target/debug/tandemd ./target/debug/tandem-lab

# The same story on two simulated hosts (the real core, simulated everything else).
sim-lab: deps
	$(CARGO) build --release -p tandem-sim
	./target/release/tandem-sim --lab

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: formatting, lints, unit and integration tests (the peer-link tests
# need root for network namespaces), and 10000 simulated fault schedules.
test: lint
	$(CARGO) build --workspace --bins
	TANDEMD_BIN=$(CURDIR)/target/debug/tandemd $(CARGO) test --workspace
	scripts/package-test.sh
	$(CARGO) build --release -p tandem-sim
	./target/release/tandem-sim --seeds 10000

bench: deps
	$(CARGO) build --workspace --release
	@mkdir -p target/bench
	scripts/bench-sim.sh
	@for b in scripts/bench-*.sh; do [ "$$b" = scripts/bench-sim.sh ] || "$$b"; done
	@python3 scripts/bench_results.py table

# The packages (docs/packaging.md), from the binaries of the `dist` profile
# (release, stripped): target/debian/tandem_*.deb, target/generate-rpm/tandem-*.rpm.
PACKAGED := -p tandemd -p tandemctl -p tandem-hooks -p block-drbd -p xapi-fence
deb: deps
	$(CARGO) build --profile dist $(PACKAGED) --bins
	$(CARGO) deb --no-build -p tandem-packaging

rpm:
	@scripts/deps.sh rpm
	$(CARGO) build --profile dist $(PACKAGED) --bins
	$(CARGO) generate-rpm -p packaging --profile dist

# Builds the .deb from the debug binaries, installs, checks, removes and
# purges it on this machine (root); `make test` runs it too.
package-test: deps
	$(CARGO) build $(PACKAGED) --bins
	scripts/package-test.sh
