/*
 * The preprocessing chain of the basalt model format and the pipeline runtime
 * that puts it in front of one estimator (docs/model-format.md).
 *
 * A chain is a list of column groups (scikit-learn's ColumnTransformer): each
 * gathers some raw input columns, runs its steps in order (impute, standard
 * scale, min-max scale, one-hot) and writes its result at its offset of the
 * estimator input; groups are concatenated in order. Every step works column
 * by column on a small vector that ping-pongs between two scratch buffers;
 * only one-hot changes the width. The arithmetic is the one scikit-learn
 * performs ((x - mean) / scale; x * scale + min), in double, so results match
 * to the last bits.
 *
 * The pipeline runtime transforms rows into a scratch block (a stack buffer;
 * the heap only when a model is too wide for it) and hands them to the
 * estimator: linear and MLP row by row, tree ensembles in chunks through
 * bs__tree_vtable. Nothing is mutated after load, so predict is thread-safe.
 */
#include "ml/basalt_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STACK_DOUBLES 2048 /* 16 KiB of scratch on the caller's stack */

static const char *feature_name(const bs__prep_t *p, int i)
{
    return p->features ? p->features[i].name : "?";
}

/* Category inputs must hold an index into their list, -1 where unknowns are legal, or NaN. */
static int check_categories(const bs__prep_t *p, const double *row, size_t ri, bs_err_t *err)
{
    for (int i = 0; i < p->n_inputs; i++) {
        int32_t n = p->n_cat[i];
        if (n <= 0)
            continue;
        double v = row[i];
        if (isnan(v))
            continue;
        if (v == -1.0) {
            if (!p->unknown_ok[i])
                return bs_err_setf(err, BS_EINVAL, feature_name(p, i),
                                   "row %zu: feature '%s' has an unknown category and the "
                                   "model's one-hot encoder rejects unknown categories",
                                   ri, feature_name(p, i));
            continue;
        }
        if (!(v >= 0 && v < (double)n && v == floor(v)))
            return bs_err_setf(err, BS_EINVAL, feature_name(p, i),
                               "row %zu: feature '%s' has category index %g, expected an "
                               "integer in [0, %d) or -1",
                               ri, feature_name(p, i), v, (int)n);
    }
    return 0;
}

int bs__prep_apply(const bs__prep_t *p, const double *row, double *out, double *scratch,
                   size_t ri, bs_err_t *err)
{
    int rc = check_categories(p, row, ri, err);
    if (rc)
        return rc;
    for (int g = 0; g < p->n_groups; g++) {
        const bs__prep_group_t *G = &p->groups[g];
        double *a = scratch, *b = scratch + p->max_width;
        int w = G->n_cols;
        for (int c = 0; c < w; c++)
            a[c] = row[G->cols[c]];
        for (int s = 0; s < G->n_steps; s++) {
            const bs__prep_step_t *S = &G->steps[s];
            switch (S->kind) {
            case BS__PREP_IMPUTE:
                for (int i = 0; i < w; i++)
                    if (isnan(a[i]))
                        a[i] = S->a[i];
                break;
            case BS__PREP_STANDARD:
                for (int i = 0; i < w; i++)
                    a[i] = (a[i] - S->a[i]) / S->b[i];
                break;
            case BS__PREP_MINMAX:
                for (int i = 0; i < w; i++) {
                    double v = a[i] * S->a[i] + S->b[i];
                    if (S->clip && !isnan(v))
                        v = v < S->clip_lo ? S->clip_lo : v > S->clip_hi ? S->clip_hi : v;
                    a[i] = v;
                }
                break;
            case BS__PREP_ONEHOT: {
                int k = 0;
                for (int i = 0; i < w; i++) {
                    int n = S->n_cat[i];
                    double v = a[i];
                    /* before a one-hot step, position i is still group column i */
                    int f = G->cols[i];
                    if (isnan(v))
                        return bs_err_setf(err, BS_EINVAL, feature_name(p, f),
                                           "row %zu: feature '%s' is missing and the model has "
                                           "no imputer for it",
                                           ri, feature_name(p, f));
                    memset(b + k, 0, sizeof(double) * (size_t)n);
                    if (v >= 0)
                        b[k + (int)v] = 1.0;
                    else if (!S->ignore_unknown)
                        return bs_err_setf(err, BS_EINVAL, feature_name(p, f),
                                           "row %zu: feature '%s' has an unknown category and "
                                           "the model's one-hot encoder rejects unknown "
                                           "categories",
                                           ri, feature_name(p, f));
                    k += n;
                }
                double *t = a;
                a = b;
                b = t;
                w = k;
                break;
            }
            }
        }
        memcpy(out + G->out_offset, a, sizeof(double) * (size_t)w);
    }
    return 0;
}

void bs__prep_deinit(bs__prep_t *p)
{
    if (!p)
        return;
    for (int g = 0; g < p->n_groups; g++) {
        bs__prep_group_t *G = &p->groups[g];
        for (int s = 0; s < G->n_steps; s++) {
            free(G->steps[s].a);
            free(G->steps[s].b);
            free(G->steps[s].n_cat);
        }
        free(G->steps);
        free(G->cols);
    }
    free(p->groups);
    free(p->n_cat);
    free(p->unknown_ok);
    free(p->out_src);
    memset(p, 0, sizeof *p);
}

size_t bs__prep_memory(const bs__prep_t *p)
{
    size_t n = sizeof(bs__prep_group_t) * (size_t)p->n_groups +
               (sizeof(int32_t) * 2 + 1) * (size_t)p->n_inputs +
               sizeof(int32_t) * (size_t)p->width_out;
    for (int g = 0; g < p->n_groups; g++) {
        const bs__prep_group_t *G = &p->groups[g];
        n += sizeof(int32_t) * (size_t)G->n_cols + sizeof(bs__prep_step_t) * (size_t)G->n_steps;
        for (int s = 0; s < G->n_steps; s++)
            n += (2 * sizeof(double) + sizeof(int32_t)) * (size_t)G->steps[s].width_in;
    }
    return n;
}

/* ---- pipeline runtime ------------------------------------------------------------------- */

/* Linear and MLP estimators need every input; trees route NaN by their default direction. */
static int check_finite_input(const bs__pipeline_t *pl, const double *x, size_t ri,
                              bs_err_t *err)
{
    const bs__prep_t *p = &pl->prep;
    for (int i = 0; i < p->width_out; i++)
        if (isnan(x[i])) {
            int f = p->out_src[i];
            return bs_err_setf(err, BS_EINVAL, feature_name(p, f),
                               "row %zu: feature '%s' is missing and the model has no imputer "
                               "for it",
                               ri, feature_name(p, f));
        }
    return 0;
}

static void estimate_row(const bs__pipeline_t *pl, const double *x, double *out, double *scratch)
{
    if (pl->est_kind == BS__EST_LINEAR)
        bs__linear_predict_row(pl->linear, x, out, scratch);
    else
        bs__mlp_predict_row(pl->mlp, x, out, scratch);
}

static int predict_rowwise(const bs__pipeline_t *pl, const double *rows, size_t n_rows,
                           double *out, bs_err_t *err)
{
    const bs__prep_t *p = &pl->prep;
    size_t prep_n = p->identity ? 0 : 2 * (size_t)p->max_width;
    size_t x_n = p->identity ? 0 : (size_t)p->width_out;
    size_t est_n = pl->est_kind == BS__EST_LINEAR ? (size_t)pl->linear->n_rows
                                                  : 2 * (size_t)pl->mlp->max_width;
    size_t need = prep_n + x_n + est_n;
    double stack[STACK_DOUBLES];
    double *buf = stack;
    if (need > STACK_DOUBLES) {
        buf = malloc(sizeof(double) * need);
        if (!buf)
            return bs_err_set(err, BS_ENOMEM, "cannot allocate %zu bytes of scratch",
                              sizeof(double) * need);
    }
    double *prep_scratch = buf, *x = buf + prep_n, *est_scratch = buf + prep_n + x_n;
    int rc = 0;
    for (size_t r = 0; r < n_rows; r++) {
        const double *row = rows + r * (size_t)p->n_inputs;
        const double *in = row;
        if (!p->identity) {
            rc = bs__prep_apply(p, row, x, prep_scratch, r, err);
            if (rc)
                break;
            in = x;
        }
        rc = check_finite_input(pl, in, r, err);
        if (rc)
            break;
        estimate_row(pl, in, out + r * (size_t)pl->n_outputs, est_scratch);
    }
    if (buf != stack)
        free(buf);
    return rc;
}

static int predict_trees(const bs__pipeline_t *pl, const double *rows, size_t n_rows, double *out,
                         bs_err_t *err)
{
    const bs__prep_t *p = &pl->prep;
    if (p->identity)
        return bs__tree_vtable.predict(pl->trees, rows, n_rows, out, err);
    size_t prep_n = 2 * (size_t)p->max_width, w = (size_t)p->width_out;
    size_t chunk = STACK_DOUBLES > prep_n ? (STACK_DOUBLES - prep_n) / w : 0;
    double stack[STACK_DOUBLES];
    double *buf = stack;
    if (chunk == 0) {
        chunk = n_rows < 16 ? n_rows : 16;
        buf = malloc(sizeof(double) * (prep_n + chunk * w));
        if (!buf)
            return bs_err_set(err, BS_ENOMEM, "cannot allocate %zu bytes of scratch",
                              sizeof(double) * (prep_n + chunk * w));
    }
    double *x = buf + prep_n;
    int rc = 0;
    for (size_t r0 = 0; r0 < n_rows && !rc; r0 += chunk) {
        size_t n = n_rows - r0 < chunk ? n_rows - r0 : chunk;
        for (size_t r = 0; r < n && !rc; r++)
            rc = bs__prep_apply(p, rows + (r0 + r) * (size_t)p->n_inputs, x + r * w, buf, r0 + r,
                                err);
        if (!rc)
            rc = bs__tree_vtable.predict(pl->trees, x, n, out + r0 * (size_t)pl->n_outputs, err);
    }
    if (buf != stack)
        free(buf);
    return rc;
}

static int pipeline_predict(const void *impl, const double *rows, size_t n_rows, double *out,
                            bs_err_t *err)
{
    const bs__pipeline_t *pl = impl;
    if (n_rows == 0)
        return 0;
    if (pl->est_kind == BS__EST_TREES)
        return predict_trees(pl, rows, n_rows, out, err);
    return predict_rowwise(pl, rows, n_rows, out, err);
}

void bs__pipeline_free(void *impl)
{
    bs__pipeline_t *pl = impl;
    if (!pl)
        return;
    bs__prep_deinit(&pl->prep);
    bs__linear_free(pl->linear);
    bs__mlp_free(pl->mlp);
    bs__tree_ensemble_free(pl->trees);
    free(pl);
}

static size_t pipeline_memory(const void *impl)
{
    const bs__pipeline_t *pl = impl;
    size_t n = sizeof *pl + bs__prep_memory(&pl->prep);
    if (pl->linear)
        n += bs__linear_memory(pl->linear);
    if (pl->mlp)
        n += bs__mlp_memory(pl->mlp);
    if (pl->trees)
        n += bs__tree_vtable.memory(pl->trees);
    return n;
}

#define VT(kind_, missing_, batching_)                                                             \
    {                                                                                              \
        .kind = kind_, .predict = pipeline_predict, .free = bs__pipeline_free,                     \
        .memory = pipeline_memory, .handles_missing = missing_, .prefers_batching = batching_,     \
    }

static const bs__ml_vtable_t vtables[3][2] = {
    [BS__EST_LINEAR] = {VT("linear", 0, 0), VT("linear", 1, 0)},
    [BS__EST_TREES] = {VT("trees", 0, 0), VT("trees", 1, 0)},
    [BS__EST_MLP] = {VT("mlp", 0, 1), VT("mlp", 1, 1)},
};

const bs__ml_vtable_t *bs__pipeline_vtable(bs__est_kind_t kind, int handles_missing)
{
    return &vtables[kind][handles_missing ? 1 : 0];
}
