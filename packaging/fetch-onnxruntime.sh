#!/usr/bin/env bash
# Fetches libonnxruntime.so.1.31.1 and its licence files from the PyPI wheel
# onnxruntime==1.31.1 (cp312, manylinux_2_28_x86_64) for the Debian package.
#
#   packaging/fetch-onnxruntime.sh [OUT_DIR]      (default: target/onnxruntime)
#
# Writes OUT_DIR/libonnxruntime.so.1.31.1, OUT_DIR/LICENSE, OUT_DIR/ThirdPartyNotices.txt.
# The wheel is cached in $ORT_WHEEL_DIR (default OUT_DIR/wheel). Both the wheel and the
# library are checked against pinned SHA-256 sums; a mismatch is an error, never a re-download
# loop. Idempotent: with a verified wheel and library in place it does nothing. Quiet on
# success; on failure it says what went wrong on stderr and exits non-zero.
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL=onnxruntime-${ORT_VERSION}-cp312-cp312-manylinux_2_28_x86_64.whl
# sha256 of the wheel above, computed from `pip download` of onnxruntime==1.31.1.
WHEEL_SHA256=1f3dea47f2f0e5117c2404cea7d21fd253ae7836a3bf167a501cdfbb2600d536
LIB=libonnxruntime.so.${ORT_VERSION}
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
# Paths inside the wheel.
LIB_IN_WHEEL=onnxruntime/capi/${LIB}
LICENSE_IN_WHEEL=onnxruntime/LICENSE
NOTICES_IN_WHEEL=onnxruntime/ThirdPartyNotices.txt

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/target/onnxruntime}
WHEEL_DIR=${ORT_WHEEL_DIR:-$OUT/wheel}

die() { echo "fetch-onnxruntime: $*" >&2; exit 1; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$OUT/$LIB" "$LIB_SHA256" && [ -s "$OUT/LICENSE" ] && [ -s "$OUT/ThirdPartyNotices.txt" ]; then
    exit 0
fi

mkdir -p "$OUT" "$WHEEL_DIR"

if ! sha_ok "$WHEEL_DIR/$WHEEL" "$WHEEL_SHA256"; then
    if [ -e "$WHEEL_DIR/$WHEEL" ]; then
        echo "fetch-onnxruntime: cached $WHEEL_DIR/$WHEEL has the wrong sha256; downloading it again" >&2
        rm -f "$WHEEL_DIR/$WHEEL"
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        # A fresh Debian 12 has no pip; as root, install Debian's quietly.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null 2>&1 \
                || { apt-get update -qq >/dev/null 2>&1 \
                     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null 2>&1; } \
                || die "python3 -m pip is not available and apt-get install python3-pip failed"
        else
            die "python3 -m pip is not available (on Debian: apt-get install python3-pip)"
        fi
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
        --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 "onnxruntime==${ORT_VERSION}" -d "$WHEEL_DIR" >"$log" 2>&1; then
        cat "$log" >&2
        die "pip download of onnxruntime==${ORT_VERSION} failed"
    fi
    [ -f "$WHEEL_DIR/$WHEEL" ] || die "pip did not produce $WHEEL in $WHEEL_DIR (got: $(ls "$WHEEL_DIR"))"
    got=$(sha256sum "$WHEEL_DIR/$WHEEL" | cut -d' ' -f1)
    if [ "$got" != "$WHEEL_SHA256" ]; then
        mv "$WHEEL_DIR/$WHEEL" "$WHEEL_DIR/$WHEEL.rejected"
        die "$WHEEL has sha256 $got, expected $WHEEL_SHA256 (kept as $WHEEL_DIR/$WHEEL.rejected)"
    fi
fi

# Extract with Python's zipfile (a wheel is a zip; unzip may not be installed). Each member is
# written under a temporary name and renamed, so an interrupted run leaves no half file.
python3 - "$WHEEL_DIR/$WHEEL" "$OUT" "$LIB_IN_WHEEL" "$LICENSE_IN_WHEEL" "$NOTICES_IN_WHEEL" <<'PY' \
    || die "extracting from $WHEEL_DIR/$WHEEL failed"
import os, shutil, sys, zipfile
wheel, out, *members = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        dest = os.path.join(out, os.path.basename(m))
        with z.open(m) as src, open(dest + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(dest + ".part", 0o644)
        os.replace(dest + ".part", dest)
PY

got=$(sha256sum "$OUT/$LIB" | cut -d' ' -f1)
if [ "$got" != "$LIB_SHA256" ]; then
    rm -f "$OUT/$LIB"
    die "$LIB from the wheel has sha256 $got, expected $LIB_SHA256"
fi
