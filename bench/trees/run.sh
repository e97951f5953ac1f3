#!/bin/sh
# Tree-ensemble predict: basalt's runtime (src/ml/trees.c) vs libxgboost's C
# predictor, same model, same rows, same process. Invoked by `make bench` from
# the repository root. Trains the model with Debian's python3-xgboost, builds
# bench/trees/bench_trees.c against src/ml (+ src/base) and libxgboost, runs it.
set -eu
OUT=${BENCH_OUT:-build/bench/trees}
CC=${CC:-cc}
mkdir -p "$OUT/obj"
/usr/bin/python3 bench/trees/train.py "$OUT"
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Werror -Isrc -D_GNU_SOURCE -pthread"
# a private archive of src/ml and src/base, so only what the bench uses gets linked
rm -f "$OUT/libml.a" "$OUT"/obj/*.o
for src in src/ml/*.c src/base/*.c; do
    obj="$OUT/obj/$(echo "$src" | tr / _).o"
    $CC $CFLAGS $(pkg-config --cflags libcjson 2>/dev/null) -c "$src" -o "$obj"
done
ar rcs "$OUT/libml.a" "$OUT"/obj/*.o
XGB_LIBS=$(pkg-config --libs xgboost 2>/dev/null || echo -lxgboost)
$CC $CFLAGS -o "$OUT/bench_trees" bench/trees/bench_trees.c "$OUT/libml.a" -lcjson $XGB_LIBS -lm
"$OUT/bench_trees" "$OUT/model.json" "$OUT/rows.bin"
