#!/bin/sh
# One-row online predict over HTTP: basalt vs FastAPI + uvicorn (scikit-learn /
# XGBoost, the stack a user would otherwise deploy) vs nginx returning a fixed
# JSON body of the same size (the ceiling for a trivial HTTP reply), in the
# same run, on the same cores, loaded by wrk. Invoked by `make bench` from the
# repository root as `sh bench/predict/run.sh`; also runnable alone.
#
# Models (bench/predict/train.py): a scikit-learn Pipeline(StandardScaler,
# LogisticRegression) on breast_cancer (30 features), exported for basalt by
# tools/export_sklearn.py; an XGBoost binary:logistic booster (100 trees,
# max_depth 6, 30 features), the same save_model JSON file on both sides.
# FastAPI (bench/predict/fastapi_app.py): pydantic body, async handlers,
# predict_proba / Booster.inplace_predict, uvicorn --workers 2 with uvloop and
# httptools, no access log, one XGBoost/OpenMP thread per worker.
#
# Before loading, one reply of each server and model is checked: basalt's and
# FastAPI's probabilities must agree within 1e-5.
#
# Rounds alternate basalt-lr, fastapi-lr, basalt-xgb, fastapi-xgb, nginx, ...
# and the medians are reported (the machines are shared and noisy). Server CPU
# per request is the utime+stime of all the server's processes (basalt: the
# process; FastAPI: the uvicorn supervisor and its workers; nginx: master and
# workers) from /proc/<pid>/stat before and after a run, divided by the
# requests wrk completed.
#
# Knobs (environment): BASALT_BIN (build/basalt), ROUNDS (3), DURATION (9,
# seconds per run), WARMUP (2), CONNS (64), WRK_THREADS (2), SERVER_THREADS (2:
# basalt threads, uvicorn workers, nginx workers), BENCH_OUT (build/bench/predict).
# Exit status: 0 whether the bars pass or not (a benchmark informs); non-zero
# only when it could not run.
set -eu
cd "$(dirname "$0")/../.."
. bench/lib.sh

BASALT_BIN=${BASALT_BIN:-build/basalt}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-9}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
SERVER_THREADS=${SERVER_THREADS:-2}
OUT=${BENCH_OUT:-build/bench/predict}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
PY=/usr/bin/python3

for tool in "$NGINX" "$WRK" "$PY" curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/predict: $tool not found (run scripts/deps.sh)" >&2; exit 2; }
done
[ -x "$BASALT_BIN" ] || { echo "bench/predict: $BASALT_BIN not found (run make)" >&2; exit 2; }
$PY -c 'import fastapi, uvicorn, sklearn, xgboost' 2>/dev/null ||
    { echo "bench/predict: python3-fastapi, uvicorn, python3-sklearn or python3-xgboost missing (run scripts/deps.sh)" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/basalt-bench-predict.XXXXXX")
BPID="" NPID="" NWORKERS="" FPID="" FWORKERS="" WRKPID=""

# Stops a pid (TERM, then KILL after ~3 s) if it is still alive.

cleanup() {
    trap - EXIT INT TERM HUP
    [ -n "$WRKPID" ] && kill -TERM "$WRKPID" 2>/dev/null || true
    stop_pid "$BPID"
    stop_pid "$FPID"
    stop_pid "$NPID"
    # the supervisors stop their workers; make sure none is left if one was killed
    for w in $NWORKERS $FWORKERS; do kill -KILL "$w" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "bench/predict: interrupted" >&2; cleanup; exit 130' INT TERM HUP

CLK_TCK=$(getconf CLK_TCK)

# utime+stime (fields 14, 15 of /proc/<pid>/stat, after the ')' of comm) in ticks, summed.

# All descendants of a pid (children, grandchildren...), space-separated.
descendants() {
    for c in $(pgrep -P "$1" 2>/dev/null || true); do
        printf '%s ' "$c"
        descendants "$c"
    done
}


# ---- models and bodies ---------------------------------------------------------------------
$PY bench/predict/train.py "$TMP" || { echo "bench/predict: training failed" >&2; exit 2; }
for m in lr xgb; do
    # a Lua long string: the body holds no ']==]'
    { echo 'wrk.method = "POST"'
      echo 'wrk.headers["Content-Type"] = "application/json"'
      printf 'wrk.body = [==[%s]==]\n' "$(cat "$TMP/$m.body.json")"; } >"$TMP/$m.lua"
done

# ---- start basalt --------------------------------------------------------------------------
mkdir -p "$TMP/data"
"$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --access-log-sample 0 \
    --threads "$SERVER_THREADS" --no-auth >"$TMP/basalt.out" 2>"$TMP/basalt.err" &
BPID=$!

# ---- start FastAPI + uvicorn ---------------------------------------------------------------
FPORT=$(free_port)
BENCH_MODELS=$TMP OMP_NUM_THREADS=1 $PY -m uvicorn fastapi_app:app --app-dir bench/predict \
    --host 127.0.0.1 --port "$FPORT" --workers "$SERVER_THREADS" --no-access-log --log-level warning \
    >"$TMP/fastapi.out" 2>&1 &
FPID=$!

# ---- start nginx: a fixed body, the size of basalt's XGBoost reply ---------------------------
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
NGINX_BODY='{"model":"xgb","version":1,"predictions":[{"label":"0","probabilities":{"0":0.687436431646347,"1":0.31256356835365295}}],"prediction_ids":["01a21dda-acb9-764a-9744-851499d305d1"]}'
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $SERVER_THREADS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
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
        listen 127.0.0.1:$NPORT reuseport;
        location / {
            default_type application/json;
            return 200 '$NGINX_BODY';
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx/stdout" 2>&1 &
NPID=$!

# ---- wait for all three --------------------------------------------------------------------
BPORT="" fok=""
i=0
while [ $i -lt 300 ]; do
    [ -n "$BPORT" ] || BPORT=$(sed -n '1s|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$TMP/basalt.out" 2>/dev/null)
    [ -n "$fok" ] || { curl -sf "http://127.0.0.1:$FPORT/healthz" >/dev/null 2>&1 && fok=1; } || true
    NWORKERS=$(pgrep -P "$NPID" 2>/dev/null | tr '\n' ' ' || true)
    set -- $NWORKERS
    [ -n "$BPORT" ] && [ -n "$fok" ] && [ $# -ge "$SERVER_THREADS" ] && break
    kill -0 "$BPID" 2>/dev/null || { echo "bench/predict: basalt exited:" >&2; cat "$TMP/basalt.err" >&2; exit 2; }
    kill -0 "$FPID" 2>/dev/null || { echo "bench/predict: uvicorn exited:" >&2; cat "$TMP/fastapi.out" >&2; exit 2; }
    kill -0 "$NPID" 2>/dev/null || { echo "bench/predict: nginx exited:" >&2; cat "$TMP/nginx/error.log" "$TMP/nginx/stdout" >&2; exit 2; }
    sleep 0.1
    i=$((i + 1))
done
[ -n "$BPORT" ] || { echo "bench/predict: basalt did not report its port" >&2; exit 2; }
[ -n "$fok" ] || { echo "bench/predict: FastAPI did not answer /healthz:" >&2; cat "$TMP/fastapi.out" >&2; exit 2; }
set -- $NWORKERS
[ $# -ge "$SERVER_THREADS" ] || { echo "bench/predict: nginx workers did not start" >&2; exit 2; }
FWORKERS=$(descendants "$FPID")
set -- $FWORKERS
[ $# -ge "$SERVER_THREADS" ] || { echo "bench/predict: uvicorn workers did not start ($FWORKERS)" >&2; exit 2; }

# ---- load the models into basalt -----------------------------------------------------------
B="http://127.0.0.1:$BPORT"
bcall() { # method path [curl args...]: fails the bench on a non-2xx
    meth=$1 path=$2
    shift 2
    curl -sS -f -o "$TMP/curl.out" -X "$meth" "$B$path" "$@" ||
        { echo "bench/predict: basalt $meth $path failed: $(cat "$TMP/curl.out" 2>/dev/null)" >&2; exit 2; }
}
bcall POST /v1/models -d '{"name":"lr"}'
bcall POST /v1/models -d '{"name":"xgb"}'
bcall POST '/v1/models/lr/versions?format=basalt_json' --data-binary @"$TMP/lr.basalt.json"
bcall POST '/v1/models/xgb/versions?format=xgboost_json' --data-binary @"$TMP/xgb.json"
for m in lr xgb; do
    bcall POST "/v1/models/$m/versions/1/approve"
    bcall PUT "/v1/models/$m/aliases/champion" -d '{"version":1}'
done

# ---- one reply of each, checked ------------------------------------------------------------
$PY - "$TMP" "$BPORT" "$FPORT" "$NPORT" <<'EOF' || exit 2
import http.client, json, sys
tmp, bport, fport, nport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit("bench/predict: port %d %s answered %d: %r" % (port, path, r.status, data[:300]))
    return json.loads(data)

for m in ("lr", "xgb"):
    body = open("%s/%s.body.json" % (tmp, m), "rb").read()
    path = "/v1/models/%s/predict" % m
    b, f = post(bport, path, body), post(fport, path, body)
    pb, pf = b["predictions"][0]["probabilities"], f["predictions"][0]["probabilities"]
    if sorted(pb) != sorted(pf) or any(abs(pb[k] - pf[k]) > 1e-5 for k in pb) or \
            b["predictions"][0]["label"] != f["predictions"][0]["label"]:
        sys.exit("bench/predict: %s predictions differ: basalt %r, FastAPI %r" % (m, b, f))
    print("  check %-3s basalt and FastAPI agree: P(1) = %.9f vs %.9f" % (m, pb["1"], pf["1"]))
n = post(nport, "/v1/models/xgb/predict", open("%s/xgb.body.json" % tmp, "rb").read())
assert n["predictions"][0]["probabilities"]["1"] > 0, n
EOF

echo "bench/predict: one-row POST /v1/models/{lr,xgb}/predict, wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds alternating, $(nproc) cores shared by wrk and server"
echo "  basalt $BASALT_BIN --threads $SERVER_THREADS; FastAPI $($PY -c 'import fastapi; print(fastapi.__version__)') + uvicorn $($PY -c 'import uvicorn; print(uvicorn.__version__)') --workers $SERVER_THREADS (uvloop, httptools), scikit-learn $($PY -c 'import sklearn; print(sklearn.__version__)'), xgboost $($PY -c 'import xgboost; print(xgboost.__version__)'); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') $SERVER_THREADS workers, fixed ${#NGINX_BODY}-byte body"

# ---- runs ----------------------------------------------------------------------------------
# One wrk run: name (server-model) port model duration record round.
# Appends "rps p50_us p99_us cpu_us_per_req requests errors" to $OUT/<name>.runs.
run_one() {
    name=$1 port=$2 model=$3 dur=$4 record=$5
    case $name in
    basalt-*) pids=$BPID ;;
    fastapi-*) pids="$FPID $FWORKERS" ;;
    *) pids="$NPID $NWORKERS" ;;
    esac
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    "$WRK" -t"$WRK_THREADS" -c"$CONNS" -d"${dur}s" --latency -s "$TMP/$model.lua" \
        "http://127.0.0.1:$port/v1/models/$model/predict" >"$TMP/wrk.out" 2>&1 &
    WRKPID=$!
    wait "$WRKPID" || { echo "bench/predict: wrk failed:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    WRKPID=""
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    for p in $pids; do
        kill -0 "$p" 2>/dev/null || { echo "bench/predict: $name (pid $p) died during the run" >&2; exit 2; }
    done
    [ "$record" = 1 ] || return 0
    cat "$TMP/wrk.out" >>"$OUT/$name.wrk.log"
    parse_wrk "$TMP/wrk.out" $((c1 - c0)) "$CLK_TCK" >>"$OUT/$name.runs" || { echo "bench/predict: cannot parse wrk output:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    tail -n 1 "$OUT/$name.runs" | awk -v name="$name" -v r="$6" \
        '{ printf "  round %s %-11s %8s req/s  p50 %6s us  p99 %7s us  %7s us CPU/req%s\n", r, name, $1, $2, $3, $4, ($6 ? "  ERRORS " $6 : "") }'
}

SETS="basalt-lr:$BPORT:lr fastapi-lr:$FPORT:lr basalt-xgb:$BPORT:xgb fastapi-xgb:$FPORT:xgb nginx:$NPORT:xgb"
for s in $SETS; do rm -f "$OUT/${s%%:*}.runs" "$OUT/${s%%:*}.wrk.log"; done
run_set() { # duration record round
    for s in $SETS; do
        IFS=: read -r name port model <<EOS
$s
EOS
        run_one "$name" "$port" "$model" "$1" "$2" "$3"
    done
}
[ "$WARMUP" -gt 0 ] && run_set "$WARMUP" 0 0
r=1
while [ $r -le "$ROUNDS" ]; do
    run_set "$DURATION" 1 $r
    r=$((r + 1))
done

# ---- report --------------------------------------------------------------------------------
median() { # column file
    awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
best() { # column file max|min
    awk -v c="$1" -v w="$3" 'NR == 1 || (w == "max" ? $c > b : $c < b) { b = $c } END { print b }' "$2"
}
SUMMARY=""
for s in $SETS; do
    name=${s%%:*}
    f="$OUT/$name.runs"
    SUMMARY="$SUMMARY$name $(median 1 "$f") $(median 2 "$f") $(median 3 "$f") $(median 4 "$f") \
$(awk '{ s += $6 } END { print s + 0 }' "$f") $(best 1 "$f" max) $(best 4 "$f" min)
"
done
printf '%s' "$SUMMARY" | awk '
    { rps[$1] = $2; p50[$1] = $3; p99[$1] = $4; cpu[$1] = $5; err[$1] = $6; brps[$1] = $7; bcpu[$1] = $8; order[NR] = $1 }
    END {
        print "medians:"
        for (i = 1; i <= NR; i++) {
            n = order[i]
            printf "  %-11s %8.0f req/s  p50 %6.0f us  p99 %7.0f us  %7.2f us CPU/req  errors %d\n", n, rps[n], p50[n], p99[n], cpu[n], err[n]
        }
        print "ratios (medians):"
        for (j = 1; j <= 2; j++) {
            m = (j == 1) ? "lr" : "xgb"; b = "basalt-" m; f = "fastapi-" m
            printf "  %-3s basalt/FastAPI: throughput %6.2fx  CPU/request %.4fx (1/%.1f)  p50 %.3fx  p99 %.3fx\n", m,
                rps[b] / rps[f], cpu[b] / cpu[f], cpu[f] / cpu[b], p50[b] / p50[f], p99[b] / p99[f]
        }
        printf "  xgb basalt/nginx fixed body: throughput %.2fx  CPU/request %.2fx\n", rps["basalt-xgb"] / rps["nginx"], cpu["basalt-xgb"] / cpu["nginx"]
        print "bars (basalt medians against FastAPI'"'"'s best round):"
        for (j = 1; j <= 2; j++) {
            m = (j == 1) ? "lr" : "xgb"; b = "basalt-" m; f = "fastapi-" m
            t = rps[b] / brps[f]; c = bcpu[f] / cpu[b]
            printf "  %s %-3s throughput >= 10x FastAPI        (%.2fx: %.0f vs best %.0f req/s)\n", (t >= 10 && !err[b]) ? "PASS" : "FAIL", m, t, rps[b], brps[f]
            printf "  %s %-3s CPU/request <= 1/20 of FastAPI   (1/%.1f: %.2f vs best %.2f us)\n", (c >= 20) ? "PASS" : "FAIL", m, c, cpu[b], bcpu[f]
        }
        t = rps["basalt-xgb"] / rps["nginx"]
        printf "  %s xgb throughput >= 0.8x nginx fixed body (%.2fx)\n", (t >= 0.8 && !err["basalt-xgb"]) ? "PASS" : "FAIL", t
    }'
echo "raw runs and wrk output: $OUT/<server>-<model>.runs, .wrk.log"
exit 0
