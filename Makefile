# op-agent: `make demo` runs the main job on real input, `make test` runs every test.
# Both install what they need (Debian packages with apt-get, crates from crates.io through
# cargo) and must run as root on Debian 12. Nothing here touches a system-wide OVS or LXC.

SHELL := /bin/bash
CARGO ?= cargo
DEB_PACKAGES := openvswitch-switch lxc busybox-static iproute2 ethtool sqlite3 hyperfine
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo test unit e2e lint bench clean

all: build

# Debian packages the demo, tests and benchmarks use (OVS daemons, LXC, busybox for the
# containers, sqlite3 and hyperfine for the bench baseline). The Rust toolchain is the
# machine's (rustup); Debian's rustc 1.63 is too old for the crates (MSRV 1.89).
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup, >= 1.89)" >&2; exit 1; }
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(CARGO) build --workspace --locked

demo: build
	bash scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Unit tests, OVSDB client tests against private ovsdb-servers, audit tests, and end-to-end
# tests through pve-sim with real LXC. Root is required; nothing is skipped.
test: build lint
	$(CARGO) test --workspace --locked --features failpoints

bench: deps
	bash bench/run.sh

clean:
	$(CARGO) clean

include tests/deb/Makefile.fragment
include fuzz/Makefile.fragment
