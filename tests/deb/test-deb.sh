#!/usr/bin/env bash
# End-to-end test of the Debian package, run as root on a Debian 12 machine (CI):
#
#   tests/deb/test-deb.sh [PATH.deb]
#
# Without an argument it builds the package first (packaging/build-deb.sh, the same file
# `make deb` makes: target/debian/vaultcall_<version>_amd64.deb). Then: dpkg -i; files,
# owners and modes; check-config; systemd-analyze verify and security (exposure <= 2.0); a
# bootstrap token; the daemon started as systemd would start it (user vaultcall, state,
# runtime and credentials directories, a NOTIFY_SOCKET this script listens on) up to
# READY=1; /healthz and an authenticated request; a watchdog ping; a SIGHUP reload; SIGTERM
# → STOPPING=1 and exit 0; reinstall keeps the key; dpkg --remove keeps data and key;
# dpkg --purge deletes them and the user. The package is purged on exit, pass or fail.
#
# It refuses to run where vaultcall is already installed or its directories exist (the purge
# would destroy that data) unless VAULTCALL_DEB_TEST_FORCE=1.
# Quiet on success (one line); on failure the reason, then the daemon's and dpkg's output.
# VAULTCALL_DEB_TEST_VERBOSE=1 prints each step; VAULTCALL_DEB_TEST_KEEP=1 keeps the logs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PKG=vaultcall
CONF=/etc/vaultcall/vaultcall.toml
KEY=/etc/vaultcall/master.key
DATA=/var/lib/vaultcall
RUN=/run/vaultcall
UNIT=/usr/lib/systemd/system/vaultcall.service
LIB=/usr/lib/vaultcall/libonnxruntime.so.1.31.1
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
MAX_EXPOSURE=2.0

TMP=""
DAEMON_PID=""
LISTENER_PID=""
INSTALLED_BY_US=0
STEP="start"

log() { :; }   # quiet; set VAULTCALL_DEB_TEST_VERBOSE=1 for progress lines
[ "${VAULTCALL_DEB_TEST_VERBOSE:-0}" = 1 ] && log() { echo "test-deb: $(date +%T) $*" >&2; }

fail() {
    echo "test-deb: FAIL [$STEP]: $*" >&2
    if [ -n "$TMP" ]; then
        for f in "$TMP/daemon.log" "$TMP/notify.log" "$TMP/dpkg.log"; do
            if [ -s "$f" ]; then
                echo "----- $(basename "$f") (last 40 lines) -----" >&2
                tail -n 40 "$f" >&2
            fi
        done
    fi
    exit 1
}

step() { STEP=$1; log "$1"; }

# Runs a command, its output appended to dpkg.log; on failure shows it and fails.
run() {
    if ! "$@" >>"$TMP/dpkg.log" 2>&1; then
        fail "command failed: $*"
    fi
}

pkg_status() { dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null | tr -d ' ' || true; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [ -n "$LISTENER_PID" ] && kill -0 "$LISTENER_PID" 2>/dev/null; then
        kill "$LISTENER_PID" 2>/dev/null
        wait "$LISTENER_PID" 2>/dev/null
    fi
    if [ "$INSTALLED_BY_US" = 1 ] && [ -n "$(pkg_status)" ]; then
        if ! dpkg --purge "$PKG" >/dev/null 2>&1; then
            echo "test-deb: cleanup: dpkg --purge $PKG failed; the package is still installed" >&2
            rc=1
        fi
    fi
    if [ -n "$TMP" ]; then
        if [ "${VAULTCALL_DEB_TEST_KEEP:-0}" = 1 ]; then
            echo "test-deb: logs kept in $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# ---------------------------------------------------------------- preconditions
step "preconditions"
[ "$(id -u)" = 0 ] || fail "must run as root (it installs and purges a package)"
command -v dpkg >/dev/null || fail "dpkg not found: this test needs Debian"
TMP=$(mktemp -d /tmp/vaultcall-deb-test.XXXXXX)
chmod 0711 "$TMP"
: >"$TMP/dpkg.log"

if [ -n "$(pkg_status)" ] || [ -e /etc/vaultcall ] || [ -e "$DATA" ]; then
    if [ "${VAULTCALL_DEB_TEST_FORCE:-0}" != 1 ]; then
        fail "vaultcall is installed here or /etc/vaultcall or $DATA exist; this test purges the package and deletes them. Remove them first (dpkg --purge vaultcall) or set VAULTCALL_DEB_TEST_FORCE=1"
    fi
    run dpkg --purge "$PKG"
    rm -rf /etc/vaultcall "$DATA" "$RUN"
fi

# Tools the test itself needs; installed quietly when missing.
APT_UPDATED=0
apt_install() {
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null || fail "missing packages ($*) and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "$@" >>"$TMP/dpkg.log" 2>&1; then
        if [ "$APT_UPDATED" = 0 ]; then
            APT_UPDATED=1
            run apt-get update -qq
            run apt-get install -y -qq --no-install-recommends "$@"
        else
            fail "apt-get install $* failed"
        fi
    fi
}
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v setpriv >/dev/null || need+=(util-linux)
apt_install "${need[@]}"

# ---------------------------------------------------------------- the package
step "build"
if [ "$#" -ge 1 ]; then
    DEB=$(readlink -f "$1")
    [ -f "$DEB" ] || fail "no such file: $1"
    FROM_TREE=0
else
    DEB=$("$ROOT/packaging/build-deb.sh") \
        || fail "packaging/build-deb.sh failed"
    FROM_TREE=1
fi
[ "$(dpkg-deb -f "$DEB" Package)" = "$PKG" ] || fail "$DEB is not the $PKG package"

step "dependencies"
# Depends that are not installed yet: first alternative of each, without version.
missing=()
while IFS= read -r dep; do
    [ -n "$dep" ] || continue
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$dep" 2>/dev/null || true)
    case $status in ii*) ;; *) missing+=("$dep") ;; esac
done < <(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g')
apt_install "${missing[@]}"

step "install"
INSTALLED_BY_US=1
run dpkg -i "$DEB"
[ "$(pkg_status)" = ii ] || fail "after dpkg -i the package status is '$(pkg_status)', not ii"
grep -q "systemctl start vaultcall" "$TMP/dpkg.log" || fail "postinst did not print the first-start instructions"
grep -q "sudo -u vaultcall vaultcall admin bootstrap --config $CONF" "$TMP/dpkg.log" \
    || fail "postinst did not print the bootstrap command"

# ---------------------------------------------------------------- files, owners, modes
step "files"
# expect PATH TYPE MODE OWNER:GROUP
expect() {
    local path=$1 type=$2 mode=$3 owner=$4 got
    [ -e "$path" ] || fail "$path is missing"
    got=$(stat -c '%F %a %U:%G' "$path")
    [ "$got" = "$type $mode $owner" ] || fail "$path is '$got', expected '$type $mode $owner'"
}
expect /usr/bin/vaultcall "regular file" 755 root:root
expect "$UNIT" "regular file" 644 root:root
expect /etc/vaultcall directory 750 root:vaultcall
expect "$CONF" "regular file" 644 root:root
expect "$KEY" "regular file" 600 root:root
expect "$DATA" directory 700 vaultcall:vaultcall
expect "$LIB" "regular file" 644 root:root
expect /usr/share/doc/vaultcall/onnxruntime/LICENSE "regular file" 644 root:root
expect /usr/share/doc/vaultcall/onnxruntime/ThirdPartyNotices.txt "regular file" 644 root:root
expect /usr/share/doc/vaultcall/copyright "regular file" 644 root:root
[ "$(stat -c %s "$KEY")" = 32 ] || fail "$KEY has $(stat -c %s "$KEY") bytes, expected 32"
[ "$(sha256sum "$LIB" | cut -d' ' -f1)" = "$LIB_SHA256" ] || fail "$LIB has the wrong sha256"
grep -q "MIT License" /usr/share/doc/vaultcall/onnxruntime/LICENSE || fail "onnxruntime LICENSE is not the MIT text"
dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q "^ $CONF " || fail "$CONF is not a conffile"
if [ "$FROM_TREE" = 1 ]; then
    cmp -s "$ROOT/systemd/vaultcall.service" "$UNIT" || fail "installed unit differs from systemd/vaultcall.service"
    cmp -s "$ROOT/packaging/vaultcall.toml" "$CONF" || fail "installed config differs from packaging/vaultcall.toml"
fi
# On merged-/usr Debian 12 this is the same directory as /lib/systemd/system.
[ -f /lib/systemd/system/vaultcall.service ] || fail "unit not visible as /lib/systemd/system/vaultcall.service"
pw=$(getent passwd vaultcall) || fail "user vaultcall does not exist"
IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
[ "$uid" -lt 1000 ] || fail "vaultcall is not a system user (uid $uid)"
[ "$home" = "$DATA" ] || fail "vaultcall's home is $home, expected $DATA"
case $shell in /usr/sbin/nologin|/sbin/nologin|/bin/false) ;; *) fail "vaultcall has login shell $shell" ;; esac
getent group vaultcall >/dev/null || fail "group vaultcall does not exist"
if ldd "$LIB" | grep -q "not found"; then
    fail "$LIB has unresolved libraries: $(ldd "$LIB" | grep 'not found' | tr '\n' ' ')"
fi

step "check-config"
out=$(/usr/bin/vaultcall check-config "$CONF" 2>&1) || fail "vaultcall check-config $CONF failed: $out"
/usr/bin/vaultcall version >/dev/null 2>&1 || fail "vaultcall version failed"

step "systemd-analyze verify"
out=$(systemd-analyze verify "$UNIT" 2>&1) || fail "systemd-analyze verify $UNIT failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify $UNIT complained: $out"

step "systemd-analyze security"
out=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || fail "systemd-analyze security failed: $out"
exposure=$(printf '%s\n' "$out" | sed -nE 's/.*Overall exposure level for vaultcall\.service: ([0-9.]+).*/\1/p')
[ -n "$exposure" ] || fail "no exposure figure in: $out"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' \
    || fail "exposure $exposure is above $MAX_EXPOSURE: $(printf '%s\n' "$out" | grep '✗')"

# ---------------------------------------------------------------- idempotent reinstall
step "reinstall keeps the key"
key_sum=$(sha256sum "$KEY" | cut -d' ' -f1)
run dpkg -i "$DEB"
[ "$(sha256sum "$KEY" | cut -d' ' -f1)" = "$key_sum" ] || fail "reinstalling replaced $KEY"
expect "$KEY" "regular file" 600 root:root
expect "$DATA" directory 700 vaultcall:vaultcall

# ---------------------------------------------------------------- run it as systemd would
step "bootstrap"
as_vaultcall() {
    setpriv --reuid=vaultcall --regid=vaultcall --clear-groups --no-new-privs --inh-caps=-all -- "$@"
}
token=$(as_vaultcall env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$DATA" \
    /usr/bin/vaultcall admin bootstrap --config "$CONF" --token-only 2>"$TMP/daemon.log") \
    || fail "vaultcall admin bootstrap as user vaultcall failed"
[ -n "$token" ] || fail "bootstrap printed no token"

step "start"
# The shipped config listens on 127.0.0.1:8080 (admin) and :5060 (SIP). If another process
# holds one of them, run on free ports with a copy that differs only in those two lines.
read -r admin_port sip_port < <(python3 - <<'PY'
import socket
def busy(kind, port):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port)); return False
    except OSError:
        return True
    finally:
        s.close()
def free(kind):
    s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]; s.close(); return p
a = 8080 if not busy(socket.SOCK_STREAM, 8080) else free(socket.SOCK_STREAM)
u = 5060 if not busy(socket.SOCK_DGRAM, 5060) else free(socket.SOCK_DGRAM)
print(a, u)
PY
)
config=$CONF
if [ "$admin_port" != 8080 ] || [ "$sip_port" != 5060 ]; then
    config=$TMP/vaultcall.toml
    sed -e "s/^listen = \"127.0.0.1:8080\"/listen = \"127.0.0.1:$admin_port\"/" \
        -e "s/^listen = \"127.0.0.1:5060\"/listen = \"127.0.0.1:$sip_port\"/" "$CONF" >"$config"
    [ "$(diff "$CONF" "$config" | grep -c '^>')" = 2 ] || fail "could not rewrite the ports in a copy of $CONF"
    chmod 0644 "$config"
    log "ports 8080/5060 busy; using $admin_port/$sip_port"
fi

# What systemd sets up: RuntimeDirectory=, LoadCredential= (a private copy, 0400, owned by
# the service user), NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID, UMask=0077.
install -d -m 0700 -o vaultcall -g vaultcall "$RUN"
install -d -m 0500 -o vaultcall -g vaultcall "$TMP/credentials"
install -m 0400 -o vaultcall -g vaultcall "$KEY" "$TMP/credentials/master.key"
install -d -m 0700 -o vaultcall -g vaultcall "$TMP/notify"
: >"$TMP/notify.log"
python3 - "$TMP/notify/sock" "$TMP/notify.log" <<'PY' &
import os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o600)
os.chown(path, os.stat(os.path.dirname(path)).st_uid, -1)
open(path + ".ready", "w").close()
with open(out, "a") as f:
    while True:
        msg = s.recv(4096).decode("utf-8", "replace")
        f.write(msg.replace("\n", " | ") + "\n")
        f.flush()
PY
LISTENER_PID=$!
for _ in $(seq 50); do [ -e "$TMP/notify/sock.ready" ] && break; sleep 0.1; done
[ -e "$TMP/notify/sock.ready" ] || fail "the notify socket listener did not start"

(
    umask 0077
    cd /
    # shellcheck disable=SC2016 # $$ and $1 are for the inner sh
    exec setpriv --reuid=vaultcall --regid=vaultcall --clear-groups --no-new-privs --inh-caps=-all -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME="$DATA" USER=vaultcall \
        LOGNAME=vaultcall SHELL=/usr/sbin/nologin INVOCATION_ID=0123456789abcdef0123456789abcdef \
        STATE_DIRECTORY="$DATA" RUNTIME_DIRECTORY="$RUN" CONFIGURATION_DIRECTORY=/etc/vaultcall \
        CREDENTIALS_DIRECTORY="$TMP/credentials" NOTIFY_SOCKET="$TMP/notify/sock" \
        WATCHDOG_USEC=2000000 \
        sh -c 'export WATCHDOG_PID=$$; exec /usr/bin/vaultcall serve --config "$1"' sh "$config"
) >>"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!

# wait_for REGEX SECONDS: until a notify message matches, or the daemon exits.
wait_for() {
    local re=$1 secs=$2 _
    for _ in $(seq $((secs * 10))); do
        grep -Eq "$re" "$TMP/notify.log" && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
if ! wait_for '^READY=1' 20; then
    kill -0 "$DAEMON_PID" 2>/dev/null && fail "no READY=1 within 20 s"
    fail "the daemon exited before READY=1"
fi
grep -E '^READY=1' "$TMP/notify.log" | head -1 | grep -q "STATUS=serving admin=http://127.0.0.1:$admin_port sip=udp:127.0.0.1:$sip_port" \
    || fail "READY=1 without the expected STATUS line: $(grep -E '^READY=1' "$TMP/notify.log" | head -1)"
grep -E '^READY=1' "$TMP/notify.log" | head -1 | grep -q "MAINPID=$DAEMON_PID" \
    || fail "READY=1 names a MAINPID other than $DAEMON_PID"

step "serving"
code=$(curl -s -o "$TMP/healthz" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/healthz") || true
[ "$code" = 200 ] || fail "GET /healthz answered ${code:-nothing}, expected 200"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$admin_port/api/v1/whoami") || true
[ "$code" = 200 ] || fail "GET /api/v1/whoami with the bootstrap token answered ${code:-nothing}, expected 200"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/api/v1/whoami") || true
[ "$code" = 401 ] || fail "GET /api/v1/whoami without a token answered ${code:-nothing}, expected 401"
expect "$RUN/admin.sock" socket 600 vaultcall:vaultcall
expect "$DATA/vaultcall.db" "regular file" 600 vaultcall:vaultcall
wait_for '^WATCHDOG=1' 5 || fail "no WATCHDOG=1 within 5 s with WATCHDOG_USEC=2 s"

step "reload"
kill -HUP "$DAEMON_PID"
wait_for '^RELOADING=1' 10 || fail "no RELOADING=1 after SIGHUP"
for _ in $(seq 100); do
    [ "$(grep -cE '^READY=1' "$TMP/notify.log")" -ge 2 ] && break
    sleep 0.1
done
[ "$(grep -cE '^READY=1' "$TMP/notify.log")" -ge 2 ] || fail "no READY=1 after the reload"

step "stop"
kill -TERM "$DAEMON_PID"
rc=0
for _ in $(seq 450); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "still running 45 s (TimeoutStopSec) after SIGTERM"
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=""
grep -q '^STOPPING=1' "$TMP/notify.log" || fail "no STOPPING=1 after SIGTERM"
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM, expected 0"
kill "$LISTENER_PID" 2>/dev/null || true
wait "$LISTENER_PID" 2>/dev/null || true
LISTENER_PID=""
rm -rf "$RUN"

# ---------------------------------------------------------------- remove keeps data and key
step "remove"
run dpkg --remove "$PKG"
[ "$(pkg_status)" = rc ] || fail "after dpkg --remove the status is '$(pkg_status)', not rc"
grep -q "Kept (not deleted)" "$TMP/dpkg.log" || fail "postrm remove did not say what it kept"
[ ! -e /usr/bin/vaultcall ] || fail "/usr/bin/vaultcall left after remove"
[ ! -e "$UNIT" ] || fail "$UNIT left after remove"
[ ! -e "$LIB" ] || fail "$LIB left after remove"
[ -f "$DATA/vaultcall.db" ] || fail "remove deleted $DATA/vaultcall.db"
[ "$(sha256sum "$KEY" | cut -d' ' -f1)" = "$key_sum" ] || fail "remove deleted or changed $KEY"
[ -f "$CONF" ] || fail "remove deleted the conffile $CONF"
getent passwd vaultcall >/dev/null || fail "remove deleted the user vaultcall"

step "reinstall after remove keeps the key"
run dpkg -i "$DEB"
[ "$(sha256sum "$KEY" | cut -d' ' -f1)" = "$key_sum" ] || fail "reinstalling after remove replaced $KEY"
[ -f "$DATA/vaultcall.db" ] || fail "reinstalling after remove lost $DATA/vaultcall.db"

# ---------------------------------------------------------------- purge deletes everything
step "purge"
run dpkg --purge "$PKG"
grep -q "WARNING: purging destroys" "$TMP/dpkg.log" || fail "postrm purge did not warn"
[ -z "$(pkg_status)" ] || [ "$(pkg_status)" = un ] || fail "after purge the status is '$(pkg_status)'"
left=()
for p in /usr/bin/vaultcall "$UNIT" /usr/lib/vaultcall /usr/share/doc/vaultcall /etc/vaultcall "$DATA" "$RUN" \
    /etc/systemd/system/multi-user.target.wants/vaultcall.service /etc/systemd/system/vaultcall.service \
    /var/lib/systemd/deb-systemd-helper-enabled/vaultcall.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-masked/vaultcall.service; do
    if [ -e "$p" ] || [ -L "$p" ]; then left+=("$p"); fi
done
if getent passwd vaultcall >/dev/null; then left+=("user vaultcall"); fi
if getent group vaultcall >/dev/null; then left+=("group vaultcall"); fi
[ "${#left[@]}" = 0 ] || fail "left after purge: ${left[*]}"
INSTALLED_BY_US=0

echo "test-deb: ok ($(basename "$DEB"): installed, files and modes, check-config, verify, exposure $exposure, READY/watchdog/reload/stop, remove kept data+key, purge left nothing)"
