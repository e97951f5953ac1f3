/*
 * Internals shared by the files of src/ml: the runtime vtable behind
 * bs_ml_model_t, and the flat-array tree ensemble that both the XGBoost JSON
 * loader and the basalt model JSON loader build.
 */
#ifndef BS_ML_ML_INT_H
#define BS_ML_ML_INT_H

#include "ml/ml.h"

typedef struct bs__ml_vtable {
    const char *kind; /* "trees", "linear", "mlp" */
    int (*predict)(const void *impl, const double *rows, size_t n_rows, double *out, bs_err_t *err);
    void (*free)(void *impl);
    size_t (*memory)(const void *impl);
    int handles_missing;
    int prefers_batching;
    /* Optional (NULL: none). Run once by bs__ml_model_new before the model is
     * published: validates impl and builds whatever the runtime precomputes
     * (the tree runtime compiles its fast node layout here). 0 or a BS_E* code. */
    int (*prepare)(void *impl, bs_err_t *err);
} bs__ml_vtable_t;

struct bs_ml_model {
    const bs__ml_vtable_t *vt;
    void *impl;            /* owned; freed by vt->free */
    bs_ml_schema_t schema; /* owned */
};

/* Wraps a runtime into a model; takes ownership of impl and of schema's arrays
 * (also on failure: they are freed and *schema is zeroed). Runs vt->prepare
 * if set; returns NULL with err set (its error, or BS_ENOMEM). */
bs_ml_model_t *bs__ml_model_new(const bs__ml_vtable_t *vt, void *impl, bs_ml_schema_t *schema,
                                bs_err_t *err);

/* Loaders (bytes borrowed). */
bs_ml_model_t *bs__ml_load_xgboost_json(const void *bytes, size_t len, bs_err_t *err);
bs_ml_model_t *bs__ml_load_basalt_json(const void *bytes, size_t len, bs_err_t *err);

/* ---- flat-array tree ensemble (trees.c) ------------------------------------------------- */

/*
 * A node is internal when feature >= 0: the input value x (cast to float, as
 * XGBoost and scikit-learn both do) goes left when `x < threshold` (split
 * rule BS__TREE_LT, XGBoost) or `x <= threshold` (BS__TREE_LE, scikit-learn);
 * a missing value (NaN) goes to `default_left ? left : right`. A leaf
 * (feature < 0) holds leaf_width values starting at leaf_values[value_offset].
 * Child indices are absolute indices into the ensemble's node array and are
 * validated at build time to point strictly forward within their own tree, so
 * a walk always terminates. Tree t owns the nodes [tree_root[t], tree_root[t+1])
 * (the last tree ends at n_nodes): tree_root[0] == 0, roots strictly
 * increasing, and every node has at most one parent.
 */
typedef struct {
    int32_t feature;
    int32_t left, right;
    uint32_t value_offset; /* leaves only */
    double threshold;
    uint8_t default_left;
} bs__tree_node_t;

typedef enum {
    BS__TREE_LT = 0, /* XGBoost: go left if x < threshold */
    BS__TREE_LE,     /* scikit-learn: go left if x <= threshold */
} bs__tree_split_rule_t;

typedef enum {
    BS__TREE_IDENTITY = 0, /* raw sums (regression, reg:squarederror) */
    BS__TREE_SIGMOID,      /* binary: p1 = sigmoid(sum); outputs [1-p1, p1] */
    BS__TREE_SOFTMAX,      /* multiclass: softmax over the n_groups sums */
    BS__TREE_EXP,          /* count:poisson */
    BS__TREE_NORMALIZE,    /* random forest classifier: average of leaf class distributions */
    BS__TREE_SIGMOID_RAW,  /* reg:logistic: one output, sigmoid(sum) */
} bs__tree_transform_t;

typedef struct {
    int n_features;
    int n_trees;
    int n_groups;     /* sums kept per row: 1, or one per class */
    int leaf_width;   /* 1 (each tree adds to tree_group[t]) or n_groups (vector leaves) */
    int n_outputs;    /* columns written per row (2 for a sigmoid binary classifier) */
    bs__tree_split_rule_t split_rule;
    bs__tree_transform_t transform;
    double scale;           /* each tree's contribution is multiplied by this (1/n_trees to average) */
    double *base;           /* n_groups initial sums (base_score, init estimator) */
    int32_t *tree_root;     /* n_trees: index of each tree's root node */
    int32_t *tree_group;    /* n_trees: group each tree adds to (leaf_width == 1) */
    bs__tree_node_t *nodes; /* n_nodes */
    int64_t n_nodes;
    double *leaf_values;
    int64_t n_leaf_values;
    /* -- added after the first version; zero keeps the original behaviour -- */
    /* 1: XGBoost arithmetic: leaf values, base and sums are float32, trees are
     * added in order, transforms run in float32 (bit-identical to XGBoost's
     * CPU predictor). 0: double sums (scikit-learn). */
    int float32_sums;
    /* The compiled layout predict walks; built by bs__tree_ensemble_prepare
     * (bs__tree_vtable.prepare), owned, freed by bs__tree_ensemble_free. */
    struct bs__tree_fast *fast;
} bs__tree_ensemble_t;

/* Validates an ensemble built by a loader (child ranges, forward-only links,
 * features < n_features, offsets in range, groups in range). 0 or BS_EINVAL. */
int bs__tree_ensemble_validate(const bs__tree_ensemble_t *e, bs_err_t *err);

/* Validates e, then compiles the fast layout into e->fast (children of a node
 * made adjacent, breadth-first per tree, float thresholds, leaves as
 * self-loops). bs__tree_vtable.prepare calls it, so a loader that wraps its
 * ensemble with bs__ml_model_new(&bs__tree_vtable, ...) needs nothing more.
 * Idempotent. 0, BS_EINVAL (validation) or BS_ENOMEM. */
int bs__tree_ensemble_prepare(bs__tree_ensemble_t *e, bs_err_t *err);

/* Frees the arrays and the struct; NULL is a no-op. */
void bs__tree_ensemble_free(bs__tree_ensemble_t *e);

/* The runtime vtable for a tree ensemble (impl is a bs__tree_ensemble_t *). */
extern const bs__ml_vtable_t bs__tree_vtable;

#endif
