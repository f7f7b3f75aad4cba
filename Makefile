# vaultcall — the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all setup build demo test test-unit lint deb test-deb test-systemd fmt clean models bench-speech

all: build

## Install missing Debian packages and check the Rust toolchain (idempotent).
setup:
	@scripts/setup.sh

## Release build of the daemon.
build: setup
	$(CARGO) build --release --locked

## Build, fetch the models, start the daemon on its embedded defaults and show it working
## (DEMO_KEEP=1 keeps it running).
demo: build models
	@scripts/demo.sh

## Fetch, verify, assemble and convert the speech models and ONNX Runtime (models/models.toml;
## idempotent: with everything in place it does nothing and needs no network).
models: setup
	@models/build.sh

## Everything CI runs: formatting and lints, all Rust tests (the speech tests use the real
## models), the .deb install/purge test.
test: setup models lint test-unit test-deb

test-unit: models
	$(CARGO) test --locked --all-targets

## Speech quality and speed benchmarks (docs/benchmarks.md); not part of `make test`.
bench-speech: models
	$(CARGO) run --release --locked -- bench-speech

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Build the Debian package (fetches and verifies ONNX Runtime from its PyPI wheel).
deb: setup
	@packaging/build-deb.sh

## Install the .deb, check it, start it as systemd would, purge it (needs root).
test-deb: setup
	@if [[ $$(id -u) -eq 0 ]]; then tests/deb/test-deb.sh; \
	 else echo "test-deb: skipped (installing a package needs root; run: sudo make test-deb)"; fi

## The packaged unit under a real systemd (PID 1 in systemd-nspawn; needs root). Not part of
## `make test`: it boots a container, which not every CI host allows.
test-systemd: deb
	@tests/deb/test-unit-nspawn.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf var models/out models/build
