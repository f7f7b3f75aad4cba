#!/usr/bin/env bash
# Builds the Debian package: target/debian/vaultcall_<version>_amd64.deb.
#
#   packaging/build-deb.sh           (what `make deb` runs)
#
# Steps: install cargo-deb if it is missing, fetch and verify ONNX Runtime
# (packaging/fetch-onnxruntime.sh), `cargo build --release --locked`, then `cargo deb`
# with the [package.metadata.deb] section of Cargo.toml. Prints the .deb's path as its only
# line on stdout; quiet otherwise unless something fails.
#
# Environment:
#   DEB_FAST=1            lighter xz compression (quicker, larger file)
#   SOURCE_DATE_EPOCH     timestamps inside the package (default: the last commit's time)
set -euo pipefail

# cargo-deb release known to work with this tree (Rust 1.85+); any 3.x is accepted.
CARGO_DEB_VERSION=3.8.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "build-deb: $*" >&2; exit 1; }

# Runs a command with its output kept aside; shows the output only if the command fails.
quietly() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        rm -f "$log"
        die "failed (exit $rc): $*"
    fi
    rm -f "$log"
}

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"
# cargo-deb's $auto dependencies come from dpkg-shlibdeps.
if ! command -v dpkg-shlibdeps >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev
    else
        die "dpkg-shlibdeps not found (apt-get install dpkg-dev)"
    fi
fi

installed=$(cargo deb --version 2>/dev/null || true)   # "cargo-deb 3.8.0"
case $installed in
    "cargo-deb 3."*) ;;
    *) quietly cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked ;;
esac

"$ROOT/packaging/fetch-onnxruntime.sh" "$ROOT/target/onnxruntime"

# Same profile and features as a plain `cargo build --release`, so a built tree is not
# rebuilt. SOURCE_DATE_EPOCH is kept out of it on purpose: the cc-based build scripts
# (aws-lc-sys, libsqlite3-sys) track that variable, and a new value rebuilds them.
quietly env -u SOURCE_DATE_EPOCH cargo build --release --locked

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
# Always target/debian (under CARGO_TARGET_DIR if set): cargo-deb deletes older
# vaultcall_*.deb files there whatever --output says, so a second output directory would only
# make one build delete another's package.
out_dir=${CARGO_TARGET_DIR:-$ROOT/target}/debian
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
fast=()
[ "${DEB_FAST:-0}" = 1 ] && fast=(--fast)
out=$(SOURCE_DATE_EPOCH=$epoch cargo deb --no-build --locked --quiet "${fast[@]}" --output "$out_dir/" 2>&1) \
    || { printf '%s\n' "$out" >&2; die "cargo deb failed"; }

version=$(cargo metadata --no-deps --format-version 1 --locked 2>/dev/null \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="vaultcall"))') \
    || die "cannot read the package version from Cargo.toml"
deb="$out_dir/vaultcall_${version}_amd64.deb"
[ -f "$deb" ] || { printf '%s\n' "$out" >&2; die "expected $deb, cargo deb said the above"; }
echo "$deb"
