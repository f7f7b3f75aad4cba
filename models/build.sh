#!/usr/bin/env bash
# `make models`: fetch, verify, assemble and convert the speech models (models/models.toml),
# and fetch ONNX Runtime (packaging/fetch-onnxruntime.sh). Idempotent: with everything in place
# it does nothing and needs no network. Conversion runs in a private virtual environment
# (models/build/venv) with the pinned models/requirements.txt; nothing is installed into the
# system's Python.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

packaging/fetch-onnxruntime.sh "$ROOT/target/onnxruntime"

if python3 models/pipeline.py --check; then
    exit 0
fi

VENV=models/build/venv
if [ ! -x "$VENV/bin/python" ] || ! cmp -s models/requirements.txt "$VENV/requirements.txt"; then
    python3 -m venv "$VENV" || { echo "models: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
    log=$(mktemp)
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r models/requirements.txt >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        echo "models: installing models/requirements.txt into $VENV failed" >&2
        exit 1
    fi
    rm -f "$log"
    cp models/requirements.txt "$VENV/requirements.txt"
fi
exec "$VENV/bin/python" models/pipeline.py
