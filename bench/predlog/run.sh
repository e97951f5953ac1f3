#!/bin/sh
# The prediction log's submit cost against the memcpy it cannot avoid, and whether the log
# keeps up at the design's predict rate (bench/predlog/predlog_bench.c against
# build/libbasalt.a; run `make` first). Files under build/bench/predlog.
# Usage: sh bench/predlog/run.sh [THREADS] [N] [RATE] [SECS]
set -eu
OUT=${BENCH_OUT:-build/bench/predlog}
CC=${CC:-cc}
mkdir -p "$OUT"
[ -f build/libbasalt.a ] || { echo "predlog/run.sh: build/libbasalt.a missing: run make" >&2; exit 1; }
PKGS="libh2o-evloop libcjson sqlite3 lmdb yaml-0.1 libcrypto libpq hiredis libcurl libnats"
$CC -std=gnu11 -O2 -g -Wall -Wextra -Werror -Isrc -D_GNU_SOURCE -pthread \
    $(pkg-config --cflags $PKGS) -o "$OUT/predlog_bench" bench/predlog/predlog_bench.c \
    build/libbasalt.a $(pkg-config --libs $PKGS) -lm -pthread
rm -rf "$OUT/log"
mkdir -p "$OUT/log"
"$OUT/predlog_bench" "$OUT/log" "${1:-2}" "${2:-200000}" "${3:-50000}" "${4:-5}" | tee "$OUT/predlog.txt"
rm -rf "$OUT/log"
