#!/bin/sh
# Shared rate limits: local slices of a global Redis budget (basalt's scheme) vs one
# EVALSHA round trip per decision, one thread each, against a redis-server this script
# starts on a free port (no persistence) and stops. Builds bench_ratelimit.c against
# build/libbasalt.a (run `make` first). Usage: sh bench/scaleout/ratelimit.sh [SECONDS]
set -eu
PY=${PY:-/usr/bin/python3}
OUT=${BENCH_OUT:-build/bench/scaleout}
CC=${CC:-cc}
SECS=${1:-3}
mkdir -p "$OUT"
[ -f build/libbasalt.a ] || { echo "ratelimit.sh: build/libbasalt.a missing: run make" >&2; exit 1; }
PKGS="libh2o-evloop libcjson sqlite3 lmdb yaml-0.1 libcrypto libpq hiredis"
$CC -std=gnu11 -O2 -g -Wall -Wextra -Werror -Isrc -D_GNU_SOURCE -pthread \
    $(pkg-config --cflags $PKGS) -o "$OUT/bench_ratelimit" bench/scaleout/bench_ratelimit.c \
    build/libbasalt.a $(pkg-config --libs $PKGS) -lm -pthread
echo "== rate limit decisions, one thread, redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on loopback"
$PY tests/redis_server.py -- sh -c '"$0" "$BASALT_TEST_REDIS_URL" "$1"' "$OUT/bench_ratelimit" "$SECS" \
    | tee "$OUT/ratelimit.txt"
