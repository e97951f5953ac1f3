/*
 * The tree-ensemble runtime: validation of a flat-array ensemble built by a
 * loader (xgboost_json.c, basalt_json.c), compilation into a compact layout,
 * and prediction.
 *
 * Compiled layout (struct bs__tree_fast). Each tree is renumbered breadth
 * first so that the two children of a node are adjacent: a step is then
 * `i = child + go_right`, with no branch on the comparison. Nodes are 16
 * bytes (float threshold, feature with the default-left flag in bit 31,
 * child, leaf offset), so a 100-tree depth-6 model is ~200 KB and stays in
 * L2. A leaf is a self-loop: it tests the extra input slot n_features, which
 * always holds 0.0f, against +inf, so it goes "left" to itself. Walking a few
 * steps too many is therefore harmless, and every walk runs a fixed number of
 * steps (the tree's depth) with no per-step leaf test.
 *
 * Prediction converts a block of rows to float once (XGBoost and
 * scikit-learn both compare float32 inputs), then walks "lanes" — (tree, row)
 * pairs in tree-major order — LANES at a time in lock step, so the CPU has
 * LANES independent dependency chains to overlap: one row is spread across
 * trees, a batch across rows of one tree. Leaves are then added to the sums
 * in lane order, which keeps every row's trees in model order: with
 * float32_sums the result is bit-identical to XGBoost's CPU predictor (float
 * accumulation starting from the base margin, tree by tree).
 *
 * Exact comparisons with float thresholds: XGBoost goes left when
 * float(x) < float(t); scikit-learn when float(x) <= t for a double t. The
 * compiled threshold is the smallest float >= t for `<` and the largest
 * float <= t for `<=`; for any float x both tests then give the same answer
 * as the original one.
 *
 * Thread safety: an ensemble is immutable after prepare; predict keeps its
 * scratch on the stack (or a malloc for very wide models).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ml/ml_int.h"

#define LANES 16          /* (tree, row) walks in flight at once */
#define MAX_BLOCK_ROWS 64 /* rows converted to float per block */
#define STACK_SCRATCH 32768
#define DL_BIT 0x80000000u

typedef struct {
    float threshold;
    uint32_t feature; /* input slot; bit 31: NaN goes left */
    uint32_t child;   /* left child (right = child + 1); a leaf: itself */
    uint32_t leaf;    /* leaves: offset into leaf_values / leaf_f */
} cnode_t;

struct bs__tree_fast {
    cnode_t *nodes;
    uint32_t *root;  /* n_trees */
    uint32_t *depth; /* n_trees: steps that reach a leaf from the root */
    int32_t *group;  /* n_trees: sum index for leaf_width == 1 */
    float *leaf_f;   /* float32_sums: leaf values as float, n_leaf_values */
    size_t bytes;
};

/* ---- validation ------------------------------------------------------------------------- */

static int finite_all(const double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

static int check_shape(const bs__tree_ensemble_t *e, bs_err_t *err)
{
    if (e->n_features < 0 || e->n_features > BS_ML_MAX_FEATURES)
        return bs_err_set(err, BS_EINVAL, "tree ensemble has %d features, limit is %d",
                          e->n_features, BS_ML_MAX_FEATURES);
    if (e->n_trees < 0 || e->n_trees > BS_ML_MAX_TREES)
        return bs_err_set(err, BS_EINVAL, "tree ensemble has %d trees, limit is %d", e->n_trees,
                          BS_ML_MAX_TREES);
    if (e->n_groups < 1 || e->n_groups > BS_ML_MAX_OUTPUTS)
        return bs_err_set(err, BS_EINVAL, "tree ensemble has %d groups, expected 1 to %d",
                          e->n_groups, BS_ML_MAX_OUTPUTS);
    if (e->leaf_width != 1 && e->leaf_width != e->n_groups)
        return bs_err_set(err, BS_EINVAL, "leaf width is %d, expected 1 or %d (the groups)",
                          e->leaf_width, e->n_groups);
    if (e->split_rule != BS__TREE_LT && e->split_rule != BS__TREE_LE)
        return bs_err_set(err, BS_EINVAL, "unknown split rule %d", (int)e->split_rule);
    int want;
    switch (e->transform) {
    case BS__TREE_IDENTITY:
    case BS__TREE_EXP:
    case BS__TREE_NORMALIZE:
    case BS__TREE_SIGMOID_RAW:
        want = e->n_groups;
        break;
    case BS__TREE_SIGMOID:
        if (e->n_groups != 1)
            return bs_err_set(err, BS_EINVAL, "sigmoid transform needs 1 group, got %d",
                              e->n_groups);
        want = 2;
        break;
    case BS__TREE_SOFTMAX:
        if (e->n_groups < 2)
            return bs_err_set(err, BS_EINVAL, "softmax transform needs at least 2 groups, got %d",
                              e->n_groups);
        want = e->n_groups;
        break;
    default:
        return bs_err_set(err, BS_EINVAL, "unknown output transform %d", (int)e->transform);
    }
    if (e->n_outputs != want)
        return bs_err_set(err, BS_EINVAL, "tree ensemble declares %d outputs, its transform gives %d",
                          e->n_outputs, want);
    if (!isfinite(e->scale))
        return bs_err_set(err, BS_EINVAL, "tree scale must be finite");
    if (!e->base || !finite_all(e->base, e->n_groups))
        return bs_err_set(err, BS_EINVAL, "tree ensemble base values are missing or not finite");
    if (e->n_nodes < e->n_trees || e->n_nodes > BS_ML_MAX_NODES)
        return bs_err_set(err, BS_EINVAL, "tree ensemble has %lld nodes for %d trees, limit is %d",
                          (long long)e->n_nodes, e->n_trees, BS_ML_MAX_NODES);
    if (e->n_leaf_values < 0 || e->n_leaf_values > (int64_t)BS_ML_MAX_NODES * 64)
        return bs_err_set(err, BS_EINVAL, "tree ensemble has %lld leaf values",
                          (long long)e->n_leaf_values);
    if (e->n_trees > 0 && (!e->tree_root || !e->nodes))
        return bs_err_set(err, BS_EINVAL, "tree ensemble arrays are missing");
    if (e->leaf_width == 1 && e->n_groups > 1 && e->n_trees > 0 && !e->tree_group)
        return bs_err_set(err, BS_EINVAL, "tree groups are missing for %d groups", e->n_groups);
    if (e->n_leaf_values > 0 && !e->leaf_values)
        return bs_err_set(err, BS_EINVAL, "tree leaf values are missing");
    if (!finite_all(e->leaf_values, e->n_leaf_values))
        return bs_err_set(err, BS_EINVAL, "tree leaf values must be finite");
    return 0;
}

/* Checks one tree's nodes [a, b); marks parents in seen[] (one bit per node). */
static int check_tree(const bs__tree_ensemble_t *e, int t, int64_t a, int64_t b, uint8_t *seen,
                      bs_err_t *err)
{
    for (int64_t i = a; i < b; i++) {
        const bs__tree_node_t *n = &e->nodes[i];
        long long rel = (long long)(i - a);
        if (n->feature < 0) {
            if ((int64_t)n->value_offset + e->leaf_width > e->n_leaf_values)
                return bs_err_set(err, BS_EINVAL,
                                  "tree %d leaf %lld: value offset %u + %d is beyond the %lld "
                                  "leaf values",
                                  t, rel, n->value_offset, e->leaf_width,
                                  (long long)e->n_leaf_values);
            continue;
        }
        if (n->feature >= e->n_features)
            return bs_err_set(err, BS_EINVAL, "tree %d node %lld: feature %d, model has %d", t, rel,
                              (int)n->feature, e->n_features);
        if (isnan(n->threshold))
            return bs_err_set(err, BS_EINVAL, "tree %d node %lld: threshold is NaN", t, rel);
        int32_t kids[2] = {n->left, n->right};
        for (int k = 0; k < 2; k++) {
            if ((int64_t)kids[k] <= i || (int64_t)kids[k] >= b)
                return bs_err_set(err, BS_EINVAL,
                                  "tree %d node %lld: child %lld must point forward inside the "
                                  "tree (nodes %lld..%lld)",
                                  t, rel, (long long)kids[k] - a, rel + 1, (long long)(b - a - 1));
            if (seen[kids[k]])
                return bs_err_set(err, BS_EINVAL, "tree %d node %lld has more than one parent", t,
                                  (long long)kids[k] - a);
            seen[kids[k]] = 1;
        }
    }
    return 0;
}

int bs__tree_ensemble_validate(const bs__tree_ensemble_t *e, bs_err_t *err)
{
    if (!e)
        return bs_err_set(err, BS_EINVAL, "no tree ensemble");
    int rc = check_shape(e, err);
    if (rc)
        return rc;
    if (e->n_trees == 0)
        return 0;
    if (e->tree_root[0] != 0)
        return bs_err_set(err, BS_EINVAL, "the first tree must start at node 0, got %d",
                          (int)e->tree_root[0]);
    for (int t = 0; t < e->n_trees; t++) {
        int64_t end = t + 1 < e->n_trees ? e->tree_root[t + 1] : e->n_nodes;
        if (end <= e->tree_root[t] || end > e->n_nodes)
            return bs_err_set(err, BS_EINVAL, "tree %d has root %d and ends at %lld (of %lld nodes)",
                              t, (int)e->tree_root[t], (long long)end, (long long)e->n_nodes);
        if (e->leaf_width == 1 && e->tree_group &&
            (e->tree_group[t] < 0 || e->tree_group[t] >= e->n_groups))
            return bs_err_set(err, BS_EINVAL, "tree %d adds to group %d, model has %d", t,
                              (int)e->tree_group[t], e->n_groups);
    }
    uint8_t *seen = calloc((size_t)e->n_nodes, 1);
    if (!seen)
        return bs_err_set(err, BS_ENOMEM, "out of memory validating %lld tree nodes",
                          (long long)e->n_nodes);
    rc = 0;
    for (int t = 0; t < e->n_trees && !rc; t++) {
        int64_t end = t + 1 < e->n_trees ? e->tree_root[t + 1] : e->n_nodes;
        rc = check_tree(e, t, e->tree_root[t], end, seen, err);
    }
    free(seen);
    return rc;
}

/* ---- compilation ------------------------------------------------------------------------ */

static float float_at_least(double t) /* smallest float >= t */
{
    float f = (float)t;
    if ((double)f < t)
        f = nextafterf(f, INFINITY);
    return f;
}

static float float_at_most(double t) /* largest float <= t */
{
    float f = (float)t;
    if ((double)f > t)
        f = nextafterf(f, -INFINITY);
    return f;
}

static void fast_free(struct bs__tree_fast *f)
{
    if (!f)
        return;
    free(f->nodes);
    free(f->root);
    free(f->depth);
    free(f->group);
    free(f->leaf_f);
    free(f);
}

/* Breadth-first renumbering of tree t (valid, so each node is reached once). */
static void compile_tree(const bs__tree_ensemble_t *e, struct bs__tree_fast *f, int t,
                         uint32_t *pos, uint32_t *queue, uint32_t *level)
{
    const uint32_t leaf_slot = (uint32_t)e->n_features;
    uint32_t base = *pos, head = 0, tail = 0, next = base + 1, depth = 0;
    queue[tail] = (uint32_t)e->tree_root[t];
    level[tail++] = 0;
    while (head < tail) {
        const bs__tree_node_t *n = &e->nodes[queue[head]];
        uint32_t me = base + head, lv = level[head];
        cnode_t *c = &f->nodes[me];
        head++;
        if (n->feature < 0) {
            c->threshold = INFINITY;
            c->feature = leaf_slot;
            c->child = me;
            c->leaf = n->value_offset;
            if (lv > depth)
                depth = lv;
            continue;
        }
        c->threshold = e->split_rule == BS__TREE_LE ? float_at_most(n->threshold)
                                                    : float_at_least(n->threshold);
        c->feature = (uint32_t)n->feature | (n->default_left ? DL_BIT : 0);
        c->child = next;
        c->leaf = 0;
        next += 2;
        queue[tail] = (uint32_t)n->left;
        level[tail++] = lv + 1;
        queue[tail] = (uint32_t)n->right;
        level[tail++] = lv + 1;
    }
    f->root[t] = base;
    f->depth[t] = depth;
    f->group[t] = e->leaf_width == 1 && e->tree_group ? e->tree_group[t] : 0;
    *pos = base + tail;
}

int bs__tree_ensemble_prepare(bs__tree_ensemble_t *e, bs_err_t *err)
{
    if (e && e->fast)
        return 0;
    int rc = bs__tree_ensemble_validate(e, err);
    if (rc)
        return rc;
    struct bs__tree_fast *f = calloc(1, sizeof *f);
    size_t nn = (size_t)e->n_nodes, nt = (size_t)e->n_trees;
    uint32_t *queue = malloc((nn + 1) * sizeof *queue);
    uint32_t *level = malloc((nn + 1) * sizeof *level);
    if (f) {
        f->nodes = malloc((nn + 1) * sizeof *f->nodes);
        f->root = malloc((nt + 1) * sizeof *f->root);
        f->depth = malloc((nt + 1) * sizeof *f->depth);
        f->group = malloc((nt + 1) * sizeof *f->group);
        if (e->float32_sums)
            f->leaf_f = malloc(((size_t)e->n_leaf_values + 1) * sizeof *f->leaf_f);
    }
    if (!f || !queue || !level || !f->nodes || !f->root || !f->depth || !f->group ||
        (e->float32_sums && !f->leaf_f)) {
        free(queue);
        free(level);
        fast_free(f);
        return bs_err_set(err, BS_ENOMEM, "out of memory compiling %lld tree nodes",
                          (long long)e->n_nodes);
    }
    uint32_t pos = 0;
    for (int t = 0; t < e->n_trees; t++)
        compile_tree(e, f, t, &pos, queue, level);
    free(queue);
    free(level);
    if (f->leaf_f)
        for (int64_t i = 0; i < e->n_leaf_values; i++)
            f->leaf_f[i] = (float)e->leaf_values[i];
    f->bytes = sizeof *f + (nn + 1) * sizeof *f->nodes + (nt + 1) * 3 * sizeof(uint32_t) +
               (f->leaf_f ? ((size_t)e->n_leaf_values + 1) * sizeof(float) : 0);
    e->fast = f;
    return 0;
}

void bs__tree_ensemble_free(bs__tree_ensemble_t *e)
{
    if (!e)
        return;
    fast_free(e->fast);
    free(e->base);
    free(e->tree_root);
    free(e->tree_group);
    free(e->nodes);
    free(e->leaf_values);
    free(e);
}

/* ---- prediction ------------------------------------------------------------------------- */

/*
 * Walks n lanes `depth` steps in lock step. le selects the split rule; it is
 * a constant in each caller below, so each gets its own branch-free loop.
 * Deep trees stop early once every lane sits on a leaf (checked every 8
 * steps, so balanced trees pay nothing).
 */
static inline __attribute__((always_inline)) void walk(const cnode_t *nd, uint32_t *idx,
                                                       const float *const *x, int n,
                                                       uint32_t depth, int le)
{
    for (uint32_t d = 0; d < depth; d++) {
        for (int l = 0; l < n; l++) {
            const cnode_t *c = &nd[idx[l]];
            uint32_t fe = c->feature;
            float v = x[l][fe & ~DL_BIT];
            uint32_t left = le ? (v <= c->threshold) : (v < c->threshold);
            uint32_t nan_dl = (uint32_t)(v != v) & (fe >> 31);
            idx[l] = c->child + ((left ^ 1u) ^ nan_dl);
        }
        if ((d & 7) == 7 && depth > 16) {
            int all = 1;
            for (int l = 0; l < n; l++)
                all &= nd[idx[l]].child == idx[l];
            if (all)
                break;
        }
    }
}

static void walk_lt(const cnode_t *nd, uint32_t *idx, const float *const *x, int n,
                    uint32_t depth)
{
    walk(nd, idx, x, n, depth, 0);
}

static void walk_le(const cnode_t *nd, uint32_t *idx, const float *const *x, int n,
                    uint32_t depth)
{
    walk(nd, idx, x, n, depth, 1);
}

typedef struct {
    const bs__tree_ensemble_t *e;
    const struct bs__tree_fast *f;
    void (*walk)(const cnode_t *, uint32_t *, const float *const *, int, uint32_t);
    int stride; /* floats per converted row: n_features + 1 */
    float *xf;  /* block rows as float */
    float *sf;  /* float32_sums: block sums */
    double *sd; /* double sums */
} run_t;

/* Adds the leaves the lanes reached, in lane order (= model order per row). */
static void accumulate(const run_t *r, const uint32_t *idx, const int *lt, const int *lr, int n)
{
    const bs__tree_ensemble_t *e = r->e;
    const struct bs__tree_fast *f = r->f;
    const int G = e->n_groups, W = e->leaf_width;
    for (int l = 0; l < n; l++) {
        uint32_t off = f->nodes[idx[l]].leaf;
        if (e->float32_sums) {
            float *s = r->sf + (size_t)lr[l] * G;
            if (W == 1)
                s[f->group[lt[l]]] += f->leaf_f[off];
            else
                for (int k = 0; k < W; k++)
                    s[k] += f->leaf_f[off + k];
        } else {
            double *s = r->sd + (size_t)lr[l] * G;
            if (W == 1)
                s[f->group[lt[l]]] += e->scale * e->leaf_values[off];
            else
                for (int k = 0; k < W; k++)
                    s[k] += e->scale * e->leaf_values[off + k];
        }
    }
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* Sums of one row -> its outputs, in the arithmetic of the ensemble. */
static void transform_row(const bs__tree_ensemble_t *e, const float *sf, const double *sd,
                          double *out)
{
    const int G = e->n_groups;
    if (e->float32_sums) {
        switch (e->transform) {
        case BS__TREE_SIGMOID: {
            float p = sigmoidf(sf[0]);
            out[0] = 1.0 - (double)p;
            out[1] = p;
            return;
        }
        case BS__TREE_SOFTMAX: { /* as XGBoost: float exps, double sum, float divide */
            float wmax = sf[0];
            for (int k = 1; k < G; k++)
                wmax = fmaxf(sf[k], wmax);
            double wsum = 0.0;
            for (int k = 0; k < G; k++)
                wsum += expf(sf[k] - wmax);
            for (int k = 0; k < G; k++)
                out[k] = expf(sf[k] - wmax) / (float)wsum;
            return;
        }
        case BS__TREE_NORMALIZE: {
            double tot = 0.0;
            for (int k = 0; k < G; k++)
                tot += sf[k];
            for (int k = 0; k < G; k++)
                out[k] = tot > 0.0 ? sf[k] / tot : sf[k];
            return;
        }
        default:
            for (int k = 0; k < G; k++)
                out[k] = e->transform == BS__TREE_EXP           ? expf(sf[k])
                         : e->transform == BS__TREE_SIGMOID_RAW ? sigmoidf(sf[k])
                                                                : sf[k];
            return;
        }
    }
    switch (e->transform) {
    case BS__TREE_SIGMOID: {
        double p = sigmoid(sd[0]);
        out[0] = 1.0 - p;
        out[1] = p;
        return;
    }
    case BS__TREE_SOFTMAX: {
        double wmax = sd[0], wsum = 0.0;
        for (int k = 1; k < G; k++)
            wmax = fmax(sd[k], wmax);
        for (int k = 0; k < G; k++)
            wsum += (out[k] = exp(sd[k] - wmax));
        for (int k = 0; k < G; k++)
            out[k] /= wsum;
        return;
    }
    case BS__TREE_NORMALIZE: {
        double tot = 0.0;
        for (int k = 0; k < G; k++)
            tot += sd[k];
        for (int k = 0; k < G; k++)
            out[k] = tot > 0.0 ? sd[k] / tot : sd[k];
        return;
    }
    default:
        for (int k = 0; k < G; k++)
            out[k] = e->transform == BS__TREE_EXP           ? exp(sd[k])
                     : e->transform == BS__TREE_SIGMOID_RAW ? sigmoid(sd[k])
                                                            : sd[k];
        return;
    }
}

/* Predicts nb rows (nb <= the block size the scratch was sized for). */
static void predict_block(const run_t *r, const double *rows, int nb, double *out)
{
    const bs__tree_ensemble_t *e = r->e;
    const struct bs__tree_fast *f = r->f;
    const int nf = e->n_features, G = e->n_groups;
    for (int i = 0; i < nb; i++) {
        const double *src = rows + (size_t)i * nf;
        float *dst = r->xf + (size_t)i * r->stride;
        for (int j = 0; j < nf; j++)
            dst[j] = (float)src[j];
        dst[nf] = 0.0f;
        for (int k = 0; k < G; k++) {
            if (e->float32_sums)
                r->sf[(size_t)i * G + k] = (float)e->base[k];
            else
                r->sd[(size_t)i * G + k] = e->base[k];
        }
    }

    uint32_t idx[LANES];
    const float *xp[LANES];
    int lt[LANES], lr[LANES], n = 0;
    uint32_t depth = 0;
    for (int t = 0; t < e->n_trees; t++) {
        uint32_t root = f->root[t];
        if (f->depth[t] > depth)
            depth = f->depth[t];
        for (int i = 0; i < nb; i++) {
            idx[n] = root;
            xp[n] = r->xf + (size_t)i * r->stride;
            lt[n] = t;
            lr[n] = i;
            if (++n == LANES) {
                r->walk(f->nodes, idx, xp, n, depth);
                accumulate(r, idx, lt, lr, n);
                n = 0;
                depth = f->depth[t];
            }
        }
    }
    if (n) {
        r->walk(f->nodes, idx, xp, n, depth);
        accumulate(r, idx, lt, lr, n);
    }
    for (int i = 0; i < nb; i++)
        transform_row(e, r->sf ? r->sf + (size_t)i * G : NULL,
                      r->sd ? r->sd + (size_t)i * G : NULL, out + (size_t)i * e->n_outputs);
}

static int trees_predict(const void *impl, const double *rows, size_t n_rows, double *out,
                         bs_err_t *err)
{
    const bs__tree_ensemble_t *e = impl;
    if (!e || !e->fast)
        return bs_err_set(err, BS_EINTERNAL, "tree ensemble was not prepared");
    if (n_rows == 0)
        return 0;
    run_t r = {.e = e, .f = e->fast, .walk = e->split_rule == BS__TREE_LE ? walk_le : walk_lt};
    r.stride = e->n_features + 1;
    size_t sum_bytes = (size_t)e->n_groups * (e->float32_sums ? sizeof(float) : sizeof(double));
    size_t row_bytes = (size_t)r.stride * sizeof(float) + sum_bytes;
    /* double-aligned so the sums that follow the floats are aligned */
    double stack[STACK_SCRATCH / sizeof(double)];
    void *scratch = stack;
    size_t block = STACK_SCRATCH / (row_bytes + sizeof(double));
    if (block > MAX_BLOCK_ROWS)
        block = MAX_BLOCK_ROWS;
    if (block > n_rows)
        block = n_rows;
    if (block == 0) {
        block = 1;
        scratch = malloc(row_bytes + sizeof(double));
        if (!scratch)
            return bs_err_set(err, BS_ENOMEM, "out of memory for a row of %d features",
                              e->n_features);
    }
    size_t xf_bytes = block * (size_t)r.stride * sizeof(float);
    xf_bytes = (xf_bytes + sizeof(double) - 1) / sizeof(double) * sizeof(double);
    r.xf = scratch;
    if (e->float32_sums)
        r.sf = (float *)((char *)scratch + xf_bytes);
    else
        r.sd = (double *)((char *)scratch + xf_bytes);

    for (size_t done = 0; done < n_rows; done += block) {
        int nb = (int)(n_rows - done < block ? n_rows - done : block);
        predict_block(&r, rows + done * (size_t)e->n_features, nb,
                      out + done * (size_t)e->n_outputs);
    }
    if (scratch != stack)
        free(scratch);
    return 0;
}

static void trees_free(void *impl)
{
    bs__tree_ensemble_free(impl);
}

static size_t trees_memory(const void *impl)
{
    const bs__tree_ensemble_t *e = impl;
    size_t bytes = sizeof *e + (size_t)e->n_groups * sizeof(double) +
                   (size_t)e->n_trees * 2 * sizeof(int32_t) +
                   (size_t)e->n_nodes * sizeof(bs__tree_node_t) +
                   (size_t)e->n_leaf_values * sizeof(double);
    return bytes + (e->fast ? e->fast->bytes : 0);
}

static int trees_prepare(void *impl, bs_err_t *err)
{
    return bs__tree_ensemble_prepare(impl, err);
}

const bs__ml_vtable_t bs__tree_vtable = {
    .kind = "trees",
    .predict = trees_predict,
    .free = trees_free,
    .memory = trees_memory,
    .handles_missing = 1,
    .prefers_batching = 0,
    .prepare = trees_prepare,
};
