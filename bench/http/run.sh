#!/bin/sh
# HTTP overhead: basalt's GET /healthz vs nginx returning the same fixed JSON
# body (the ceiling for a trivial HTTP reply), in the same run, on the same
# cores, loaded by wrk. Invoked by `make bench` from the repository root as
# `sh bench/http/run.sh`; also runnable alone. See bench/README.md.
#
# Rounds alternate basalt/nginx/basalt/nginx... and the medians are reported,
# because the machines are shared and noisy. Server CPU per request is the
# utime+stime the server's processes (nginx: master + workers; basalt: the
# process, which covers all its threads) consumed during a run, read from
# /proc/<pid>/stat before and after, divided by the requests wrk completed.
#
# Knobs (environment): BASALT_BIN (build/basalt), ROUNDS (5), DURATION (6,
# seconds per run), WARMUP (2, seconds per server before the rounds),
# CONNS (64), WRK_THREADS (2), SERVER_THREADS (2), BENCH_OUT (build/bench/http).
# Exit status: 0 whether the bars pass or not (a benchmark informs); non-zero
# only when it could not run.
set -eu
cd "$(dirname "$0")/../.."
. bench/lib.sh

BASALT_BIN=${BASALT_BIN:-build/basalt}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
SERVER_THREADS=${SERVER_THREADS:-2}
OUT=${BENCH_OUT:-build/bench/http}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
PY=/usr/bin/python3
RSS_BAR_KB=15360 # 15 MB

for tool in "$NGINX" "$WRK" "$PY"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/http: $tool not found (run scripts/deps.sh)" >&2; exit 2; }
done
[ -x "$BASALT_BIN" ] || { echo "bench/http: $BASALT_BIN not found (run make)" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/basalt-bench-http.XXXXXX")
BPID=""
NPID=""
NWORKERS=""

# Stops a pid (TERM, then KILL after ~3 s) if it is still ours and alive.

cleanup() {
    trap - EXIT INT TERM HUP
    [ -n "$WRKPID" ] && kill -TERM "$WRKPID" 2>/dev/null || true
    stop_pid "$BPID"
    stop_pid "$NPID"
    # nginx's master stops its workers; make sure none is left if it was killed.
    for w in $NWORKERS; do kill -KILL "$w" 2>/dev/null || true; done
    rm -rf "$TMP"
}
WRKPID=""
trap cleanup EXIT
trap 'echo "bench/http: interrupted" >&2; cleanup; exit 130' INT TERM HUP

CLK_TCK=$(getconf CLK_TCK)

# utime+stime (fields 14, 15 of /proc/<pid>/stat, after the ')' of comm) in ticks, summed.

# Child pids of a pid (nginx's workers), from /proc.
children() {
    $PY - "$1" <<'EOF'
import os, sys
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            st = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        if st.rsplit(")", 1)[1].split()[1] == sys.argv[1]:
            print(d, end=" ")
EOF
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }


# Checks that a URL answers 200 with the JSON body; prints the response header bytes.
check() {
    $PY - "$1" "$2" <<'EOF'
import http.client, sys
port, need_rid = int(sys.argv[1]), sys.argv[2] == "1"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("GET", "/healthz")
r = c.getresponse()
body = r.read()
ok = r.status == 200 and body == b'{"status":"ok"}' and \
    (r.getheader("content-type") or "").startswith("application/json") and \
    (not need_rid or r.getheader("x-request-id"))
if not ok:
    sys.exit("unexpected reply on port %d: %d %r %r" % (port, r.status, r.getheaders(), body))
hdr = sum(len(k) + len(v) + 4 for k, v in r.getheaders()) + len("HTTP/1.1 200 OK\r\n\r\n")
print(hdr)
EOF
}

# ---- start nginx -------------------------------------------------------------------------
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $SERVER_THREADS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 65s;
    keepalive_requests 100000000; # h2o has no per-connection request cap; match it
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NPORT reuseport;
        location = /healthz {
            default_type application/json;
            return 200 '{"status":"ok"}';
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx/stdout" 2>&1 &
NPID=$!

# ---- start basalt ------------------------------------------------------------------------
mkdir -p "$TMP/data"
"$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --access-log-sample 0 \
    --threads "$SERVER_THREADS" >"$TMP/basalt.out" 2>"$TMP/basalt.err" &
BPID=$!

BPORT=""
i=0
while [ $i -lt 100 ]; do
    if [ -z "$BPORT" ]; then
        BPORT=$(sed -n '1s|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$TMP/basalt.out" 2>/dev/null)
    fi
    NWORKERS=$(children "$NPID")
    set -- $NWORKERS
    [ -n "$BPORT" ] && [ $# -ge "$SERVER_THREADS" ] && break
    kill -0 "$BPID" 2>/dev/null || { echo "bench/http: basalt exited:" >&2; cat "$TMP/basalt.err" >&2; exit 2; }
    kill -0 "$NPID" 2>/dev/null || { echo "bench/http: nginx exited:" >&2; cat "$TMP/nginx/error.log" "$TMP/nginx/stdout" >&2; exit 2; }
    sleep 0.1
    i=$((i + 1))
done
[ -n "$BPORT" ] || { echo "bench/http: basalt did not report its port" >&2; exit 2; }
set -- $NWORKERS
[ $# -ge "$SERVER_THREADS" ] || { echo "bench/http: nginx workers did not start" >&2; exit 2; }

sleep 0.5
IDLE_RSS_KB=$(rss_kb "$BPID")
NGINX_IDLE_RSS_KB=0
for p in $NPID $NWORKERS; do NGINX_IDLE_RSS_KB=$((NGINX_IDLE_RSS_KB + $(rss_kb "$p"))); done

B_HDR=$(check "$BPORT" 1) || exit 2
N_HDR=$(check "$NPORT" 0) || exit 2

echo "bench/http: GET /healthz, wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds alternating, $(nproc) cores shared by wrk and server"
echo "  basalt $BASALT_BIN --threads $SERVER_THREADS on :$BPORT (reply headers $B_HDR B); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') $SERVER_THREADS workers on :$NPORT (reply headers $N_HDR B)"

# ---- runs --------------------------------------------------------------------------------
# One wrk run against name/port; appends "rps p50_us p99_us cpu_us_per_req requests errors" to $OUT/<name>.runs.
run_one() {
    name=$1 port=$2 dur=$3 record=$4
    if [ "$name" = basalt ]; then pids=$BPID; else pids="$NPID $NWORKERS"; fi
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    "$WRK" -t"$WRK_THREADS" -c"$CONNS" -d"${dur}s" --latency "http://127.0.0.1:$port/healthz" \
        >"$TMP/wrk.out" 2>&1 &
    WRKPID=$!
    wait "$WRKPID" || { echo "bench/http: wrk failed:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    WRKPID=""
    for p in $pids; do
        kill -0 "$p" 2>/dev/null || { echo "bench/http: $name (pid $p) died during the run" >&2; exit 2; }
    done
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    [ "$record" = 1 ] || return 0
    cat "$TMP/wrk.out" >>"$OUT/$name.wrk.log"
    parse_wrk "$TMP/wrk.out" $((c1 - c0)) "$CLK_TCK" >>"$OUT/$name.runs" || { echo "bench/http: cannot parse wrk output:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    tail -n 1 "$OUT/$name.runs" | awk -v name="$name" -v r="$5" \
        '{ printf "  round %s %-6s %9s req/s  p50 %6s us  p99 %6s us  %6s us CPU/req%s\n", r, name, $1, $2, $3, $4, ($6 ? "  ERRORS " $6 : "") }'
}

rm -f "$OUT/basalt.runs" "$OUT/nginx.runs" "$OUT/basalt.wrk.log" "$OUT/nginx.wrk.log"
if [ "$WARMUP" -gt 0 ]; then
    run_one basalt "$BPORT" "$WARMUP" 0 0
    run_one nginx "$NPORT" "$WARMUP" 0 0
fi
r=1
while [ $r -le "$ROUNDS" ]; do
    run_one basalt "$BPORT" "$DURATION" 1 $r
    run_one nginx "$NPORT" "$DURATION" 1 $r
    r=$((r + 1))
done
LOADED_RSS_KB=$(rss_kb "$BPID")

# ---- report ------------------------------------------------------------------------------
median() { # column, file
    awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for name in basalt nginx; do
    f="$OUT/$name.runs"
    eval "${name}_rps=$(median 1 "$f") ${name}_p50=$(median 2 "$f") ${name}_p99=$(median 3 "$f") ${name}_cpu=$(median 4 "$f")"
    eval "${name}_err=$(awk '{ s += $6 } END { print s + 0 }' "$f")"
done
# Per-round paired ratios (basalt run r / nginx run r): their spread shows how much of a
# difference between the medians is noise.
SPREAD=$(paste -d' ' "$OUT/basalt.runs" "$OUT/nginx.runs" | awk '
    { t = $1 / $7; c = $4 / $10
      if (NR == 1 || t < tmin) tmin = t; if (NR == 1 || t > tmax) tmax = t
      if (NR == 1 || c < cmin) cmin = c; if (NR == 1 || c > cmax) cmax = c }
    END { printf "%.2f %.2f %.2f %.2f", tmin, tmax, cmin, cmax }')
# shellcheck disable=SC2154
awk -v spread="$SPREAD" -v br="$basalt_rps" -v b50="$basalt_p50" -v b99="$basalt_p99" -v bc="$basalt_cpu" -v be="$basalt_err" \
    -v nr="$nginx_rps" -v n50="$nginx_p50" -v n99="$nginx_p99" -v nc="$nginx_cpu" -v ne="$nginx_err" \
    -v rss="$IDLE_RSS_KB" -v lrss="$LOADED_RSS_KB" -v nrss="$NGINX_IDLE_RSS_KB" -v bar="$RSS_BAR_KB" 'BEGIN {
    print "medians:"
    printf "  %-6s %9.0f req/s  p50 %6.0f us  p99 %6.0f us  %6.2f us CPU/req  errors %d\n", "basalt", br, b50, b99, bc, be
    printf "  %-6s %9.0f req/s  p50 %6.0f us  p99 %6.0f us  %6.2f us CPU/req  errors %d\n", "nginx", nr, n50, n99, nc, ne
    tr = br / nr; cr = bc / nc
    print "ratios basalt/nginx:"
    split(spread, sp, " ")
    printf "  throughput    %.2fx   (per-round pairs %.2f-%.2f)\n", tr, sp[1], sp[2]
    printf "  CPU/request   %.2fx   (per-round pairs %.2f-%.2f)\n", cr, sp[3], sp[4]
    printf "  p50 latency   %.2fx   p99 latency %.2fx\n", b50 / n50, b99 / n99
    printf "RSS: basalt idle %.1f MB, after load %.1f MB; nginx idle (master+workers) %.1f MB\n", rss / 1024, lrss / 1024, nrss / 1024
    print "bars:"
    printf "  %s throughput >= 1.00x nginx        (%.2fx)\n", (tr >= 1.0 && !be) ? "PASS" : "FAIL", tr
    printf "  %s CPU/request <= 1.00x nginx       (%.2fx)\n", (cr <= 1.0) ? "PASS" : "FAIL", cr
    printf "  %s basalt idle RSS <= 15 MB          (%.1f MB)\n", (rss <= bar) ? "PASS" : "FAIL", rss / 1024
}'
echo "raw runs and wrk output: $OUT/{basalt,nginx}.runs, $OUT/{basalt,nginx}.wrk.log"
exit 0
