#!/bin/sh
# Instructions per one-row XGBoost predict: basalt against nginx returning the
# same-size fixed body, counted by callgrind, so the figure does not depend on
# what else the shared machine runs (wall-clock wrk figures do).
#
# Each server runs single-threaded under `valgrind --tool=callgrind`; after a
# warm-up, the counters are zeroed (callgrind_control -z), bench/predict/client.py
# sends N identical requests, one after another on one keep-alive connection
# (the bytes wrk sends), and the counters are dumped (callgrind_control -d).
# Instructions per request = the dump's total / N. Callgrind counts user-space
# instructions of every thread of the process (the log writer, the QSBR
# ticks... included); the kernel's share (read/writev, TCP loopback, epoll) is
# not in it, so the syscalls each server makes per request are counted
# separately with `strace -c -f` over another N requests.
#
# basalt runs like bench/predict/run.sh runs it (--no-auth, --access-log-sample 0)
# unless AUTH=1: then every request carries a predictor API key, so the key
# lookup and rate limiting are on the path.
#
# Output: a summary table, and for each server the callgrind file
# ($OUT/<server>.callgrind) and the top functions by inclusive and self count
# ($OUT/<server>.annotate), which `callgrind_annotate` or kcachegrind can open.
#
# Knobs: BASALT_BIN (build/basalt), N (2000), WARM (300), AUTH (0), STRACE (1),
# SERVERS ("basalt nginx"; one of them alone for a quicker look), BENCH_OUT
# (build/bench/profile). Takes about a minute.
set -eu
cd "$(dirname "$0")/../.."
. bench/lib.sh

BASALT_BIN=${BASALT_BIN:-build/basalt}
N=${N:-2000}
WARM=${WARM:-300}
AUTH=${AUTH:-0}
STRACE=${STRACE:-1}
SERVERS=${SERVERS:-basalt nginx}
OUT=${BENCH_OUT:-build/bench/profile}
NGINX=${NGINX:-/usr/sbin/nginx}
PY=/usr/bin/python3
CLIENT="$PY bench/predict/client.py"

for tool in valgrind callgrind_control "$NGINX" "$PY" curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/profile: $tool not found" >&2; exit 2; }
done
[ "$STRACE" = 0 ] || command -v strace >/dev/null 2>&1 || { echo "bench/profile: strace not found (or STRACE=0)" >&2; exit 2; }
[ -x "$BASALT_BIN" ] || { echo "bench/profile: $BASALT_BIN not found (run make)" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/basalt-profile.XXXXXX")
PID=""
cleanup() {
    trap - EXIT INT TERM HUP
    stop_pid "$PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "bench/profile: interrupted" >&2; cleanup; exit 130' INT TERM HUP

$PY bench/predict/train.py "$TMP" >/dev/null || { echo "bench/profile: training failed" >&2; exit 2; }
BODY=$TMP/xgb.body.json
PATH_=/v1/models/xgb/predict

# Waits for basalt's listening line in $1; prints the port.
basalt_port() {
    i=0
    while [ $i -lt 600 ]; do
        p=$(sed -n '1s|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$1" 2>/dev/null)
        [ -n "$p" ] && { echo "$p"; return 0; }
        kill -0 "$PID" 2>/dev/null || { echo "bench/profile: server exited:" >&2; cat "$TMP/err" >&2; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    echo "bench/profile: no listening line" >&2
    return 1
}

# Waits until a POST of the body to port $1 answers 200 (nginx under valgrind starts slowly).
wait_200() {
    i=0
    while [ $i -lt 600 ]; do
        curl -sf -o /dev/null -H 'Content-Type: application/json' ${KEY:+-H "Authorization: Bearer $KEY"} \
            --data-binary @"$BODY" "http://127.0.0.1:$1$PATH_" 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { echo "bench/profile: server exited" >&2; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# ---- basalt's data directory: the model uploaded, approved and aliased -----------------------
mkdir -p "$TMP/data"
"$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --threads 1 >"$TMP/out" 2>"$TMP/err" &
PID=$!
BPORT=$(basalt_port "$TMP/out")
ADMIN=$(sed -n '3s/^ *//p' "$TMP/out")
B="http://127.0.0.1:$BPORT"
bcall() {
    curl -sS -f -o "$TMP/curl.out" -H "Authorization: Bearer $ADMIN" "$@" ||
        { echo "bench/profile: $* failed: $(cat "$TMP/curl.out" 2>/dev/null)" >&2; exit 2; }
}
bcall -X POST "$B/v1/models" -d '{"name":"xgb"}'
bcall -X POST "$B/v1/models/xgb/versions?format=xgboost_json" --data-binary @"$TMP/xgb.json"
bcall -X POST "$B/v1/models/xgb/versions/1/approve"
bcall -X PUT "$B/v1/models/xgb/aliases/champion" -d '{"version":1}'
KEY=""
if [ "$AUTH" = 1 ]; then
    bcall -X POST "$B/v1/keys" -d '{"name":"profile","role":"predictor"}'
    KEY=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$TMP/curl.out")
fi
stop_pid "$PID"
PID=""
if [ "$AUTH" = 1 ]; then BFLAGS=""; else BFLAGS="--no-auth"; fi

# ---- nginx config: the fixed body of bench/predict/run.sh, one process ----------------------
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
NGINX_BODY='{"model":"xgb","version":1,"predictions":[{"label":"0","probabilities":{"0":0.687436431646347,"1":0.31256356835365295}}],"prediction_ids":["01a21dda-acb9-764a-9744-851499d305d1"]}'
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 65s;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NPORT;
        location / {
            default_type application/json;
            return 200 '$NGINX_BODY';
        }
    }
}
EOF

# Starts server $1 (basalt|nginx) under the command prefix in the remaining arguments; sets
# PID and PORT.
start() {
    name=$1
    shift
    if [ "$name" = basalt ]; then
        # shellcheck disable=SC2086
        "$@" "$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --threads 1 \
            --access-log-sample 0 $BFLAGS >"$TMP/out" 2>"$TMP/err" &
        PID=$!
        PORT=$(basalt_port "$TMP/out")
    else
        "$@" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
            >"$TMP/out" 2>"$TMP/err" &
        PID=$!
        PORT=$NPORT
    fi
    wait_200 "$PORT" || { echo "bench/profile: $name does not answer:" >&2; cat "$TMP/err" >&2; exit 2; }
}

# callgrind_annotate's function list with counts divided by N (one line per function).
per_request() {
    callgrind_annotate --threshold=100 "$1" "$2" 2>/dev/null |
        awk -v N="$N" -v self="$([ "$1" = --inclusive=no ] && echo 1 || echo 0)" '
        /PROGRAM TOTALS/ { t = $1; gsub(",", "", t); t += 0 }
        /^ *[0-9][0-9,]* \(/ && /\[/ {
            c = $1; gsub(",", "", c); c += 0; sub(/^ *[0-9,]+ \([ 0-9.%]*\) */, "")
            if (self && c >= 0.99 * t) next # thread entry points: callgrind lists them with the total
            sub(/ \[.*\]$/, ""); if (c / N >= 5) printf "%9.0f  %s\n", c / N, $0 }'
}

for name in $SERVERS; do
    # ---- instructions ----
    rm -f "$OUT/$name.callgrind"*
    start "$name" valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.callgrind" \
        --dump-instr=no --separate-threads=no
    $CLIENT "$PORT" "$PATH_" "$BODY" "$WARM" $KEY
    callgrind_control -z "$PID" >/dev/null 2>&1
    $CLIENT "$PORT" "$PATH_" "$BODY" "$N" $KEY
    callgrind_control -d "$PID" >/dev/null 2>&1
    stop_pid "$PID"
    PID=""
    # the dump taken after the load is the one with the highest part number
    f=$(ls "$OUT/$name.callgrind".* 2>/dev/null | sort -t. -k3 -n | tail -n 1)
    [ -n "$f" ] || { echo "bench/profile: no callgrind dump for $name" >&2; exit 2; }
    mv "$f" "$OUT/$name.callgrind.load"
    rm -f "$OUT/$name.callgrind" "$OUT/$name.callgrind".[0-9]*
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$OUT/$name.callgrind.load")
    [ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$OUT/$name.callgrind.load")
    {
        echo "$name: instructions per request (callgrind Ir / $N), inclusive of callees"
        per_request --inclusive=yes "$OUT/$name.callgrind.load" | head -n 70
        echo
        echo "$name: instructions per request, self"
        per_request --inclusive=no "$OUT/$name.callgrind.load" | head -n 50
    } >"$OUT/$name.annotate"
    eval "IR_$name=$ir"

    # ---- syscalls: strace attached to every thread after the warm-up ----
    if [ "$STRACE" != 0 ]; then
        start "$name"
        $CLIENT "$PORT" "$PATH_" "$BODY" "$WARM" $KEY
        tids=$(ls "/proc/$PID/task" | tr '\n' ',' | sed 's/,$//')
        strace -c -f -p "$tids" -o "$OUT/$name.strace" 2>/dev/null &
        SPID=$!
        sleep 1 # attached
        $CLIENT "$PORT" "$PATH_" "$BODY" "$N" $KEY
        kill -INT "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        stop_pid "$PID"
        PID=""
    fi
done

echo "bench/profile: one-row POST $PATH_ (XGBoost, 100 trees, 30 features), $N requests on one keep-alive connection, one server thread, auth $( [ "$AUTH" = 1 ] && echo 'on (predictor key)' || echo 'off (--no-auth)')"
awk -v b="${IR_basalt:-0}" -v n="${IR_nginx:-0}" -v N="$N" 'BEGIN {
    printf "  user-space instructions per request: basalt %.0f, nginx %.0f", b / N, n / N
    printf (b && n) ? sprintf(" (%.2fx)\n", b / n) : "\n" }'
if [ "$STRACE" != 0 ]; then
    # per-request syscalls, from the calls column of strace -c
    for name in $SERVERS; do
        awk -v N="$N" -v name="$name" '
            $1 ~ /^[0-9.]+$/ && NF >= 5 { c = $4; s = $NF; if (c / N >= 0.01) out = out sprintf(" %s %.2f", s, c / N) }
            END { printf "  syscalls per request, %-6s:%s\n", name, out }' "$OUT/$name.strace"
    done
fi
case " $SERVERS " in *" basalt "*) ;; *) exit 0 ;; esac
echo "  basalt's request path (instructions per request, inclusive of callees):"
for fn in h2o_evloop_run h2o_process_request on_req choose_request_id bs_router_match \
    bs_api_authenticate bs_api_rate_limit bs__api_model bs_serving_parse_fast \
    bs_parse_json_number bs_serving_predict bs_serving_render bs_jw_double bs_resp_body \
    h2o_send_inline record bs_serving_record; do
    awk -v fn="$fn" '$2 ~ ("[:]" fn "$") { printf "    %-24s %7d\n", fn, $1; exit }' "$OUT/basalt.annotate"
done
echo "  top functions (inclusive and self): $OUT/basalt.annotate, $OUT/nginx.annotate"
