#!/bin/sh
# The log's durable append path without HTTP (bench/log/log_bench.c against build/libbasalt.a,
# run `make` first): 32 threads x batches of 100 x 200-byte records with ids and dedup keys,
# acknowledged after fsync; then the same acknowledged after write (sync_interval 1 s).
# The files go under build/bench/log (the repository's disk). Usage: sh bench/log/run.sh [SECONDS]
set -eu
OUT=${BENCH_OUT:-build/bench/log}
CC=${CC:-cc}
SECS=${1:-5}
mkdir -p "$OUT"
[ -f build/libbasalt.a ] || { echo "log/run.sh: build/libbasalt.a missing: run make" >&2; exit 1; }
PKGS="libh2o-evloop libcjson sqlite3 lmdb yaml-0.1 libcrypto libpq hiredis libcurl libnats"
$CC -std=gnu11 -O2 -g -Wall -Wextra -Werror -Isrc -D_GNU_SOURCE -pthread \
    $(pkg-config --cflags $PKGS) -o "$OUT/log_bench" bench/log/log_bench.c \
    build/libbasalt.a $(pkg-config --libs $PKGS) -lm -pthread
echo "== log appends, $(nproc) cores, $(df -T "$OUT" | awk 'NR==2{print $2}') at $OUT"
"$OUT/log_bench" "$OUT" 32 100 200 "$SECS" 0 | tee "$OUT/log.txt"
"$OUT/log_bench" "$OUT" 32 100 200 "$SECS" 1000 | tee -a "$OUT/log.txt"
"$OUT/log_bench" "$OUT" 1 1 200 "$SECS" 0 | tee -a "$OUT/log.txt"
