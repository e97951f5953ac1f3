#!/bin/sh
# Installs the Debian packages basalt needs, by what you are about to do:
#   deps.sh [--run]   building and running it (`make run`; the default)
#   deps.sh --test    the above and the test toolchain (`make test`: cmocka, clang for the
#                     fuzz targets, pytest, numpy/scipy/pandas, scikit-learn, XGBoost, curl)
#   deps.sh --bench   the above and the benchmarks' peers (`make bench`)
#   deps.sh [MODE] --list   prints the mode's packages, one a line, and installs nothing
# --test (and --bench) also create the unprivileged system user basalt-test: the tests
# run PostgreSQL as it, because PostgreSQL refuses to run as root.
# Only what is missing is installed, after an apt-get update; safe to re-run.
# To add a package, append it to the list of the first mode that needs it.
set -eu

RUN_PACKAGES="
build-essential pkg-config
libh2o-evloop-dev libcjson-dev libsqlite3-dev liblmdb-dev libyaml-dev libssl-dev
libpq-dev libhiredis-dev libcurl4-openssl-dev libnats-dev
"
TEST_PACKAGES="
clang libclang-rt-14-dev libcmocka-dev curl
python3 python3-pytest python3-pytest-xdist python3-requests python3-numpy python3-scipy python3-pandas
python3-sklearn python3-xgboost python3-statsmodels
python3-prometheus-client prometheus python3-jsonschema
postgresql redis-server nginx nats-server
"
BENCH_PACKAGES="
wrk libxgboost-dev python3-fastapi uvicorn python3-uvloop python3-httptools
python3-celery python3-redis strace
"

mode=--run list=""
for a in "$@"; do
    case "$a" in
    --run | --test | --bench) mode="$a" ;;
    --list) list=1 ;;
    *)
        echo "usage: scripts/deps.sh [--run | --test | --bench] [--list]" >&2
        exit 2
        ;;
    esac
done
case "$mode" in
--run) PACKAGES="$RUN_PACKAGES" ;;
--test) PACKAGES="$RUN_PACKAGES $TEST_PACKAGES" ;;
--bench) PACKAGES="$RUN_PACKAGES $TEST_PACKAGES $BENCH_PACKAGES" ;;
esac

# The OpenAPI tests run npm tools (Makefile: npm-deps); Debian's Node.js only when no
# node is on PATH (a newer one installed another way is used as it is).
if [ "$mode" != --run ] && ! command -v node >/dev/null 2>&1; then
    PACKAGES="$PACKAGES nodejs npm"
fi

if [ -n "$list" ]; then
    for p in $PACKAGES; do echo "$p"; done
    exit 0
fi

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

# The user the test harness runs PostgreSQL as when the tests run as root (tests/pg_server.py).
test_user() {
    if [ "$mode" != --run ] && [ "$(id -u)" -eq 0 ] && ! id basalt-test >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin basalt-test
    fi
}

if [ -z "$missing" ]; then
    test_user
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "deps.sh: installing:$missing" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
test_user
