#!/bin/sh
# Installs every Debian package that basalt's build and tests need (`make run`,
# `make test`); with --bench also what the benchmarks' peers need (`make bench`).
# Runs apt-get update first when anything is missing; safe to re-run.
set -eu

PACKAGES="
build-essential pkg-config clang libclang-rt-14-dev
libh2o-evloop-dev libcjson-dev libsqlite3-dev liblmdb-dev libyaml-dev libssl-dev
libcmocka-dev
python3 python3-pytest python3-requests python3-numpy python3-scipy python3-pandas
python3-sklearn python3-xgboost curl
python3-prometheus-client prometheus python3-jsonschema
"
BENCH_PACKAGES="
nginx wrk libxgboost-dev python3-fastapi uvicorn python3-uvloop python3-httptools
"
# The OpenAPI tests run npm tools (Makefile: npm-deps); Debian's Node.js only when no
# node is on PATH (a newer one installed another way is used as it is).
if ! command -v node >/dev/null 2>&1; then
    PACKAGES="$PACKAGES nodejs npm"
fi
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES $BENCH_PACKAGES"
fi

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -z "$missing" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "deps.sh: installing:$missing" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
