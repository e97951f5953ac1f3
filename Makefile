# basalt — one binary. `make`, `make run`, `make test`, `make bench`, `make fuzz`.
# BUILD selects the output folder; SANITIZE=address,undefined builds with sanitizers.

BUILD    ?= build
CC       ?= cc
PY       ?= /usr/bin/python3
PKGS     := libh2o-evloop libcjson sqlite3 lmdb yaml-0.1 libcrypto libpq hiredis libcurl libnats
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_SHA  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
NPROC    := $(shell nproc 2>/dev/null || echo 2)
# -jN for the build steps of run/test unless the caller gave -j (tests themselves run in order).
J        := $(if $(filter -j%,$(MAKEFLAGS)),,-j$(NPROC))
# The commit is compiled into version.o alone. $(BUILD)/git-sha holds it and is rewritten
# (here, as the Makefile is read) only when HEAD moves, so an unchanged tree neither
# recompiles version.o nor relinks the binary (`make check-rebuild`).
GIT_SHA_STAMP := $(BUILD)/git-sha
$(shell mkdir -p $(BUILD) && [ "$$(cat $(GIT_SHA_STAMP) 2>/dev/null)" = "$(GIT_SHA)" ] || \
        echo "$(GIT_SHA)" > $(GIT_SHA_STAMP))

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Werror
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -Isrc -DH2O_USE_EPOLL=1 -D_GNU_SOURCE -pthread \
            -DBS_VERSION='"$(VERSION)"' \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread

ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

SRCS     := $(shell find src -name '*.c' | sort)
MAIN_SRC := src/cli/main.c
LIB_SRCS := $(filter-out $(MAIN_SRC),$(SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS:= $(wildcard tests/unit/test_*.c)
UNIT_BINS:= $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
# Test drivers that are not cmocka suites: programs the API tests run (tests/api/test_stats_oracle.py
# runs stats_oracle on stdin/stdout against scipy / scikit-learn / statsmodels).
DRIVER_BINS := $(BUILD)/tests/stats_oracle

.PHONY: all deps run test unit api api-asan asan fuzz fuzz-replay bench clean format check-rebuild

all: $(BUILD)/basalt

# What building and running need (`make run`); `make test` adds the test toolchain and
# `make bench` the benchmarks' peers (scripts/deps.sh --run | --test | --bench).
deps:
	@./scripts/deps.sh --test

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/src/base/version.o: src/base/version.c $(GIT_SHA_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -DBS_GIT_SHA='"$(GIT_SHA)"' -c $< -o $@

$(BUILD)/libbasalt.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/basalt: $(BUILD)/obj/$(MAIN_SRC:.c=.o) $(BUILD)/libbasalt.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libbasalt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libbasalt.a $(LDLIBS) -lcmocka

$(DRIVER_BINS): $(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libbasalt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libbasalt.a $(LDLIBS)

# Stays in the foreground; Ctrl-C (SIGINT) stops the server. Builds on every core unless
# -j was given.
run:
	@./scripts/deps.sh --run
	@$(MAKE) --no-print-directory $(J) $(BUILD)/basalt
	$(BUILD)/basalt serve --data ./data

# Under tests/pg_server.py (a PostgreSQL server for the store tests: BASALT_TEST_PG_URL);
# test_kv also against a redis-server of its own (tests/redis_server.py), test_log_nats
# against a nats-server with JetStream of its own (tests/nats_server.py).
unit: $(UNIT_BINS) $(DRIVER_BINS)
	@$(PY) tests/pg_server.py -- sh -c 'set -e; for t in $(UNIT_BINS); do echo "== $$t"; case $$t in \
	  */test_kv) $(PY) tests/redis_server.py -- $$t;; \
	  */test_log_nats) $(PY) tests/nats_server.py -- $$t;; *) $$t;; esac; done'

# The API suite twice: on the embedded stores (SQLite, files), and with every server a
# replica on PostgreSQL + Redis (tests/api/conftest.py: BASALT_TEST_BACKEND=postgres; tests
# about the embedded files are marked `embedded` and deselected; the files that start their
# own PostgreSQL and Redis ran in the first pass already).
# Files whose subject does not touch a store (HTTP framing and limits, the model runtimes
# against scikit-learn and XGBoost, dynamic batching, the OpenAPI document, the statistics
# driver) ran in the first pass and are not run again on PostgreSQL.
OWN_BACKENDS := tests/api/test_postgres.py tests/api/test_replicas.py tests/api/test_readme_replicas.py
NO_STORE     := $(addprefix tests/api/,test_strictness.py test_limits.py test_ml_sklearn.py \
    test_ml_xgboost.py test_batching.py test_conformance.py test_stats_oracle.py)
PG_API_ARGS  := -m "not embedded" $(addprefix --ignore=,$(OWN_BACKENDS) $(NO_STORE))

# Two pytest-xdist workers, a test file each at a time (module fixtures stay in one worker):
# most API tests wait on a server, not on the CPU, so two run in about 60 % of the time of
# one. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -x -p no:cacheprovider $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)

api: $(BUILD)/basalt $(DRIVER_BINS)
	BASALT_BIN=$(abspath $(BUILD)/basalt) $(PYTEST) tests/api
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(abspath $(BUILD)/basalt) \
	    $(PYTEST) $(PG_API_ARGS) tests/api

# The sanitizer pass's API tests, a representative subset that keeps `make test` near 25
# minutes on two cores: on the embedded stores every parser (HTTP framing and limits, JSON
# bodies, model files, CloudEvents and JSON lines, YAML apply, expressions, SSE) and every
# subsystem (auth, registry, predict, KServe, topics, consumers, triggers, webhooks, jobs,
# the outbound client, the OpenAPI document, endpoints and their revisions, the prediction
# log and its payload logger; the monitor, statistics and rollouts through their unit
# tests), and on PostgreSQL + Redis + JetStream the registry, auth, predict and topics
# suites on a replica. The suites left out (the
# scikit-learn/XGBoost oracles, the kill -9 loops, the README runs, multi-replica set-ups,
# offload and lifecycle, the endpoint load and rollout controller suites)
# run without sanitizers in `make api`.
ASAN_SUITES := $(addprefix tests/api/,test_foundation.py test_strictness.py test_limits.py \
    test_auth.py test_registry.py test_predict.py test_kserve.py test_model_loading.py \
    test_topics.py test_sse.py test_apply.py test_triggers.py test_webhooks.py test_jobs.py \
    test_conformance.py test_cli.py test_config.py test_endpoints.py test_predictions.py)
PG_ASAN_SUITES := tests/api/test_registry.py tests/api/test_auth.py tests/api/test_predict.py \
    tests/api/test_topics.py

api-asan: $(BUILD)/basalt
	BASALT_BIN=$(abspath $(BUILD)/basalt) $(PYTEST) $(ASAN_SUITES)
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(abspath $(BUILD)/basalt) \
	    $(PYTEST) -m "not embedded" $(PG_ASAN_SUITES)

# npm tools the API tests run on /openapi.json (redocly lint, openapi-typescript, tsc),
# pinned by tests/api/npm/package-lock.json and installed once into build/npm (shared by
# every BUILD; `npm ci` again only when the lock file changes).
NPM_DIR  := build/npm
.PHONY: npm-deps
npm-deps: $(NPM_DIR)/.installed
api: npm-deps
api-asan: npm-deps
test: npm-deps

$(NPM_DIR)/.installed: tests/api/npm/package.json tests/api/npm/package-lock.json | deps
	@command -v npm >/dev/null || { echo "npm not found: scripts/deps.sh installs it" >&2; exit 1; }
	@mkdir -p $(NPM_DIR)
	cp tests/api/npm/package.json tests/api/npm/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The sanitizer pass: same unit and API tests on an ASan+UBSan build.
asan:
	$(MAKE) $(J) BUILD=build-asan SANITIZE=address,undefined build-asan/basalt $(UNIT_BINS:$(BUILD)/%=build-asan/%)
	$(MAKE) BUILD=build-asan SANITIZE=address,undefined unit api-asan

# An unchanged tree builds nothing: `make -q` finds every target up to date (it used to
# recompile version.o and relink the binary every time).
check-rebuild: $(BUILD)/basalt
	@$(MAKE) --no-print-directory -q $(BUILD)/basalt || { \
	  echo "check-rebuild: a second make of an unchanged tree would run:"; \
	  $(MAKE) --no-print-directory -n $(BUILD)/basalt; exit 1; }
	@echo "== check-rebuild: an unchanged tree builds nothing"

test: deps
	$(MAKE) $(J) all $(UNIT_BINS) $(DRIVER_BINS)
	$(MAKE) check-rebuild
	$(MAKE) unit
	$(MAKE) api
	$(MAKE) $(J) $(FUZZ_BINS)
	$(MAKE) fuzz-replay
	$(MAKE) asan

# libFuzzer targets: fuzz/fuzz_*.c, each linked against one clang build of the library
# (build-fuzz/libbasalt.a: every source compiled once with coverage + ASan/UBSan).
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:fuzz/%.c=build-fuzz/%)
FUZZ_OBJS := $(LIB_SRCS:%.c=build-fuzz/obj/%.o)
FUZZ_CFLAGS := -O1 -g -std=gnu11 -Isrc -DH2O_USE_EPOLL=1 -D_GNU_SOURCE -pthread \
    -DBS_VERSION='"$(VERSION)"' -DBS_GIT_SHA='"$(GIT_SHA)"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null)

build-fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

build-fuzz/libbasalt.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

build-fuzz/%: fuzz/%.c build-fuzz/libbasalt.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build-fuzz/libbasalt.a $(LDLIBS)

fuzz-replay: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); echo "== replay $$n"; \
	  $$f -runs=0 fuzz/corpus/$$n >/dev/null 2>build-fuzz/$$n.log || { cat build-fuzz/$$n.log; exit 1; }; \
	  ls fuzz/corpus/$$n | while read c; do $$f fuzz/corpus/$$n/$$c >>build-fuzz/$$n.log 2>&1 || { cat build-fuzz/$$n.log; exit 1; }; done; done

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build-fuzz/corpus-$$n; \
	  $$f -max_total_time=$${FUZZ_SECONDS:-60} build-fuzz/corpus-$$n fuzz/corpus/$$n; done

bench: all
	@./scripts/deps.sh --bench
	@set -e; for b in bench/*/run.sh; do echo "== $$b"; sh $$b; done

format:
	clang-format -i $(SRCS) $(wildcard src/*/*.h) $(UNIT_SRCS)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) build-fuzz/obj -name '*.d' 2>/dev/null)
