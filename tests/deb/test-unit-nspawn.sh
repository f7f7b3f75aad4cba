#!/usr/bin/env bash
# The packaged unit under a real systemd as PID 1, for machines (CI VMs, containers) where
# systemd is not PID 1 itself. Run as root:
#
#   tests/deb/test-unit-nspawn.sh [PATH.deb]
#
# Boots this machine's own root file system as a throw-away container: an overlay whose
# writable layer is a tmpfs, under systemd-nspawn with a private network (loopback only, so
# ports 8080/5060 cannot clash with the host). Inside: dpkg -i, the unit is enabled but not
# started, `systemctl start` reaches "active" with the sandbox applied (no capabilities,
# seccomp, NoNewPrivileges, the master key as a 0400 credential), /healthz answers, the
# watchdog is fed, reload works, ONNX Runtime loads and builds a session under the same
# sandbox, stop ends with Result=success and exit 0, purge removes the user. Nothing on the
# host changes, except that systemd-container is installed if missing.
#
# Without an argument the package is built first (packaging/build-deb.sh →
# target/debian/vaultcall_<version>_amd64.deb). Quiet on success (one line); on failure the reason and the
# container's log. Where the machine cannot run a container at all (no overlayfs, mounts not
# permitted, as in an unprivileged Docker container) it prints one SKIP line and exits 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=""
MOUNTED=()

skip() { echo "test-unit-nspawn: SKIP: $*" >&2; exit 0; }

fail() {
    echo "test-unit-nspawn: FAIL: $*" >&2
    if [ -n "$W" ] && [ -s "$W/out/log" ]; then
        echo "----- container log (last 60 lines) -----" >&2
        tail -n 60 "$W/out/log" >&2
    fi
    exit 1
}

cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null
    done
    # --one-file-system: never descend into a mount that failed to come off (the overlay
    # shows the host's root).
    [ -n "$W" ] && rm -rf --one-file-system "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

[ "$(id -u)" = 0 ] || fail "must run as root"
if ! command -v systemd-nspawn >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends systemd-container >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends systemd-container >/dev/null 2>&1; } \
        || skip "cannot install systemd-container (systemd-nspawn)"
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "no overlay file system"

if [ "$#" -ge 1 ]; then
    DEB=$(readlink -f "$1")
    [ -f "$DEB" ] || fail "no such file: $1"
else
    DEB=$("$ROOT/packaging/build-deb.sh") \
        || fail "packaging/build-deb.sh failed"
fi

W=$(mktemp -d /tmp/vaultcall-nspawn.XXXXXX)
mkdir -p "$W/t" "$W/share" "$W/out"
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$W/t" 2>/dev/null || skip "cannot mount a tmpfs here"
MOUNTED+=("$W/t")
mkdir -p "$W/t/upper" "$W/t/work" "$W/t/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/t/upper,workdir=$W/t/work" "$W/t/root" 2>/dev/null \
    || skip "cannot mount an overlay of / here"
MOUNTED+=("$W/t/root")
cp "$DEB" "$W/share/vaultcall.deb"

# A 71-byte ONNX model (Y = Relu(X), X: float[1,4]) and a ctypes probe of the C API: dlopen,
# OrtGetApiBase, CreateEnv, CreateSessionFromArray — run under the unit's own sandbox.
cat >"$W/share/ort-probe.py" <<'PY'
import base64, ctypes
MODEL = base64.b64decode("CAgSADo7CgwKAVgSAVkiBFJlbHUSAWdaEwoBWBIOCgwIARIICgIIAQoCCARiEwoBWRIOCgwIARIICgIIAQoCCARCBAoAEBE=")
lib = ctypes.CDLL("/usr/lib/vaultcall/libonnxruntime.so.1.31.1")
class ApiBase(ctypes.Structure):
    _fields_ = [("GetApi", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)),
                ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]
lib.OrtGetApiBase.restype = ctypes.POINTER(ApiBase)
base = lib.OrtGetApiBase().contents
api = base.GetApi(31)
assert api, "GetApi(31) returned NULL"
fp = ctypes.cast(api, ctypes.POINTER(ctypes.c_void_p))
P = ctypes.c_void_p
err_msg = ctypes.CFUNCTYPE(ctypes.c_char_p, P)(fp[2])
create_env = ctypes.CFUNCTYPE(P, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(P))(fp[3])
create_session = ctypes.CFUNCTYPE(P, P, ctypes.c_char_p, ctypes.c_size_t, P, ctypes.POINTER(P))(fp[8])
create_options = ctypes.CFUNCTYPE(P, ctypes.POINTER(P))(fp[10])
def check(status):
    if status:
        raise SystemExit("onnxruntime error: " + err_msg(status).decode())
env, opts, sess = P(), P(), P()
check(create_env(2, b"probe", ctypes.byref(env)))
check(create_options(ctypes.byref(opts)))
check(create_session(env, MODEL, len(MODEL), opts, ctypes.byref(sess)))
print("onnxruntime probe ok:", base.GetVersionString().decode())
PY

cat >"$W/share/inside.sh" <<'EOF'
#!/bin/bash
set -u
exec >>/mnt/out/log 2>&1
fail() { echo "FAIL: $*" >/mnt/out/result; systemctl status --no-pager vaultcall; journalctl -u vaultcall --no-pager -o short-precise | tail -40; exit 1; }
show() { systemctl show -p "$1" --value vaultcall; }
export DEBIAN_FRONTEND=noninteractive
dpkg -i /mnt/vc/vaultcall.deb || fail "dpkg -i failed"
[ "$(systemctl is-enabled vaultcall)" = enabled ] || fail "unit not enabled by the install"
[ "$(show ActiveState)" = inactive ] || fail "the install started the unit"
systemctl start vaultcall || fail "systemctl start vaultcall failed"
[ "$(show ActiveState)/$(show SubState)" = active/running ] || fail "not active/running after start"
case $(show StatusText) in "serving admin=http://127.0.0.1:8080 sip=udp:127.0.0.1:5060") ;; *) fail "status text: $(show StatusText)" ;; esac
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8080/healthz)
[ "$code" = 200 ] || fail "/healthz answered $code"
pid=$(show MainPID)
grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/$pid/status || fail "the daemon has capabilities"
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status || fail "NoNewPrivileges not applied"
grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status || fail "no seccomp filter"
[ "$(awk '/^Uid:/ {print $2}' /proc/$pid/status)" = "$(id -u vaultcall)" ] || fail "not running as vaultcall"
[ "$(stat -c %a /run/credentials/vaultcall.service/master.key)" = 400 ] || fail "credential mode $(stat -c %a /run/credentials/vaultcall.service/master.key)"
for _ in $(seq 20); do [ -n "$(show WatchdogTimestamp)" ] && break; sleep 0.5; done
[ -n "$(show WatchdogTimestamp)" ] || fail "no watchdog ping"
systemctl reload vaultcall || fail "systemctl reload failed"
[ "$(show ActiveState)" = active ] || fail "not active after reload"
journalctl -u vaultcall -o cat --no-pager | grep -q "configuration reloaded" || fail "reload not logged"
systemctl stop vaultcall || fail "systemctl stop failed"
[ "$(show Result)/$(show ExecMainStatus)" = success/0 ] || fail "stop: Result=$(show Result) status=$(show ExecMainStatus)"
# ONNX Runtime under the very same sandbox: a drop-in swaps only the command.
mkdir -p /etc/systemd/system/vaultcall.service.d
printf '[Service]\nType=oneshot\nWatchdogSec=0\nExecStart=\nExecStart=/usr/bin/python3 /mnt/vc/ort-probe.py\n' \
    >/etc/systemd/system/vaultcall.service.d/probe.conf
systemctl daemon-reload
systemctl start vaultcall || fail "onnxruntime probe failed under the unit's sandbox"
journalctl -u vaultcall -o cat --no-pager | grep -q "onnxruntime probe ok: 1.31.1" || fail "onnxruntime probe printed nothing"
rm -rf /etc/systemd/system/vaultcall.service.d
systemctl daemon-reload
dpkg --purge vaultcall || fail "dpkg --purge failed"
getent passwd vaultcall >/dev/null && fail "user left after purge"
echo PASS >/mnt/out/result
EOF
chmod 0755 "$W/share/inside.sh"
chmod 0644 "$W/share/ort-probe.py" "$W/share/vaultcall.deb"

# python3 and curl come from the host's root, which the container runs.
if ! command -v python3 >/dev/null || ! command -v curl >/dev/null; then
    fail "python3 and curl are needed"
fi

if ! timeout 240 systemd-nspawn --quiet --directory="$W/t/root" --machine=vaultcall-test \
    --uuid="$(tr -d '-' </proc/sys/kernel/random/uuid)" --keep-unit --register=no \
    --link-journal=no --private-network \
    --bind-ro="$W/share:/mnt/vc" --bind="$W/out:/mnt/out" \
    --boot -- systemd.run=/mnt/vc/inside.sh \
    systemd.run_success_action=poweroff systemd.run_failure_action=poweroff \
    >"$W/out/console" 2>&1; then
    cat "$W/out/console" >>"$W/out/log"
    fail "systemd-nspawn failed or timed out"
fi
[ -f "$W/out/result" ] || { cat "$W/out/console" >>"$W/out/log"; fail "the container produced no result"; }
result=$(cat "$W/out/result")
[ "$result" = PASS ] || fail "${result#FAIL: }"
echo "test-unit-nspawn: ok ($(basename "$DEB") under systemd $(systemctl --version | awk 'NR==1 {print $2}') as PID 1: enabled not started, start/READY, sandbox, watchdog, reload, onnxruntime, stop, purge)"
