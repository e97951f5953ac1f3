/*
 * The model interface: every runtime (XGBoost JSON trees, basalt model JSON
 * linear / tree ensemble / MLP with a preprocessing chain) loads from bytes,
 * describes its input and output schema, and predicts a batch of rows.
 *
 * Rows are dense row-major arrays of double, one slot per input feature in
 * schema order:
 *   - float / int features: the value;
 *   - bool features: 0.0 or 1.0;
 *   - category features: the index of the category in the feature's
 *     `categories` list, or -1.0 for a category the list does not contain
 *     (only passed when the feature's `accepts_unknown` is set);
 *   - a missing value: NaN (only passed for a feature whose `accepts_missing`
 *     is set; otherwise the caller applies the feature's default or rejects it).
 * Callers (src/serving) validate JSON against the schema and build the rows;
 * runtimes never see JSON at predict time.
 *
 * Outputs are row-major, `n_outputs` doubles per row:
 *   - regression: the predicted value(s);
 *   - classification: per-class probabilities in `labels` order (binary
 *     classifiers report 2 columns: [P(class 0), P(class 1)]).
 *
 * Thread safety: a loaded model is immutable; bs_ml_predict may be called
 * from any number of threads at once.
 */
#ifndef BS_ML_ML_H
#define BS_ML_ML_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Caps on what a model file may declare (checked by every loader). */
#define BS_ML_MAX_FEATURES 100000
#define BS_ML_MAX_OUTPUTS 10000
#define BS_ML_MAX_TREES 100000
#define BS_ML_MAX_NODES (1 << 26) /* total nodes over all trees */
#define BS_ML_MAX_CATEGORIES 100000
#define BS_ML_MAX_LAYER_WIDTH 65536

typedef enum {
    BS_ML_FLOAT = 0,
    BS_ML_INT,
    BS_ML_BOOL,
    BS_ML_CATEGORY,
} bs_ml_ftype_t;

typedef struct {
    char *name;
    bs_ml_ftype_t type;
    int has_min, has_max;
    double min, max;
    char **categories; /* allowed categories (CATEGORY only), n_categories entries */
    int n_categories;
    int accepts_unknown; /* CATEGORY: the model encodes an unseen category itself */
    int accepts_missing; /* a missing value (NaN) is handled: tree default directions, an imputer */
    int required;        /* 1: a value must be given (null allowed only if model handles missing) */
    int has_default;     /* 1: an omitted value is replaced by default_value */
    double default_value;
} bs_ml_feature_t;

typedef enum {
    BS_ML_REGRESSION = 0,
    BS_ML_CLASSIFICATION,
} bs_ml_task_t;

typedef struct {
    int n_features;
    bs_ml_feature_t *features;
    bs_ml_task_t task;
    int n_outputs;  /* classification: number of classes; regression: outputs per row */
    char **labels;  /* classification: n_outputs class labels; NULL for regression */
} bs_ml_schema_t;

typedef struct bs_ml_model bs_ml_model_t;

/* Formats, by their API name (`?format=`). */
#define BS_ML_FORMAT_XGBOOST_JSON "xgboost_json"
#define BS_ML_FORMAT_BASALT_JSON "basalt_json"

/*
 * Loads a model from bytes (borrowed; not kept). format is one of the
 * BS_ML_FORMAT_* names. Returns a new model owned by the caller, or NULL with
 * err set: BS_EINVAL with the loader's reason for a malformed, inconsistent or
 * over-limit artifact (never crashes, loops or over-allocates on any input),
 * BS_EINVAL for an unknown format, BS_ENOMEM on allocation failure.
 */
bs_ml_model_t *bs_ml_load(const char *format, const void *bytes, size_t len, bs_err_t *err);

/*
 * Guesses the format of a model file from its top-level JSON keys (bytes
 * borrowed): BS_ML_FORMAT_XGBOOST_JSON if the top-level object has a
 * "learner" key, BS_ML_FORMAT_BASALT_JSON if it has "basalt_model", NULL
 * otherwise (not a JSON object, or neither key). Scans without building a
 * tree; O(len) time, O(1) memory; never reads past len.
 */
const char *bs_ml_detect_format(const void *bytes, size_t len);

/* Frees a model; NULL is a no-op. */
void bs_ml_model_free(bs_ml_model_t *m);

/* The model's own schema (borrowed, lives as long as the model). */
const bs_ml_schema_t *bs_ml_model_schema(const bs_ml_model_t *m);

/* 1 if every input takes missing values (each feature's accepts_missing). */
int bs_ml_model_handles_missing(const bs_ml_model_t *m);

/* Short runtime name for metrics and metadata: "trees", "linear", "mlp". */
const char *bs_ml_model_kind(const bs_ml_model_t *m);

/* Approximate bytes held by the model, for the memory budget. */
size_t bs_ml_model_memory(const bs_ml_model_t *m);

/* 1 if the runtime gains from batching rows (MLP); trees and linear run inline. */
int bs_ml_model_prefers_batching(const bs_ml_model_t *m);

/*
 * Predicts n_rows rows (row-major, schema.n_features doubles each; borrowed)
 * into out (n_rows * schema.n_outputs doubles, caller-allocated).
 * Returns 0, or BS_EINVAL if a value the runtime cannot use reaches it
 * (e.g. NaN for a model that does not handle missing values), BS_ENOMEM.
 * Thread-safe; allocates only for scratch larger than a small stack buffer.
 */
int bs_ml_predict(const bs_ml_model_t *m, const double *rows, size_t n_rows, double *out,
                  bs_err_t *err);

/* Frees the arrays of a schema (not the struct itself). */
void bs_ml_schema_deinit(bs_ml_schema_t *s);

#endif
