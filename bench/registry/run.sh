#!/bin/sh
# Registry scaling: uploads/s and the latency of a description-only PATCH as the
# number of versions grows (100, 1k, 10k), and the peak RSS per MB uploaded for 20
# concurrent 12 MB uploads. Invoked by `make bench` from the repository root as
# `sh bench/registry/run.sh`; also runnable alone. See bench/README.md.
#
# No peer runs here: the registry a user would otherwise pick (MLflow's) is not
# packaged for Debian and PyPI is unreachable from these machines, so the figures
# are basalt's alone, to compare across commits.
#
# Knobs (environment): BASALT_BIN (build/basalt), SIZES ("100 1000 10000"), MODELS
# (10), FILL_THREADS (4), MEASURE_UPLOADS (50), PATCHES (100), BIG_UPLOADS (20),
# BIG_MB (12), PHASES ("scale uploads"), BENCH_OUT (build/bench/registry). Exit status: 0 unless it could not run.
set -eu
cd "$(dirname "$0")/../.."
. bench/lib.sh

BASALT_BIN=${BASALT_BIN:-build/basalt}
OUT=${BENCH_OUT:-build/bench/registry}
PY=/usr/bin/python3
[ -x "$BASALT_BIN" ] || { echo "bench/registry: $BASALT_BIN not found (run make)" >&2; exit 2; }
$PY -c 'import requests' 2>/dev/null || { echo "bench/registry: python3-requests missing (run scripts/deps.sh)" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/basalt-bench-registry.XXXXXX")
BPID=""
cleanup() {
    trap - EXIT INT TERM HUP
    stop_pid "$BPID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "bench/registry: interrupted" >&2; cleanup; exit 130' INT TERM HUP

# Starts basalt on a fresh data directory; sets BPID and URL.
start() {
    rm -rf "$TMP/data"
    # A generous idle timeout: on a busy machine a 12 MB body can take seconds to arrive.
    "$BASALT_BIN" serve --listen 127.0.0.1:0 --data "$TMP/data" --no-auth --threads 2 --idle-timeout-ms 300000 \
        --access-log-sample 0 --log-level warn "$@" >"$TMP/basalt.out" 2>"$OUT/basalt.err" &
    BPID=$!
    i=0
    BPORT=""
    while [ -z "$BPORT" ] && [ $i -lt 200 ]; do
        kill -0 "$BPID" 2>/dev/null || { echo "bench/registry: basalt exited" >&2; cat "$OUT/basalt.err" >&2; exit 2; }
        BPORT=$(sed -n '1s|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$TMP/basalt.out" 2>/dev/null)
        sleep 0.05
        i=$((i + 1))
    done
    [ -n "$BPORT" ] || { echo "bench/registry: basalt did not start" >&2; exit 2; }
    URL=http://127.0.0.1:$BPORT
}

echo "bench/registry: $BASALT_BIN, $(nproc) cores shared by the client and the server"
PHASES=${PHASES:-scale uploads}
for phase in $PHASES; do
    case $phase in
    scale) echo "registry scaling (uploads of a small linear model, sequential; PATCH of a description):" ;;
    uploads) echo "upload memory (default upload_memory_bytes; 503 overloaded answers are retried after Retry-After):" ;;
    *) echo "bench/registry: unknown phase '$phase'" >&2; exit 2 ;;
    esac
    start
    $PY bench/registry/bench.py "$phase" "$URL" "$BPID" | tee "$OUT/$phase.txt"
    stop_pid "$BPID"
    BPID=""
done
