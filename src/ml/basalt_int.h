/*
 * Internals of the basalt model JSON runtime (docs/model-format.md): the
 * compiled preprocessing chain (preprocess.c), the linear and MLP estimators
 * (linear.c, mlp.c) and the pipeline runtime that composes preprocessing with
 * one estimator (preprocess.c). basalt_json.c parses a model file into these
 * structures; nothing here sees JSON.
 *
 * Every structure is immutable once built, so predict runs from any number of
 * threads at once. All arrays are malloc'ed and owned by the enclosing struct.
 */
#ifndef BS_ML_BASALT_INT_H
#define BS_ML_BASALT_INT_H

#include "ml/ml_int.h"

/* ---- preprocessing (preprocess.c) -------------------------------------------------------- */

typedef enum {
    BS__PREP_IMPUTE = 0, /* NaN -> fill[i] */
    BS__PREP_STANDARD,   /* (x - a[i]) / b[i]           (StandardScaler: mean_, scale_) */
    BS__PREP_MINMAX,     /* x * a[i] + b[i], then clip  (MinMaxScaler: scale_, min_) */
    BS__PREP_ONEHOT,     /* category index -> n_cat[i] indicator columns */
} bs__prep_kind_t;

typedef struct {
    bs__prep_kind_t kind;
    int width_in, width_out;
    double *a, *b;        /* width_in values (impute: a = fill) */
    int32_t *n_cat;       /* ONEHOT: categories per input position */
    int ignore_unknown;   /* ONEHOT: -1 (unknown category) encodes as all zeros */
    int clip;             /* MINMAX: clip to [clip_lo, clip_hi] */
    double clip_lo, clip_hi;
} bs__prep_step_t;

typedef struct {
    int n_cols;
    int32_t *cols; /* input feature index of each group column */
    int n_steps;
    bs__prep_step_t *steps;
    int width_out;  /* columns this group contributes to the estimator input */
    int out_offset; /* where they start */
    int max_width;  /* widest intermediate vector of the group */
} bs__prep_group_t;

typedef struct {
    int identity;       /* no preprocessing: the row is the estimator input */
    int n_inputs;       /* raw row width (schema features) */
    int n_groups;
    bs__prep_group_t *groups;
    int width_out;      /* estimator input width */
    int max_width;      /* widest intermediate vector over all groups */
    int32_t *n_cat;     /* n_inputs: categories of a category input, else 0 */
    uint8_t *unknown_ok;/* n_inputs: -1 is a legal value of this category input */
    int32_t *out_src;   /* width_out: input feature each estimator column derives from */
    const bs_ml_feature_t *features; /* borrowed from the model schema, for messages */
} bs__prep_t;

/* Transforms one raw row into the estimator input `out` (width_out doubles), using
 * `scratch` (2 * max_width doubles). Returns 0, or BS_EINVAL for a value the chain
 * cannot encode (a category index out of range, an unknown or missing category
 * reaching a one-hot encoder). `row_index` only labels messages. */
int bs__prep_apply(const bs__prep_t *p, const double *row, double *out, double *scratch,
                   size_t row_index, bs_err_t *err);
void bs__prep_deinit(bs__prep_t *p);
size_t bs__prep_memory(const bs__prep_t *p);

/* ---- linear estimator (linear.c) --------------------------------------------------------- */

typedef enum {
    BS__LINK_IDENTITY = 0, /* regression: outputs = rows of coef */
    BS__LINK_LOGISTIC,     /* binary: one row, outputs [1 - p, p], p = sigmoid(z) */
    BS__LINK_SOFTMAX,      /* multinomial: softmax over the rows */
    BS__LINK_OVR,          /* one-vs-rest: sigmoid per row, normalised to sum 1 */
} bs__link_t;

typedef struct {
    int n_in;
    int n_rows;        /* rows of coef (one per class or target; 1 for binary logistic) */
    int n_outputs;     /* columns written per prediction */
    bs__link_t link;
    double *coef;      /* n_rows * n_in, row-major */
    double *intercept; /* n_rows */
} bs__linear_t;

/* One row: x (n_in) -> out (n_outputs); z is scratch of n_rows doubles. */
void bs__linear_predict_row(const bs__linear_t *m, const double *x, double *out, double *z);
void bs__linear_free(bs__linear_t *m);
size_t bs__linear_memory(const bs__linear_t *m);

/* ---- multi-layer perceptron (mlp.c) ------------------------------------------------------ */

typedef enum {
    BS__ACT_IDENTITY = 0,
    BS__ACT_RELU,
    BS__ACT_TANH,
    BS__ACT_LOGISTIC,
    BS__ACT_SOFTMAX, /* output layer only */
} bs__act_t;

typedef struct {
    int n_in, n_out;
    double *w; /* n_out * n_in: unit-major (row j holds the weights into unit j) */
    double *b; /* n_out */
} bs__mlp_layer_t;

typedef struct {
    int n_in;
    int n_layers;
    bs__mlp_layer_t *layers;
    bs__act_t hidden;
    bs__act_t output;
    int n_outputs; /* last layer width, or 2 for a one-unit logistic (binary) output */
    int max_width; /* widest layer (including the input) */
} bs__mlp_t;

/* One row: x (n_in) -> out (n_outputs); scratch holds 2 * max_width doubles. */
void bs__mlp_predict_row(const bs__mlp_t *m, const double *x, double *out, double *scratch);
void bs__mlp_free(bs__mlp_t *m);
size_t bs__mlp_memory(const bs__mlp_t *m);

/* ---- pipeline runtime: preprocessing + one estimator (preprocess.c) ---------------------- */

typedef enum {
    BS__EST_LINEAR = 0,
    BS__EST_TREES,
    BS__EST_MLP,
} bs__est_kind_t;

typedef struct {
    bs__prep_t prep;
    bs__est_kind_t est_kind;
    bs__linear_t *linear;
    bs__tree_ensemble_t *trees;
    bs__mlp_t *mlp;
    int n_outputs;
    int est_nan_ok; /* the estimator itself copes with NaN (trees) */
} bs__pipeline_t;

/* The vtable for a pipeline; kind and flags follow the estimator and imputers. */
const bs__ml_vtable_t *bs__pipeline_vtable(bs__est_kind_t kind, int handles_missing);
void bs__pipeline_free(void *impl);

#endif
