/*
 * The tree-ensemble runtime: validation of a flat-array ensemble built by a
 * loader (xgboost_json.c, basalt_json.c), compilation into a compact layout,
 * and prediction.
 *
 * Compiled layouts (struct bs__tree_fast), chosen per ensemble:
 *   - heap: when every tree is at most HEAP_MAX_DEPTH deep and padding them
 *     all to the deepest one costs little memory (XGBoost's max_depth trees),
 *     each tree becomes a complete binary tree of depth D in heap order: the
 *     children of slot i are 2i+1 and 2i+2, so a step is
 *     `i = 2i + 1 + go_right` with no child pointer to load. A node is 8
 *     bytes (input slot, float threshold); a shallow leaf is pushed down by
 *     padding nodes that always go left. Every walk is exactly D steps, and
 *     the bottom slot indexes the tree's leaf table.
 *   - explicit: otherwise (deep or lopsided trees), nodes are renumbered
 *     breadth first so the two children are adjacent (`i = child +
 *     go_right`); a leaf is a self-loop, so walking a few steps past it is
 *     harmless and a walk runs the deepest tree's depth with no per-step leaf
 *     test (deep trees stop early once every lane sits on a leaf).
 *
 * Missing values without a branch: each row is converted to float twice,
 * once with NaN replaced by +inf and once by -inf, and a node reads from the
 * copy that sends NaN its default way (-inf < t holds and +inf < t does not,
 * for every finite threshold t; validation rejects non-finite thresholds).
 * Real values are the same in both copies. Slot n_features of each copy is
 * always 0.0f; padding nodes and leaves test it against +inf.
 *
 * Prediction converts a block of rows, then walks "lanes" — (tree, row)
 * pairs in tree-major order — LANES at a time in lock step, so the CPU has
 * LANES independent dependency chains to overlap: one row is spread across
 * trees, a batch across rows of one tree. Leaves are then added to the sums
 * in lane order, which keeps every row's trees in model order: with
 * float32_sums the result is bit-identical to XGBoost's CPU predictor (float
 * accumulation starting from the base margin, tree by tree).
 *
 * A single row on the heap layout (the HTTP predict path) skips the block
 * scratch: predict_one converts it into one strided column on the stack and
 * walks TREE_LANES trees at a time with a copy of the walker per depth (the
 * lanes' tree offsets become immediates, so the indices stay in registers).
 * SIMD walkers (8 or 16 trees per AVX2/AVX-512 vector, gathers for nodes and
 * inputs) were measured slower than this scalar walk on an AVX-512 AMD EPYC
 * (bench/trees: ~0.9 and ~1.1 us against ~0.8 us): three dependent gathers
 * per level cost more than the scalar loads they replace.
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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/parallel.h"
#include "ml/ml_int.h"

#define MAX_BLOCK_SHIFT 6 /* up to 64 rows converted to float per block */
#define STACK_SCRATCH 49152
#define HEAP_MAX_DEPTH 12
#define HEAP_BLOCK_BYTES 16384 /* feature-major input block of the heap layout */
#define ROW_LANES 16  /* batch: rows of one tree walked together */
#define TREE_LANES 16 /* single row: trees walked together */
#define LANES 8       /* explicit layout: (tree, row) pairs walked together */

typedef struct {
    uint32_t slot; /* input slot (copy chosen by default_left) << xshift */
    float threshold;
} hnode_t;

typedef struct {
    float threshold;
    uint32_t slot;  /* input slot */
    uint32_t child; /* left child (right = child + 1); a leaf: itself */
    uint32_t leaf;  /* leaves: offset into leaf_values / leaf_f */
} cnode_t;

struct bs__tree_fast {
    int heap;        /* 1: heap layout, 0: explicit */
    uint32_t depth;  /* heap: D, the depth of every (padded) tree */
    unsigned xshift; /* heap: a block holds 1 << xshift rows, feature-major */
    hnode_t *hnodes; /* heap: 2^D slots per tree (2^D - 1 used) */
    uint32_t *hleaf; /* heap: 2^D leaf value offsets per tree */
    cnode_t *nodes;  /* explicit */
    uint32_t *root;  /* explicit: n_trees roots */
    uint32_t *tdepth; /* explicit: n_trees depths */
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
        if (!isfinite(n->threshold))
            return bs_err_set(err, BS_EINVAL, "tree %d node %lld: threshold is not finite", t, rel);
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
    free(f->hnodes);
    free(f->hleaf);
    free(f->nodes);
    free(f->root);
    free(f->tdepth);
    free(f->group);
    free(f->leaf_f);
    free(f);
}

/* The compiled test of an internal node: input slot and float threshold. */
static void compile_split(const bs__tree_ensemble_t *e, const bs__tree_node_t *n, uint32_t *slot,
                          float *threshold)
{
    *slot = (uint32_t)n->feature + (n->default_left ? (uint32_t)e->n_features + 1 : 0);
    *threshold = e->split_rule == BS__TREE_LE ? float_at_most(n->threshold)
                                              : float_at_least(n->threshold);
}

/* Depth of every tree (valid ensemble: each node is reached once). */
static void tree_depths(const bs__tree_ensemble_t *e, uint32_t *depth, uint32_t *node_depth)
{
    for (int t = 0; t < e->n_trees; t++) {
        int64_t a = e->tree_root[t], b = t + 1 < e->n_trees ? e->tree_root[t + 1] : e->n_nodes;
        uint32_t dmax = 0;
        for (int64_t i = a; i < b; i++)
            node_depth[i] = 0;
        for (int64_t i = a; i < b; i++) { /* children come after parents */
            const bs__tree_node_t *n = &e->nodes[i];
            if (n->feature < 0) {
                if (node_depth[i] > dmax)
                    dmax = node_depth[i];
                continue;
            }
            node_depth[n->left] = node_depth[i] + 1;
            node_depth[n->right] = node_depth[i] + 1;
        }
        depth[t] = dmax;
    }
}

/* Heap layout of tree t (depth <= D). queue: scratch of the tree's size, 3 words each. */
static void compile_heap_tree(const bs__tree_ensemble_t *e, struct bs__tree_fast *f, int t,
                              uint32_t *queue)
{
    const uint32_t D = f->depth, width = 1u << D, bottom = width - 1;
    hnode_t *hn = f->hnodes + (size_t)t * width;
    uint32_t *hl = f->hleaf + (size_t)t * width;
    const hnode_t pad = {(uint32_t)e->n_features << f->xshift, INFINITY}; /* always left */
    for (uint32_t i = 0; i < width; i++) {
        hn[i] = pad;
        hl[i] = 0;
    }
    uint32_t head = 0, tail = 0;
    queue[0] = (uint32_t)e->tree_root[t]; /* original node, heap slot, depth */
    queue[1] = 0;
    queue[2] = 0;
    tail = 1;
    while (head < tail) {
        uint32_t o = queue[3 * head], p = queue[3 * head + 1], d = queue[3 * head + 2];
        head++;
        const bs__tree_node_t *n = &e->nodes[o];
        if (n->feature >= 0) {
            compile_split(e, n, &hn[p].slot, &hn[p].threshold);
            hn[p].slot <<= f->xshift;
            uint32_t kids[2] = {(uint32_t)n->left, (uint32_t)n->right};
            for (int k = 0; k < 2; k++) {
                queue[3 * tail] = kids[k];
                queue[3 * tail + 1] = 2 * p + 1 + (uint32_t)k;
                queue[3 * tail + 2] = d + 1;
                tail++;
            }
            continue;
        }
        /* a leaf at depth d: the padding below it goes left, to bottom slot q */
        uint32_t q = p;
        for (uint32_t k = d; k < D; k++)
            q = 2 * q + 1;
        hl[q - bottom] = n->value_offset;
    }

}

/* Explicit layout of tree t, breadth first from *pos. */
static void compile_explicit_tree(const bs__tree_ensemble_t *e, struct bs__tree_fast *f, int t,
                                  uint32_t *pos, uint32_t *queue)
{
    uint32_t base = *pos, head = 0, tail = 0, next = base + 1;
    queue[tail++] = (uint32_t)e->tree_root[t];
    while (head < tail) {
        const bs__tree_node_t *n = &e->nodes[queue[head]];
        uint32_t me = base + head;
        cnode_t *c = &f->nodes[me];
        head++;
        if (n->feature < 0) {
            c->threshold = INFINITY;
            c->slot = (uint32_t)e->n_features;
            c->child = me;
            c->leaf = n->value_offset;
            continue;
        }
        compile_split(e, n, &c->slot, &c->threshold);
        c->child = next;
        c->leaf = 0;
        next += 2;
        queue[tail++] = (uint32_t)n->left;
        queue[tail++] = (uint32_t)n->right;
    }
    f->root[t] = base;
    *pos = base + tail;
}

int bs__tree_ensemble_prepare(bs__tree_ensemble_t *e, bs_err_t *err)
{
    if (e && e->fast)
        return 0;
    int rc = bs__tree_ensemble_validate(e, err);
    if (rc)
        return rc;
    const size_t nn = (size_t)e->n_nodes, nt = (size_t)e->n_trees;
    struct bs__tree_fast *f = calloc(1, sizeof *f);
    uint32_t *queue = malloc((3 * nn + 3) * sizeof *queue);
    uint32_t *node_depth = malloc((nn + 1) * sizeof *node_depth);
    if (!f || !queue || !node_depth)
        goto oom;
    f->tdepth = malloc((nt + 1) * sizeof *f->tdepth);
    f->group = malloc((nt + 1) * sizeof *f->group);
    if (e->float32_sums)
        f->leaf_f = malloc(((size_t)e->n_leaf_values + 1) * sizeof *f->leaf_f);
    if (!f->tdepth || !f->group || (e->float32_sums && !f->leaf_f))
        goto oom;
    tree_depths(e, f->tdepth, node_depth);
    uint32_t dmax = 0;
    for (size_t t = 0; t < nt; t++) {
        dmax = f->tdepth[t] > dmax ? f->tdepth[t] : dmax;
        f->group[t] = e->leaf_width == 1 && e->tree_group ? e->tree_group[t] : 0;
    }
    /* heap layout if padding every tree to the deepest costs at most ~4x the nodes */
    f->heap = dmax <= HEAP_MAX_DEPTH && (nt << dmax) <= 4 * nn + 4096;
    if (f->heap) {
        /* padded to a multiple of TREE_LANES trees (always-left padding, leaf 0),
         * so the single-row walker may run past the last tree */
        size_t nt_pad = (nt + TREE_LANES - 1) / TREE_LANES * TREE_LANES, slots = nt_pad << dmax;
        f->depth = dmax;
        f->hnodes = malloc((slots + 1) * sizeof *f->hnodes);
        f->hleaf = calloc(slots + 1, sizeof *f->hleaf);
        if (!f->hnodes || !f->hleaf)
            goto oom;
        /* feature-major blocks of up to 64 rows, as many as fit in HEAP_BLOCK_BYTES */
        const size_t in_slots = 2 * ((size_t)e->n_features + 1);
        f->xshift = MAX_BLOCK_SHIFT;
        while (f->xshift > 0 && (in_slots << f->xshift) * sizeof(float) > HEAP_BLOCK_BYTES)
            f->xshift--;
        for (size_t i = 0; i < slots; i++)
            f->hnodes[i] = (hnode_t){(uint32_t)e->n_features << f->xshift, INFINITY};
        for (size_t t = 0; t < nt; t++)
            compile_heap_tree(e, f, (int)t, queue);
        f->bytes = slots * (sizeof *f->hnodes + sizeof *f->hleaf);
    } else {
        f->nodes = malloc((nn + 1) * sizeof *f->nodes);
        f->root = malloc((nt + 1) * sizeof *f->root);
        if (!f->nodes || !f->root)
            goto oom;
        uint32_t pos = 0;
        for (size_t t = 0; t < nt; t++)
            compile_explicit_tree(e, f, (int)t, &pos, queue);
        f->bytes = nn * sizeof *f->nodes + nt * sizeof *f->root;
    }
    if (f->leaf_f)
        for (int64_t i = 0; i < e->n_leaf_values; i++)
            f->leaf_f[i] = (float)e->leaf_values[i];
    f->bytes += sizeof *f + nt * 2 * sizeof(uint32_t) +
                (f->leaf_f ? (size_t)e->n_leaf_values * sizeof(float) : 0);
    free(queue);
    free(node_depth);
    e->fast = f;
    return 0;
oom:
    free(queue);
    free(node_depth);
    fast_free(f);
    return bs_err_set(err, BS_ENOMEM, "out of memory compiling %lld tree nodes",
                      (long long)e->n_nodes);
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
 * Walkers. Each advances a fixed number of lanes in lock step, fully
 * unrolled so the lane indices live in registers; le selects the split rule
 * and is a constant in each wrapper, so each gets its own branch-free loop.
 *
 * heap_rows:  one tree, ROW_LANES rows of a feature-major block
 *             (xt[slot << shift | row]): the batch path.
 * heap_trees: n trees (a multiple of TREE_LANES) from t0, TREE_LANES at a
 *             time, one row: the single-row path (and the rows left over
 *             when a block is not a multiple of ROW_LANES).
 * explicit:   LANES (tree, row) pairs on the explicit layout.
 */

static inline __attribute__((always_inline)) void heap_rows(const struct bs__tree_fast *f,
                                                            uint32_t t, const float *xt,
                                                            uint32_t *out, int le)
{
    const uint32_t D = f->depth;
    const hnode_t *hn = f->hnodes + ((size_t)t << D);
    size_t i[ROW_LANES];
#pragma GCC unroll 16
    for (int l = 0; l < ROW_LANES; l++)
        i[l] = 0;
    for (uint32_t d = 0; d < D; d++) {
#pragma GCC unroll 16
        for (int l = 0; l < ROW_LANES; l++) {
            hnode_t n = hn[i[l]];
            float v = xt[n.slot + (size_t)l];
            uint32_t right = le ? !(v <= n.threshold) : !(v < n.threshold);
            i[l] = 2 * i[l] + 1 + right;
        }
    }
    const uint32_t *hl = f->hleaf + ((size_t)t << D) - ((1u << D) - 1);
#pragma GCC unroll 16
    for (int l = 0; l < ROW_LANES; l++)
        out[l] = hl[i[l]];
}

/* D is a constant in each caller (one copy per depth, see heap_trees_lt), so
 * the lanes' tree offsets l << D are immediates and the local indices j need
 * no per-lane base: fewer live registers, shorter address arithmetic. */
static inline __attribute__((always_inline)) void heap_trees(const struct bs__tree_fast *f,
                                                             uint32_t t0, uint32_t n,
                                                             const float *x, uint32_t *out,
                                                             int le, const uint32_t D)
{
    const size_t W = (size_t)1 << D;
    const hnode_t *hn = f->hnodes + ((size_t)t0 << D);
    const uint32_t *hl = f->hleaf + ((size_t)t0 << D) - (W - 1);
    for (uint32_t t = 0; t < n; t += TREE_LANES, hn += TREE_LANES * W, hl += TREE_LANES * W) {
        size_t j[TREE_LANES];
#pragma GCC unroll 16
        for (int l = 0; l < TREE_LANES; l++)
            j[l] = 0;
#pragma GCC unroll 12
        for (uint32_t d = 0; d < D; d++) {
#pragma GCC unroll 16
            for (int l = 0; l < TREE_LANES; l++) {
                hnode_t nd = hn[(size_t)l * W + j[l]];
                float v = x[nd.slot];
                uint32_t right = le ? !(v <= nd.threshold) : !(v < nd.threshold);
                j[l] = 2 * j[l] + 1 + right;
            }
        }
#pragma GCC unroll 16
        for (int l = 0; l < TREE_LANES; l++)
            out[t + l] = hl[(size_t)l * W + j[l]];
    }
}

static inline __attribute__((always_inline)) void explicit_walk(const struct bs__tree_fast *f,
                                                                const uint32_t *tree,
                                                                const float *const *x,
                                                                uint32_t *out, int le)
{
    const cnode_t *nd = f->nodes;
    uint32_t i[LANES], depth = 0;
#pragma GCC unroll 16
    for (int l = 0; l < LANES; l++) {
        i[l] = f->root[tree[l]];
        depth = f->tdepth[tree[l]] > depth ? f->tdepth[tree[l]] : depth;
    }
    for (uint32_t d = 0; d < depth; d++) {
#pragma GCC unroll 16
        for (int l = 0; l < LANES; l++) {
            const cnode_t *c = &nd[i[l]];
            float v = x[l][c->slot];
            uint32_t right = le ? !(v <= c->threshold) : !(v < c->threshold);
            i[l] = c->child + right;
        }
        if ((d & 7) == 7 && depth > 16) { /* deep trees: stop once all lanes are on leaves */
            int all = 1;
            for (int l = 0; l < LANES; l++)
                all &= nd[i[l]].child == i[l];
            if (all)
                break;
        }
    }
#pragma GCC unroll 16
    for (int l = 0; l < LANES; l++)
        out[l] = nd[i[l]].leaf;
}

typedef struct {
    void (*rows)(const struct bs__tree_fast *, uint32_t, const float *, uint32_t *);
    void (*trees)(const struct bs__tree_fast *, uint32_t, uint32_t, const float *, uint32_t *);
    void (*lanes)(const struct bs__tree_fast *, const uint32_t *, const float *const *,
                  uint32_t *);
} walkers_t;

static void heap_rows_lt(const struct bs__tree_fast *f, uint32_t t, const float *xt,
                         uint32_t *out)
{
    heap_rows(f, t, xt, out, 0);
}

static void heap_rows_le(const struct bs__tree_fast *f, uint32_t t, const float *xt,
                         uint32_t *out)
{
    heap_rows(f, t, xt, out, 1);
}

/* One copy of heap_trees per depth up to HEAP_MAX_DEPTH (a constant D); the
 * switch is one well-predicted jump per TREE_LANES trees. */
static inline __attribute__((always_inline)) void heap_trees_depth(const struct bs__tree_fast *f,
                                                                   uint32_t t0, uint32_t n,
                                                                   const float *x, uint32_t *out,
                                                                   int le)
{
    switch (f->depth) {
    case 1: heap_trees(f, t0, n, x, out, le, 1); return;
    case 2: heap_trees(f, t0, n, x, out, le, 2); return;
    case 3: heap_trees(f, t0, n, x, out, le, 3); return;
    case 4: heap_trees(f, t0, n, x, out, le, 4); return;
    case 5: heap_trees(f, t0, n, x, out, le, 5); return;
    case 6: heap_trees(f, t0, n, x, out, le, 6); return;
    case 7: heap_trees(f, t0, n, x, out, le, 7); return;
    case 8: heap_trees(f, t0, n, x, out, le, 8); return;
    case 9: heap_trees(f, t0, n, x, out, le, 9); return;
    case 10: heap_trees(f, t0, n, x, out, le, 10); return;
    case 11: heap_trees(f, t0, n, x, out, le, 11); return;
    case 12: heap_trees(f, t0, n, x, out, le, 12); return;
    default: heap_trees(f, t0, n, x, out, le, f->depth); return;
    }
}

static void heap_trees_lt(const struct bs__tree_fast *f, uint32_t t0, uint32_t n,
                          const float *x, uint32_t *out)
{
    heap_trees_depth(f, t0, n, x, out, 0);
}

static void heap_trees_le(const struct bs__tree_fast *f, uint32_t t0, uint32_t n,
                          const float *x, uint32_t *out)
{
    heap_trees_depth(f, t0, n, x, out, 1);
}

static void explicit_lt(const struct bs__tree_fast *f, const uint32_t *t, const float *const *x,
                        uint32_t *out)
{
    explicit_walk(f, t, x, out, 0);
}

static void explicit_le(const struct bs__tree_fast *f, const uint32_t *t, const float *const *x,
                        uint32_t *out)
{
    explicit_walk(f, t, x, out, 1);
}

static const walkers_t walkers_lt = {heap_rows_lt, heap_trees_lt, explicit_lt};
static const walkers_t walkers_le = {heap_rows_le, heap_trees_le, explicit_le};

typedef struct {
    const bs__tree_ensemble_t *e;
    const struct bs__tree_fast *f;
    const walkers_t *walk;
    size_t slots;   /* input slots per row: two copies of n_features + 1 */
    unsigned shift; /* block capacity is 1 << shift rows */
    float *xt;      /* heap layout: feature-major block (row i at xt + i) */
    float *xr;      /* explicit layout: row-major rows, slots floats each */
    float *sf;      /* float32_sums: block sums */
    double *sd;     /* double sums */
} run_t;

/* Adds leaf values (offsets off[0..n)) of tree t to the sums of rows row[0..n). */
static inline void add_leaves(const run_t *r, uint32_t t, const uint32_t *off, const int *row,
                              int n)
{
    const bs__tree_ensemble_t *e = r->e;
    const struct bs__tree_fast *f = r->f;
    const int G = e->n_groups, W = e->leaf_width;
    const size_t g = (size_t)f->group[t];
    if (e->float32_sums && W == 1) {
        for (int l = 0; l < n; l++)
            r->sf[(size_t)row[l] * G + g] += f->leaf_f[off[l]];
    } else if (e->float32_sums) {
        for (int l = 0; l < n; l++)
            for (int k = 0; k < W; k++)
                r->sf[(size_t)row[l] * G + k] += f->leaf_f[off[l] + k];
    } else if (W == 1) {
        for (int l = 0; l < n; l++)
            r->sd[(size_t)row[l] * G + g] += e->scale * e->leaf_values[off[l]];
    } else {
        for (int l = 0; l < n; l++)
            for (int k = 0; k < W; k++)
                r->sd[(size_t)row[l] * G + k] += e->scale * e->leaf_values[off[l] + k];
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


/* Single sum, one row: adds m trees' leaves in a register, in tree order. */
static void add_one_sum(const run_t *r, int row, const uint32_t *off, int m)
{
    if (r->e->float32_sums) {
        float acc = r->sf[row];
        for (int l = 0; l < m; l++)
            acc += r->f->leaf_f[off[l]];
        r->sf[row] = acc;
    } else {
        double acc = r->sd[row];
        for (int l = 0; l < m; l++)
            acc += r->e->scale * r->e->leaf_values[off[l]];
        r->sd[row] = acc;
    }
}

/* Converts row src to float slots: [NaN -> +inf copy, 0] [NaN -> -inf copy, 0]. */
static void convert_row(const double *src, int nf, float *dst, size_t step)
{
    for (int j = 0; j < nf; j++) {
        float v = (float)src[j];
        dst[(size_t)j * step] = v != v ? INFINITY : v;
        dst[(size_t)(j + nf + 1) * step] = v != v ? -INFINITY : v;
    }
    dst[(size_t)nf * step] = 0.0f;
    dst[(size_t)(2 * nf + 1) * step] = 0.0f;
}

/* Explicit layout: (tree, row) lanes in tree-major order over rows [0, nb) of xr. */
static void walk_explicit(const run_t *r, int nb)
{
    uint32_t lt[LANES], off[LANES];
    const float *xp[LANES];
    int row[LANES], n = 0;
    for (int t = 0; t < r->e->n_trees; t++) {
        for (int i = 0; i < nb; i++) {
            lt[n] = (uint32_t)t;
            xp[n] = r->xr + (size_t)i * r->slots;
            row[n] = i;
            if (++n < LANES)
                continue;
            r->walk->lanes(r->f, lt, xp, off);
            for (int l = 0; l < LANES; l++)
                add_leaves(r, lt[l], &off[l], &row[l], 1);
            n = 0;
        }
    }
    if (n == 0)
        return;
    for (int l = n; l < LANES; l++) { /* idle lanes repeat lane 0 */
        lt[l] = lt[0];
        xp[l] = xp[0];
    }
    r->walk->lanes(r->f, lt, xp, off);
    for (int l = 0; l < n; l++)
        add_leaves(r, lt[l], &off[l], &row[l], 1);
}

/* Predicts nb rows (nb <= 1 << r->shift). */
static void predict_block(const run_t *r, const double *rows, int nb, double *out)
{
    const bs__tree_ensemble_t *e = r->e;
    const struct bs__tree_fast *f = r->f;
    const int nf = e->n_features, G = e->n_groups, T = e->n_trees;
    /* heap layout: rows in groups of ROW_LANES walk feature-major, the rest one by one */
    const int n_grouped = f->heap ? nb / ROW_LANES * ROW_LANES : 0;
    for (int i = 0; i < nb; i++) {
        if (f->heap)
            convert_row(rows + (size_t)i * nf, nf, r->xt + i, (size_t)1 << r->shift);
        else
            convert_row(rows + (size_t)i * nf, nf, r->xr + (size_t)i * r->slots, 1);
        for (int k = 0; k < G; k++) {
            if (e->float32_sums)
                r->sf[(size_t)i * G + k] = (float)e->base[k];
            else
                r->sd[(size_t)i * G + k] = e->base[k];
        }
    }
    uint32_t off[ROW_LANES > TREE_LANES ? ROW_LANES : TREE_LANES];
    int row[ROW_LANES > TREE_LANES ? ROW_LANES : TREE_LANES];
    if (!f->heap) {
        walk_explicit(r, nb);
    } else {
        for (int t = 0; t < T; t++) {
            for (int r0 = 0; r0 < n_grouped; r0 += ROW_LANES) {
                r->walk->rows(f, (uint32_t)t, r->xt + r0, off);
                for (int l = 0; l < ROW_LANES; l++)
                    row[l] = r0 + l;
                add_leaves(r, (uint32_t)t, off, row, ROW_LANES);
            }
        }
        for (int i = n_grouped; i < nb; i++) {
            const float *x = r->xt + i;
            row[0] = i;
            /* the heap is padded to a multiple of TREE_LANES trees */
            for (int t0 = 0; t0 < T; t0 += TREE_LANES) {
                r->walk->trees(f, (uint32_t)t0, TREE_LANES, x, off);
                int m = T - t0 < TREE_LANES ? T - t0 : TREE_LANES;
                if (G == 1 && e->leaf_width == 1)
                    add_one_sum(r, i, off, m);
                else
                    for (int l = 0; l < m; l++)
                        add_leaves(r, (uint32_t)(t0 + l), &off[l], row, 1);
            }
        }
    }
    for (int i = 0; i < nb; i++)
        transform_row(e, r->sf ? r->sf + (size_t)i * G : NULL,
                      r->sd ? r->sd + (size_t)i * G : NULL, out + (size_t)i * e->n_outputs);
}

#define ONE_MAX_GROUPS 64 /* single-row path: sums kept on the stack */
#define ONE_CHUNK 64      /* single-row path: trees walked per call (a multiple of TREE_LANES) */

/* One row on the heap layout, without the block scratch of trees_predict: the
 * row converted into a strided column (stride 1 << xshift, the stride the node
 * slots are premultiplied by) and the same leaf additions in the same order as
 * predict_block's single-row walk, so the same bits. The caller checks that
 * the column fits in HEAP_BLOCK_BYTES and n_groups <= ONE_MAX_GROUPS. */
static void predict_one(const bs__tree_ensemble_t *e, const double *row, double *out)
{
    const struct bs__tree_fast *f = e->fast;
    const int G = e->n_groups, T = e->n_trees;
    float x[HEAP_BLOCK_BYTES / sizeof(float)];
    float sf[ONE_MAX_GROUPS];
    double sd[ONE_MAX_GROUPS];
    convert_row(row, e->n_features, x, (size_t)1 << f->xshift);
    run_t r = {.e = e, .f = f, .walk = e->split_rule == BS__TREE_LE ? &walkers_le : &walkers_lt};
    if (e->float32_sums)
        r.sf = sf;
    else
        r.sd = sd;
    for (int k = 0; k < G; k++) {
        sf[k] = (float)e->base[k];
        sd[k] = e->base[k];
    }
    uint32_t off[ONE_CHUNK];
    const int row0 = 0;
    for (int t0 = 0; t0 < T; t0 += ONE_CHUNK) {
        int m = T - t0 < ONE_CHUNK ? T - t0 : ONE_CHUNK;
        /* the heap is padded to a multiple of TREE_LANES trees */
        r.walk->trees(f, (uint32_t)t0, (uint32_t)(m + TREE_LANES - 1) / TREE_LANES * TREE_LANES,
                      x, off);
        if (G == 1 && e->leaf_width == 1)
            add_one_sum(&r, 0, off, m);
        else
            for (int l = 0; l < m; l++)
                add_leaves(&r, (uint32_t)(t0 + l), &off[l], &row0, 1);
    }
    transform_row(e, r.sf, r.sd, out);
}

/* Rows on the calling thread, a block at a time. */
static int predict_rows(const bs__tree_ensemble_t *e, const double *rows, size_t n_rows, double *out,
                        bs_err_t *err)
{
    if (n_rows == 1 && e->fast->heap && e->n_groups <= ONE_MAX_GROUPS &&
        ((2 * ((size_t)e->n_features + 1)) << e->fast->xshift) * sizeof(float) <=
            HEAP_BLOCK_BYTES) {
        predict_one(e, rows, out);
        return 0;
    }
    run_t r = {.e = e, .f = e->fast};
    r.walk = e->split_rule == BS__TREE_LE ? &walkers_le : &walkers_lt;
    r.slots = 2 * ((size_t)e->n_features + 1);
    /* per block row: its input slots (feature-major for the heap layout, row-major
     * otherwise) and its sums; double-aligned */
    size_t sum_bytes = (size_t)e->n_groups * (e->float32_sums ? sizeof(float) : sizeof(double));
    size_t row_bytes = r.slots * sizeof(float) + sum_bytes + 2 * sizeof(double);
    double stack[STACK_SCRATCH / sizeof(double)];
    void *scratch = stack;
    unsigned shift = 0;
    if (e->fast->heap) {
        shift = e->fast->xshift; /* fixed: node slots are premultiplied by it */
    } else {
        while (shift < MAX_BLOCK_SHIFT && ((size_t)1 << shift) < n_rows &&
               (row_bytes << (shift + 1)) <= sizeof stack)
            shift++;
    }
    if (row_bytes << shift > sizeof stack) {
        scratch = malloc(row_bytes << shift);
        if (!scratch)
            return bs_err_set(err, BS_ENOMEM, "out of memory for %zu rows of %d features",
                              (size_t)1 << shift, e->n_features);
    }
    const size_t cap = (size_t)1 << shift;
    size_t x_bytes = (r.slots << shift) * sizeof(float);
    x_bytes = (x_bytes + sizeof(double) - 1) / sizeof(double) * sizeof(double);
    r.shift = shift;
    r.xt = r.xr = scratch;
    char *sums = (char *)scratch + x_bytes;
    if (e->float32_sums)
        r.sf = (float *)sums;
    else
        r.sd = (double *)sums;

    for (size_t done = 0; done < n_rows; done += cap) {
        int nb = (int)(n_rows - done < cap ? n_rows - done : cap);
        predict_block(&r, rows + done * (size_t)e->n_features, nb,
                      out + done * (size_t)e->n_outputs);
    }
    if (scratch != stack)
        free(scratch);
    return 0;
}

/* A batch of at least PARALLEL_MIN_ROWS rows is split into parts of
 * PART_ROWS rows that run on the other cores too (bs_parallel_for), as libxgboost's
 * OpenMP loop does; every row is computed exactly as on one thread. */
#define PARALLEL_MIN_ROWS 512
#define PART_ROWS 64 /* a block of the heap layout */

typedef struct {
    const bs__tree_ensemble_t *e;
    const double *rows;
    double *out;
    size_t n_rows;
    atomic_int failed;
    bs_err_t err;
} parts_t;

static void predict_part(void *ctx, int i)
{
    parts_t *p = ctx;
    size_t start = (size_t)i * PART_ROWS;
    size_t n = p->n_rows - start < PART_ROWS ? p->n_rows - start : PART_ROWS;
    bs_err_t err;
    if (predict_rows(p->e, p->rows + start * (size_t)p->e->n_features, n,
                     p->out + start * (size_t)p->e->n_outputs, &err) != 0 &&
        atomic_exchange(&p->failed, 1) == 0)
        p->err = err;
}

static int trees_predict(const void *impl, const double *rows, size_t n_rows, double *out,
                         bs_err_t *err)
{
    const bs__tree_ensemble_t *e = impl;
    if (!e || !e->fast)
        return bs_err_set(err, BS_EINTERNAL, "tree ensemble was not prepared");
    if (n_rows < PARALLEL_MIN_ROWS || bs_parallel_width() == 1)
        return n_rows ? predict_rows(e, rows, n_rows, out, err) : 0;
    parts_t p = {.e = e, .rows = rows, .out = out, .n_rows = n_rows};
    atomic_init(&p.failed, 0);
    bs_parallel_for((int)((n_rows + PART_ROWS - 1) / PART_ROWS), predict_part, &p);
    if (atomic_load(&p.failed)) {
        *err = p.err;
        return err->code;
    }
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
