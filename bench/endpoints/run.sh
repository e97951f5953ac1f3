#!/bin/sh
# What the endpoint machinery costs on the hot path: one-row POST
# /v1/endpoints/{name}/predict through a 90/10 canary with 20 % shadow traffic and every
# prediction logged (the prediction log on the embedded segment log, sync 1s), against
# POST /v1/models/{name}/predict of the same model with no logging, in the same basalt
# process, rounds alternating, loaded by wrk on the same cores. Invoked by `make bench`
# from the repository root as `sh bench/endpoints/run.sh`; also runnable alone.
#
# The model is bench/predict's XGBoost binary:logistic booster (100 trees, depth 6, 30
# features), uploaded three times as versions 1, 2, 3 of model "xgb": routes v1 90 % and
# v2 10 %, shadow v3 on 20 % of requests. After the runs, /metrics must show no dropped
# prediction-log records, and the records logged must equal the endpoint requests wrk
# completed (plus one per shadow run): the log sustains the predict rate.
#
# Server CPU per request is the utime+stime of the basalt process from /proc/<pid>/stat
# before and after a run, divided by the requests wrk completed (shadow runs and the log
# writer included for the endpoint).
#
# Knobs (environment): BASALT_BIN (build/basalt), ROUNDS (3), DURATION (9, seconds per run),
# WARMUP (2), CONNS (64), WRK_THREADS (2), SERVER_THREADS (2), BENCH_OUT
# (build/bench/endpoints). Exit status: 0 whether the bar passes or not (a benchmark
# informs); non-zero only when it could not run.
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
OUT=${BENCH_OUT:-build/bench/endpoints}
WRK=${WRK:-wrk}
PY=/usr/bin/python3

for tool in "$WRK" "$PY" curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/endpoints: $tool not found (run scripts/deps.sh)" >&2; exit 2; }
done
[ -x "$BASALT_BIN" ] || { echo "bench/endpoints: $BASALT_BIN not found (run make)" >&2; exit 2; }
$PY -c 'import sklearn, xgboost' 2>/dev/null ||
    { echo "bench/endpoints: python3-sklearn or python3-xgboost missing (run scripts/deps.sh)" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/basalt-bench-endpoints.XXXXXX")
BPID="" WRKPID=""
cleanup() {
    trap - EXIT INT TERM HUP
    [ -n "$WRKPID" ] && kill -TERM "$WRKPID" 2>/dev/null || true
    stop_pid "$BPID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "bench/endpoints: interrupted" >&2; cleanup; exit 130' INT TERM HUP
CLK_TCK=$(getconf CLK_TCK)

# ---- model and body ------------------------------------------------------------------------
$PY bench/predict/train.py "$TMP" >/dev/null || { echo "bench/endpoints: training failed" >&2; exit 2; }
{ echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  printf 'wrk.body = [==[%s]==]\n' "$(cat "$TMP/xgb.body.json")"; } >"$TMP/xgb.lua"

# ---- start basalt --------------------------------------------------------------------------
mkdir -p "$TMP/data"
"$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --access-log-sample 0 \
    --threads "$SERVER_THREADS" --no-auth >"$TMP/basalt.out" 2>"$TMP/basalt.err" &
BPID=$!
BPORT=""
i=0
while [ $i -lt 300 ] && [ -z "$BPORT" ]; do
    BPORT=$(sed -n '1s|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$TMP/basalt.out" 2>/dev/null)
    kill -0 "$BPID" 2>/dev/null || { echo "bench/endpoints: basalt exited:" >&2; cat "$TMP/basalt.err" >&2; exit 2; }
    [ -n "$BPORT" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$BPORT" ] || { echo "bench/endpoints: basalt did not report its port" >&2; exit 2; }
B="http://127.0.0.1:$BPORT"
bcall() { # method path [curl args...]: fails the bench on a non-2xx
    meth=$1 path=$2
    shift 2
    curl -sS -f -o "$TMP/curl.out" -X "$meth" "$B$path" "$@" ||
        { echo "bench/endpoints: basalt $meth $path failed: $(cat "$TMP/curl.out" 2>/dev/null)" >&2; exit 2; }
}
bcall POST /v1/models -d '{"name":"xgb"}'
for v in 1 2 3; do
    bcall POST '/v1/models/xgb/versions?format=xgboost_json' --data-binary @"$TMP/xgb.json"
    bcall POST "/v1/models/xgb/versions/$v/approve"
done
bcall PUT /v1/models/xgb/aliases/champion -d '{"version":1}'
bcall PUT /v1/endpoints/canary -d '{"model":"xgb","routes":[{"version":1,"weight":90},{"version":2,"weight":10}],"shadow":[{"version":3,"fraction":0.2}],"logging":{"sample_rate":1.0}}'

# ---- one reply of each, checked: the endpoint answers what the model answers -----------------
$PY - "$TMP" "$BPORT" <<'EOF' || exit 2
import http.client, json, sys
tmp, port = sys.argv[1], int(sys.argv[2])
def post(path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit("bench/endpoints: %s answered %d: %r" % (path, r.status, data[:300]))
    return json.loads(data)
body = open("%s/xgb.body.json" % tmp, "rb").read()
m, e = post("/v1/models/xgb/predict", body), post("/v1/endpoints/canary/predict", body)
if m["predictions"] != e["predictions"] or e.get("endpoint") != "canary" or e.get("version") not in (1, 2):
    sys.exit("bench/endpoints: endpoint and model replies differ: %r vs %r" % (e, m))
print("  check: endpoint reply (version %d, variant %s) equals the model's" % (e["version"], e["variant"]))
EOF

metric_sum() { # name: the sum of a counter's samples in /metrics
    curl -sS "$B/metrics" | awk -v n="$1" 'index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") { s += $NF } END { printf "%.0f\n", s + 0 }'
}

echo "bench/endpoints: one-row POST /v1/endpoints/canary/predict (routes v1 90/v2 10, shadow v3 20 %, all logged) vs POST /v1/models/xgb/predict (no log), wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds alternating, $(nproc) cores shared by wrk and basalt --threads $SERVER_THREADS"

# ---- runs ----------------------------------------------------------------------------------
run_one() { # name path duration record round
    name=$1 path=$2 dur=$3 record=$4
    c0=$(cpu_ticks "$BPID")
    "$WRK" -t"$WRK_THREADS" -c"$CONNS" -d"${dur}s" --latency -s "$TMP/xgb.lua" "$B$path" >"$TMP/wrk.out" 2>&1 &
    WRKPID=$!
    wait "$WRKPID" || { echo "bench/endpoints: wrk failed:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    WRKPID=""
    c1=$(cpu_ticks "$BPID")
    kill -0 "$BPID" 2>/dev/null || { echo "bench/endpoints: basalt died during the run" >&2; cat "$TMP/basalt.err" >&2; exit 2; }
    [ "$record" = 1 ] || return 0
    cat "$TMP/wrk.out" >>"$OUT/$name.wrk.log"
    parse_wrk "$TMP/wrk.out" $((c1 - c0)) "$CLK_TCK" >>"$OUT/$name.runs" || { echo "bench/endpoints: cannot parse wrk output:" >&2; cat "$TMP/wrk.out" >&2; exit 2; }
    tail -n 1 "$OUT/$name.runs" | awk -v name="$name" -v r="$5" \
        '{ printf "  round %s %-8s %8s req/s  p50 %6s us  p99 %7s us  %7s us CPU/req%s\n", r, name, $1, $2, $3, $4, ($6 ? "  ERRORS " $6 : "") }'
}
rm -f "$OUT/model.runs" "$OUT/endpoint.runs" "$OUT/model.wrk.log" "$OUT/endpoint.wrk.log"
[ "$WARMUP" -gt 0 ] && { run_one model /v1/models/xgb/predict "$WARMUP" 0 0; run_one endpoint /v1/endpoints/canary/predict "$WARMUP" 0 0; }
sleep 2 # the warm-up's records reach the log before the counters are read
logged0=$(metric_sum basalt_prediction_log_records_total)
shadow0=$(metric_sum basalt_endpoint_shadow_requests_total)
served0=$(metric_sum basalt_endpoint_requests_total)
r=1
while [ $r -le "$ROUNDS" ]; do
    run_one model /v1/models/xgb/predict "$DURATION" 1 $r
    run_one endpoint /v1/endpoints/canary/predict "$DURATION" 1 $r
    r=$((r + 1))
done
sleep 3 # drain period + sync interval: every record submitted is appended by now
logged=$(( $(metric_sum basalt_prediction_log_records_total) - logged0 ))
shadows=$(( $(metric_sum basalt_endpoint_shadow_requests_total) - shadow0 ))
dropped=$(metric_sum basalt_prediction_log_dropped_total)
# the server's count (wrk leaves out the requests in flight when a run ends)
served=$(( $(metric_sum basalt_endpoint_requests_total) - served0 ))

# ---- report --------------------------------------------------------------------------------
median() { # column file
    awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for n in model endpoint; do
    f="$OUT/$n.runs"
    echo "$n $(median 1 "$f") $(median 2 "$f") $(median 3 "$f") $(median 4 "$f") $(awk '{ s += $6 } END { print s + 0 }' "$f")"
done | awk -v served="$served" -v logged="$logged" -v shadows="$shadows" -v dropped="$dropped" '
    { rps[$1] = $2; p50[$1] = $3; p99[$1] = $4; cpu[$1] = $5; err[$1] = $6 }
    END {
        print "medians:"
        for (i = 1; i <= 2; i++) {
            n = (i == 1) ? "model" : "endpoint"
            printf "  %-8s %8.0f req/s  p50 %6.0f us  p99 %7.0f us  %7.2f us CPU/req  errors %d\n", n, rps[n], p50[n], p99[n], cpu[n], err[n]
        }
        printf "prediction log: %d endpoint requests served, %d shadow runs, %d records logged, %d dropped\n", served, shadows, logged, dropped
        t = rps["endpoint"] / rps["model"]
        printf "ratio endpoint/model: throughput %.3fx  CPU/request %.3fx  p50 %.3fx  p99 %.3fx\n", t, cpu["endpoint"] / cpu["model"], p50["endpoint"] / p50["model"], p99["endpoint"] / p99["model"]
        print "bars:"
        printf "  %s endpoint throughput >= 0.8x model predict (%.3fx)\n", (t >= 0.8 && !err["endpoint"]) ? "PASS" : "FAIL", t
        printf "  %s the log sustains the rate: no drops, records = requests + shadow runs (%d dropped, %d of %d)\n", (dropped == 0 && logged == served + shadows) ? "PASS" : "FAIL", dropped, logged, served + shadows
    }'
echo "raw runs and wrk output: $OUT/{model,endpoint}.runs, .wrk.log"
exit 0
