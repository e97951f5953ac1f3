#!/bin/sh
# Scale-out: one-row predict on a replica backed by PostgreSQL + Redis (rate limiting on)
# vs the embedded server, registry write latency on PostgreSQL vs SQLite, and the delay
# until an alias moved through one replica is served by another (bench/scaleout/bench.py;
# it starts its own PostgreSQL and Redis through tests/pg_server.py and
# tests/redis_server.py). Then the rate-limit scheme measurement (ratelimit.sh).
# Invoked by `make bench` from the repository root; also runnable alone.
#
# Knobs (environment): BASALT_BIN (build/basalt), ROUNDS (3), DURATION (8), CONNS (64),
# WRITES (100), FLIPS (200), BENCH_OUT (build/bench/scaleout). Exit status: 0 whether the
# bar passes or not; non-zero only when it could not run.
set -eu
cd "$(dirname "$0")/../.."
for tool in wrk /usr/bin/python3 /usr/lib/postgresql/15/bin/initdb redis-server; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/scaleout: $tool not found (run scripts/deps.sh --bench)" >&2; exit 2; }
done
/usr/bin/python3 bench/scaleout/bench.py
if [ -f bench/scaleout/ratelimit.sh ]; then
    sh bench/scaleout/ratelimit.sh
fi
