#!/bin/sh
# Events: durable publish (basalt vs NATS JetStream), trigger latency (event -> prediction)
# and job throughput (basalt vs Celery 5 on Redis): bench/events/bench.py, which starts its
# own basalt servers, nats-server and redis-server on free loopback ports and stops them.
# Builds the C load drivers http_pub.c (basalt) and js_pub.c (libnats) into BENCH_OUT.
# Invoked by `make bench` from the repository root; also runnable alone (after `make`).
#
# Knobs (environment): ROUNDS (3), DURATION (5 s), SECTIONS ("publish trigger jobs"), and
# the others listed in bench/events/bench.py. Exit status: 0 whether the bars pass or not;
# non-zero only when it could not run.
set -eu
cd "$(dirname "$0")/../.."
OUT=${BENCH_OUT:-build/bench/events}
CC=${CC:-cc}
for tool in /usr/bin/python3 nats-server redis-server pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/events: $tool not found (run scripts/deps.sh --bench)" >&2; exit 2; }
done
[ -x build/basalt ] || [ -n "${BASALT_BIN:-}" ] || { echo "bench/events: build/basalt missing: run make" >&2; exit 2; }
mkdir -p "$OUT"
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Wshadow -Werror -pthread"
# shellcheck disable=SC2086
$CC $CFLAGS -o "$OUT/http_pub" bench/events/http_pub.c
# shellcheck disable=SC2086
$CC $CFLAGS -o "$OUT/fetch_tail" bench/events/fetch_tail.c
# shellcheck disable=SC2086
$CC $CFLAGS -o "$OUT/sse_tail" bench/events/sse_tail.c
# shellcheck disable=SC2086
$CC $CFLAGS $(pkg-config --cflags libnats) -o "$OUT/js_pub" bench/events/js_pub.c $(pkg-config --libs libnats)
rm -f "$OUT/rc"
{ BENCH_OUT="$OUT" /usr/bin/python3 bench/events/bench.py 2>&1; echo $? >"$OUT/rc"; } | tee "$OUT/output.txt"
exit "$(cat "$OUT/rc")"
