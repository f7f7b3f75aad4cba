#!/usr/bin/env bash
# `make demo`: starts vaultcall on its embedded defaults (data in ./var, admin on
# 127.0.0.1:8080, SIP on 127.0.0.1:5060) and shows it working. DEMO_KEEP=1 leaves it running.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/vaultcall
API=http://127.0.0.1:8080
LOG=var/demo.log

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# api METHOD PATH [TOKEN_VARIABLE_NAME] [JSON_BODY]: prints the command with the token's name
# instead of its value, runs it, prints the answer and the HTTP status.
api() {
    local method=$1 path=$2 tokvar=${3:-} body=${4:-} args=(-sS -X "$1" -w '\n(HTTP %{http_code})\n')
    local shown="curl -X $method"
    if [[ -n $tokvar ]]; then
        args+=(-H "Authorization: Bearer ${!tokvar}")
        shown+=" -H 'Authorization: Bearer \$$tokvar'"
    fi
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' -d "$body")
        shown+=" -d '$body'"
    fi
    printf '$ %s %s\n' "$shown" "$API$path"
    curl "${args[@]}" "$API$path"
}
for port in 8080 5060; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: something already listens on 127.0.0.1:$port (an earlier demo? run: pkill -f 'vaultcall serve')" >&2
        exit 1
    fi
done

mkdir -p var
say "Starting: $BIN serve   (embedded defaults, log in $LOG)"
"$BIN" serve >"$LOG" 2>&1 &
PID=$!
trap '[[ -n "${KEEP:-}" ]] || kill -TERM $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fsS "$API/readyz" >/dev/null 2>&1 && break
    kill -0 $PID 2>/dev/null || { echo "demo: the daemon exited:"; cat "$LOG"; exit 1; }
    sleep 0.1
done
sed 's/^/  | /' "$LOG"

say "Liveness, readiness, metrics (no token needed)"
api GET /healthz
api GET /readyz
printf '$ curl %s/metrics | grep ...\n' "$API"
curl -sS "$API/metrics" | grep -E '^vaultcall_(build_info|uptime_seconds|db_size_bytes|ready|admin_requests_total)'

say "The API needs a token: 401 without one, for every path"
api GET /api/v1/status
api GET /api/v1/no-such-path

say "First admin token, from the shell: vaultcall admin bootstrap (shown once)"
ADMIN=$("$BIN" admin bootstrap --force --name "demo $(date +%H:%M:%S)" --token-only)
echo "ADMIN=${ADMIN:0:15}…   (the public id is ${ADMIN:4:10}; the rest is the secret)"
api GET /api/v1/status ADMIN

say "An operator token, and what it may not do (403)"
OPERATOR=$(curl -sS -H "Authorization: Bearer $ADMIN" -d '{"name":"运营-演示","role":"operator"}' "$API/api/v1/tokens" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
api GET /api/v1/whoami OPERATOR
api GET /api/v1/tokens OPERATOR

say "Token list (never secrets), and the audit log's hash chain"
printf '$ curl -H '"'"'Authorization: Bearer $ADMIN'"'"' %s/api/v1/tokens | python3 -m json.tool\n' "$API"
# Whole answers first, then cut (a reader closing the pipe early would fail the script).
TOKENS=$(curl -sS -H "Authorization: Bearer $ADMIN" "$API/api/v1/tokens" | python3 -m json.tool --no-ensure-ascii)
head -26 <<<"$TOKENS"
api GET /api/v1/audit/verify ADMIN

say "The vault: a recorded call (synthetic), played back decrypted, then erased with a signed receipt"
NUMBER="139$(date +%s | tail -c 9)"   # a new number each run: an erased number stays suppressed
printf '$ echo <number> | %s dev record --seconds 3 --turns 2\n' "$BIN"
CALL=$(echo "$NUMBER" | "$BIN" dev record --seconds 3 --turns 2 | awk '/^recording/ {print $4}')
COMPLIANCE=$(curl -sS -H "Authorization: Bearer $ADMIN" -d '{"name":"合规-演示","role":"compliance"}' "$API/api/v1/tokens" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
api GET "/api/v1/calls/$CALL/recordings" OPERATOR
TRANSCRIPT=$(curl -sS -H "Authorization: Bearer $OPERATOR" "$API/api/v1/calls/$CALL/recordings" \
    | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin)["recordings"] if r["kind"] == "transcript"][0])')
api GET "/api/v1/recordings/$TRANSCRIPT/content" OPERATOR
echo "(files under var/vault/ are ciphertext; the admin role may not play them:)"
api GET "/api/v1/recordings/$TRANSCRIPT/content" ADMIN
ERASED=$(api POST /api/v1/erasure-requests COMPLIANCE "{\"phone\":\"$NUMBER\",\"reason\":\"customer request\",\"ticket\":\"DEMO-$CALL\"}")
head -c 600 <<<"$ERASED"; echo
REQ=$(curl -sS -H "Authorization: Bearer $COMPLIANCE" "$API/api/v1/erasure-requests?limit=1000" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["erasure_requests"][-1]["request_id"])')
curl -sS -H "Authorization: Bearer $COMPLIANCE" "$API/api/v1/erasure-requests/$REQ/receipt" >var/demo-receipt.json
"$BIN" keys show-public >var/demo-receipt-key.txt
printf '$ %s verify-receipt var/demo-receipt.json --public-key var/demo-receipt-key.txt\n' "$BIN"
"$BIN" verify-receipt var/demo-receipt.json --public-key var/demo-receipt-key.txt
api GET "/api/v1/calls/$CALL/recordings" OPERATOR
printf '$ %s audit verify\n' "$BIN"
"$BIN" audit verify

say "Speech on this machine: a prompt synthesised by Kokoro, heard back by Whisper"
TEXT="您好，这里是招商银行信用卡中心，您本期账单还有三千五百元没有还款，请在二十五号之前处理。"
printf '$ %s say "%s" --rate 8000 -o var/demo-prompt.wav\n' "$BIN" "$TEXT"
"$BIN" say "$TEXT" --rate 8000 -o var/demo-prompt.wav
printf '$ %s transcribe --format csv var/demo-prompt.wav\n' "$BIN"
"$BIN" transcribe --format csv var/demo-prompt.wav

say "A test call: SIP to a SIPp answering machine that echoes the audio, recorded into the vault"
SIPP_PORT=5090
if ss -Hlun "sport = :$SIPP_PORT" | grep -q .; then
    echo "demo: something already listens on UDP 127.0.0.1:$SIPP_PORT (an earlier SIPp? run: pkill sipp)" >&2
    exit 1
fi
# -bg forks and exits (with status 99, even when the child started well): check the port instead.
(cd var && sipp -sn uas -i 127.0.0.1 -p $SIPP_PORT -rtp_echo -bg >/dev/null 2>&1 || true)
for _ in $(seq 1 50); do
    ss -Hlun "sport = :$SIPP_PORT" | grep -q . && break
    sleep 0.1
done
ss -Hlun "sport = :$SIPP_PORT" | grep -q . || { echo "demo: SIPp did not start on 127.0.0.1:$SIPP_PORT" >&2; exit 1; }
trap '[[ -n "${KEEP:-}" ]] || kill -TERM $PID 2>/dev/null || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p $SIPP_PORT" || true' EXIT
# The daemon's data directory, a trunk pointing at SIPp, its own SIP socket and media ports.
cat >var/demo-dial.toml <<TOML
[paths]
data_dir = "$PWD/var"
[sip]
listen = "127.0.0.1:0"
[media]
port_min = 31000
port_max = 31999
[[sip.trunks]]
name = "demo-sipp"
host = "127.0.0.1"
port = $SIPP_PORT
caller_id = "4008001234"
keepalive_secs = 0
TOML
printf '$ %s dial 13800138000 -c var/demo-dial.toml --play var/demo-prompt.wav --seconds 12 --record\n' "$BIN"
DIALED=$("$BIN" dial 13800138000 -c var/demo-dial.toml --play var/demo-prompt.wav --seconds 12 --record)
echo "$DIALED"
DIAL_CALL=$(echo "$DIALED" | awk '/^Call record:/ {print $3}')
api GET "/api/v1/calls/$DIAL_CALL/recordings" OPERATOR
REC=$(curl -sS -H "Authorization: Bearer $OPERATOR" "$API/api/v1/calls/$DIAL_CALL/recordings" \
    | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin)["recordings"] if r["kind"] == "audio"][0])')
echo "(the customer's leg, left, is SIPp's echo of the prompt: decrypted through the API, audited, and recognised)"
curl -sS -H "Authorization: Bearer $OPERATOR" -o var/demo-call.wav "$API/api/v1/recordings/$REC/content"
printf '$ %s transcribe --format csv var/demo-call.wav\n' "$BIN"
"$BIN" transcribe --format csv var/demo-call.wav
rm -f var/demo-call.wav   # a decrypted copy: not left on disk

say "Run-time log level"
api PUT /api/v1/log-level ADMIN '{"level":"debug"}'

if [[ -n "${DEMO_KEEP:-}" ]]; then
    KEEP=1
    say "Left running (pid $PID). Stop it with: kill -TERM $PID"
    exit 0
fi

say "Graceful stop (SIGTERM): drain, checkpoint, exit 0"
kill -TERM $PID
wait $PID && rc=0 || rc=$?
tail -n 4 "$LOG" | sed 's/^/  | /'
echo "exit code: $rc"
[[ $rc -eq 0 ]]
