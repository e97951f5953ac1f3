/*
 * Loader of the basalt model JSON format ("basalt_model": 1; specified in
 * docs/model-format.md): an input schema, an optional preprocessing chain of
 * column groups, one estimator (linear, tree ensemble, MLP) and the output.
 *
 * The file is parsed with cJSON and checked completely before anything runs:
 * every count comes from the arrays actually present (never from a declared
 * size) and is capped with the limits of ml.h, every number must be finite,
 * every index in range, tree links must point strictly forward (so no cycle
 * can exist) and the widths of preprocessing, estimator and output must agree.
 * Every rejection is BS_EINVAL with a lower-case message naming the field, the
 * value and the limit. The result is a bs__pipeline_t (preprocess.c) wrapped
 * into a model; tree estimators become a bs__tree_ensemble_t (trees.c) with
 * scikit-learn's `<=` split rule.
 */
#include "ml/basalt_int.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUPS BS_ML_MAX_FEATURES
#define MAX_STEPS 64          /* steps in one preprocessing group */
#define MAX_LAYERS 1024       /* MLP layers */
#define MAX_WIDTH (1 << 22)   /* any intermediate or estimator input width */
#define MAX_NAME 1024         /* bytes in a feature name, category or label */

typedef struct {
    const char *name;
    int32_t index;
} name_ix_t;

typedef struct {
    bs_err_t *err;
    bs_ml_schema_t schema;
    name_ix_t *by_name; /* inputs sorted by name */
    bs__pipeline_t *pl;
    /* preprocessing analysis */
    uint8_t *onehot_ignore, *onehot_error; /* per input: used by such a one-hot step */
    uint8_t *nan_into_onehot;             /* per input: a possibly-missing value reaches a one-hot step */
    uint8_t *nan_at_output;               /* per estimator column: may be NaN */
} loader_t;

/* ---- small JSON helpers ------------------------------------------------------------------ */

static int fail(loader_t *L, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(loader_t *L, const char *field, const char *fmt, ...)
{
    if (L->err) {
        char msg[sizeof L->err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        bs_err_setf(L->err, BS_EINVAL, field, "%s", msg);
    }
    return BS_EINVAL;
}

static int oom(loader_t *L, size_t bytes)
{
    return bs_err_set(L->err, BS_ENOMEM, "cannot allocate %zu bytes while loading the model",
                      bytes);
}

static const char *type_name(const cJSON *v)
{
    if (!v)
        return "nothing";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    return "an object";
}

static void *xcalloc(loader_t *L, size_t n, size_t size, int *rc)
{
    if (n == 0)
        n = 1;
    void *p = calloc(n, size);
    if (!p)
        *rc = oom(L, n * size);
    return p;
}

static int get_number(loader_t *L, const cJSON *v, const char *field, double *out)
{
    if (!cJSON_IsNumber(v))
        return fail(L, field, "%s must be a number, got %s", field, type_name(v));
    if (!isfinite(v->valuedouble))
        return fail(L, field, "%s must be finite, got %g", field, v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

static int get_int(loader_t *L, const cJSON *v, const char *field, long lo, long hi, long *out)
{
    if (!cJSON_IsNumber(v))
        return fail(L, field, "%s must be an integer, got %s", field, type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return fail(L, field, "%s must be an integer, got %g", field, d);
    if (d < (double)lo || d > (double)hi)
        return fail(L, field, "%s is %g, expected %ld..%ld", field, d, lo, hi);
    *out = (long)d;
    return 0;
}

static int get_string(loader_t *L, const cJSON *v, const char *field, const char **out)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return fail(L, field, "%s must be a string, got %s", field, type_name(v));
    size_t n = strlen(v->valuestring);
    if (n > MAX_NAME)
        return fail(L, field, "%s is %zu bytes long, the limit is %d", field, n, MAX_NAME);
    *out = v->valuestring;
    return 0;
}

/* An array of min..max elements; *n gets its length. */
static int get_array(loader_t *L, const cJSON *v, const char *field, int min, int max, int *n)
{
    if (!cJSON_IsArray(v))
        return fail(L, field, "%s must be an array, got %s", field, type_name(v));
    int c = cJSON_GetArraySize(v);
    if (c < min || c > max)
        return fail(L, field, "%s has %d elements, expected %d..%d", field, c, min, max);
    *n = c;
    return 0;
}

/* An array of exactly n finite numbers, copied to dst (n doubles). */
static int get_numbers(loader_t *L, const cJSON *v, const char *field, int n, double *dst)
{
    int c;
    if (!cJSON_IsArray(v))
        return fail(L, field, "%s must be an array, got %s", field, type_name(v));
    c = cJSON_GetArraySize(v);
    if (c != n)
        return fail(L, field, "%s has %d values, expected %d", field, c, n);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        char f[96];
        snprintf(f, sizeof f, "%s[%d]", field, i);
        int rc = get_number(L, e, f, &dst[i++]);
        if (rc)
            return rc;
    }
    return 0;
}

static const cJSON *member(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int cmp_name_ix(const void *a, const void *b)
{
    return strcmp(((const name_ix_t *)a)->name, ((const name_ix_t *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Index of a unique name in a sorted list, or -1. */
static int find_input(const loader_t *L, const char *name)
{
    name_ix_t key = {name, 0};
    const name_ix_t *hit = bsearch(&key, L->by_name, (size_t)L->schema.n_features,
                                   sizeof *L->by_name, cmp_name_ix);
    return hit ? hit->index : -1;
}

static int find_category(const bs_ml_feature_t *f, const char *s)
{
    for (int i = 0; i < f->n_categories; i++)
        if (strcmp(f->categories[i], s) == 0)
            return i;
    return -1;
}

/* Rejects duplicates in a list of n strings (sorted copy). */
static int check_unique(loader_t *L, char **strs, int n, const char *field, const char *what)
{
    int rc = 0;
    char **s = xcalloc(L, (size_t)n, sizeof *s, &rc);
    if (!s)
        return rc;
    memcpy(s, strs, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_str);
    for (int i = 1; i < n && !rc; i++)
        if (strcmp(s[i - 1], s[i]) == 0)
            rc = fail(L, field, "%s lists %s '%s' twice", field, what, s[i]);
    free(s);
    return rc;
}

/* ---- inputs ------------------------------------------------------------------------------ */

static int parse_ftype(loader_t *L, const cJSON *v, const char *field, bs_ml_ftype_t *t)
{
    const char *s;
    int rc = get_string(L, v, field, &s);
    if (rc)
        return rc;
    if (!strcmp(s, "float"))
        *t = BS_ML_FLOAT;
    else if (!strcmp(s, "int"))
        *t = BS_ML_INT;
    else if (!strcmp(s, "bool"))
        *t = BS_ML_BOOL;
    else if (!strcmp(s, "category"))
        *t = BS_ML_CATEGORY;
    else
        return fail(L, field, "%s is '%s', expected float, int, bool or category", field, s);
    return 0;
}

static int parse_input(loader_t *L, const cJSON *in, int i, bs_ml_feature_t *f)
{
    char fld[96];
    int rc, n;
    const char *s;
    snprintf(fld, sizeof fld, "inputs[%d]", i);
    if (!cJSON_IsObject(in))
        return fail(L, fld, "%s must be an object, got %s", fld, type_name(in));

    snprintf(fld, sizeof fld, "inputs[%d].name", i);
    if ((rc = get_string(L, member(in, "name"), fld, &s)))
        return rc;
    if (!*s)
        return fail(L, fld, "%s must not be empty", fld);
    if (!(f->name = strdup(s)))
        return oom(L, strlen(s) + 1);

    snprintf(fld, sizeof fld, "inputs[%d].type", i);
    if ((rc = parse_ftype(L, member(in, "type"), fld, &f->type)))
        return rc;

    const cJSON *cats = member(in, "categories");
    snprintf(fld, sizeof fld, "inputs[%d].categories", i);
    if (f->type == BS_ML_CATEGORY) {
        if ((rc = get_array(L, cats, fld, 1, BS_ML_MAX_CATEGORIES, &n)))
            return rc;
        if (!(f->categories = xcalloc(L, (size_t)n, sizeof(char *), &rc)))
            return rc;
        const cJSON *c;
        int k = 0;
        cJSON_ArrayForEach(c, cats)
        {
            char cf[112];
            snprintf(cf, sizeof cf, "inputs[%d].categories[%d]", i, k);
            if ((rc = get_string(L, c, cf, &s)))
                return rc;
            if (!(f->categories[k] = strdup(s)))
                return oom(L, strlen(s) + 1);
            f->n_categories = ++k;
        }
        if ((rc = check_unique(L, f->categories, n, fld, "category")))
            return rc;
    } else if (cats && !cJSON_IsNull(cats)) {
        return fail(L, fld, "%s is only allowed for type category (feature '%s')", fld, f->name);
    }

    const cJSON *mn = member(in, "min"), *mx = member(in, "max");
    if (mn && !cJSON_IsNull(mn)) {
        snprintf(fld, sizeof fld, "inputs[%d].min", i);
        if (f->type == BS_ML_CATEGORY)
            return fail(L, fld, "%s is not allowed for a category feature ('%s')", fld, f->name);
        if ((rc = get_number(L, mn, fld, &f->min)))
            return rc;
        f->has_min = 1;
    }
    if (mx && !cJSON_IsNull(mx)) {
        snprintf(fld, sizeof fld, "inputs[%d].max", i);
        if (f->type == BS_ML_CATEGORY)
            return fail(L, fld, "%s is not allowed for a category feature ('%s')", fld, f->name);
        if ((rc = get_number(L, mx, fld, &f->max)))
            return rc;
        f->has_max = 1;
    }
    if (f->has_min && f->has_max && f->min > f->max)
        return fail(L, fld, "inputs[%d] ('%s') has min %g above max %g", i, f->name, f->min,
                    f->max);

    const cJSON *def = member(in, "default");
    snprintf(fld, sizeof fld, "inputs[%d].default", i);
    if (def && !cJSON_IsNull(def)) {
        if (f->type == BS_ML_CATEGORY) {
            if ((rc = get_string(L, def, fld, &s)))
                return rc;
            int k = find_category(f, s);
            if (k < 0)
                return fail(L, fld, "%s '%s' is not one of the %d categories of '%s'", fld, s,
                            f->n_categories, f->name);
            f->default_value = k;
        } else if (f->type == BS_ML_BOOL && cJSON_IsBool(def)) {
            f->default_value = cJSON_IsTrue(def) ? 1.0 : 0.0;
        } else {
            if ((rc = get_number(L, def, fld, &f->default_value)))
                return rc;
            if (f->type == BS_ML_BOOL && f->default_value != 0 && f->default_value != 1)
                return fail(L, fld, "%s of bool feature '%s' is %g, expected 0 or 1", fld,
                            f->name, f->default_value);
            if (f->type == BS_ML_INT && f->default_value != floor(f->default_value))
                return fail(L, fld, "%s of int feature '%s' is %g, expected an integer", fld,
                            f->name, f->default_value);
            if ((f->has_min && f->default_value < f->min) ||
                (f->has_max && f->default_value > f->max))
                return fail(L, fld, "%s %g of '%s' is outside [min, max]", fld,
                            f->default_value, f->name);
        }
        f->has_default = 1;
    }

    const cJSON *req = member(in, "required");
    f->required = !f->has_default;
    if (req && !cJSON_IsNull(req)) {
        snprintf(fld, sizeof fld, "inputs[%d].required", i);
        if (!cJSON_IsBool(req))
            return fail(L, fld, "%s must be a boolean, got %s", fld, type_name(req));
        f->required = cJSON_IsTrue(req);
    }
    return 0;
}

static int parse_inputs(loader_t *L, const cJSON *root)
{
    const cJSON *inputs = member(root, "inputs");
    int n, rc;
    if ((rc = get_array(L, inputs, "inputs", 1, BS_ML_MAX_FEATURES, &n)))
        return rc;
    if (!(L->schema.features = xcalloc(L, (size_t)n, sizeof(bs_ml_feature_t), &rc)))
        return rc;
    int i = 0;
    const cJSON *in;
    cJSON_ArrayForEach(in, inputs)
    {
        L->schema.n_features = i + 1;
        if ((rc = parse_input(L, in, i, &L->schema.features[i])))
            return rc;
        i++;
    }
    if (!(L->by_name = xcalloc(L, (size_t)n, sizeof *L->by_name, &rc)))
        return rc;
    for (i = 0; i < n; i++)
        L->by_name[i] = (name_ix_t){L->schema.features[i].name, i};
    qsort(L->by_name, (size_t)n, sizeof *L->by_name, cmp_name_ix);
    for (i = 1; i < n; i++)
        if (strcmp(L->by_name[i - 1].name, L->by_name[i].name) == 0)
            return fail(L, "inputs", "inputs lists feature name '%s' twice",
                        L->by_name[i].name);
    return 0;
}

/* ---- preprocessing ----------------------------------------------------------------------- */

/* Per-position state while a group's steps are checked. */
typedef struct {
    int32_t src;   /* input feature the position derives from */
    int category;  /* still a raw category index (not yet one-hot encoded) */
    int maybe_nan; /* a missing value may be here */
} pos_t;

static int step_numeric_only(loader_t *L, const pos_t *pos, int w, const char *fld,
                             const char *op)
{
    for (int i = 0; i < w; i++)
        if (pos[i].category)
            return fail(L, fld, "%s (%s) applies to category feature '%s'; one-hot encode it "
                                "first",
                        fld, op, L->schema.features[pos[i].src].name);
    return 0;
}

static int parse_step(loader_t *L, const cJSON *st, int g, int s, bs__prep_step_t *S, pos_t **pos,
                      int *w, int *dropped)
{
    char fld[96], sub[128];
    const char *op;
    int rc;
    snprintf(fld, sizeof fld, "preprocess[%d].steps[%d]", g, s);
    if (!cJSON_IsObject(st))
        return fail(L, fld, "%s must be an object, got %s", fld, type_name(st));
    snprintf(sub, sizeof sub, "%s.op", fld);
    if ((rc = get_string(L, member(st, "op"), sub, &op)))
        return rc;
    int width = *w;
    pos_t *p = *pos;
    S->width_in = S->width_out = width;

    if (!strcmp(op, "passthrough"))
        return 1; /* no runtime step */
    if (!strcmp(op, "drop")) {
        *dropped = 1;
        return 1;
    }
    if (!strcmp(op, "impute")) {
        S->kind = BS__PREP_IMPUTE;
        if (!(S->a = xcalloc(L, (size_t)width, sizeof(double), &rc)))
            return rc;
        const cJSON *fill = member(st, "fill");
        snprintf(sub, sizeof sub, "%s.fill", fld);
        int n;
        if ((rc = get_array(L, fill, sub, width, width, &n)))
            return rc;
        const cJSON *e;
        int i = 0;
        cJSON_ArrayForEach(e, fill)
        {
            char ef[144];
            snprintf(ef, sizeof ef, "%s[%d]", sub, i);
            if (p[i].category) {
                const bs_ml_feature_t *f = &L->schema.features[p[i].src];
                const char *c;
                if ((rc = get_string(L, e, ef, &c)))
                    return rc;
                int k = find_category(f, c);
                if (k < 0)
                    return fail(L, ef, "%s '%s' is not one of the %d categories of '%s'", ef, c,
                                f->n_categories, f->name);
                S->a[i] = k;
            } else if ((rc = get_number(L, e, ef, &S->a[i]))) {
                return rc;
            }
            p[i].maybe_nan = 0;
            i++;
        }
        return 0;
    }
    if (!strcmp(op, "standard_scale") || !strcmp(op, "min_max_scale")) {
        int standard = op[0] == 's';
        if ((rc = step_numeric_only(L, p, width, fld, op)))
            return rc;
        S->kind = standard ? BS__PREP_STANDARD : BS__PREP_MINMAX;
        if (!(S->a = xcalloc(L, (size_t)width, sizeof(double), &rc)) ||
            !(S->b = xcalloc(L, (size_t)width, sizeof(double), &rc)))
            return rc;
        snprintf(sub, sizeof sub, "%s.%s", fld, standard ? "mean" : "scale");
        if ((rc = get_numbers(L, member(st, standard ? "mean" : "scale"), sub, width, S->a)))
            return rc;
        snprintf(sub, sizeof sub, "%s.%s", fld, standard ? "scale" : "min");
        if ((rc = get_numbers(L, member(st, standard ? "scale" : "min"), sub, width, S->b)))
            return rc;
        if (standard)
            for (int i = 0; i < width; i++)
                if (S->b[i] == 0)
                    return fail(L, sub, "%s[%d] is 0; a standard scale must be non-zero", sub, i);
        const cJSON *clip = member(st, "clip");
        if (!standard && clip && !cJSON_IsNull(clip)) {
            double lh[2];
            snprintf(sub, sizeof sub, "%s.clip", fld);
            if ((rc = get_numbers(L, clip, sub, 2, lh)))
                return rc;
            if (lh[0] > lh[1])
                return fail(L, sub, "%s is [%g, %g]; the lower bound is above the upper", sub,
                            lh[0], lh[1]);
            S->clip = 1;
            S->clip_lo = lh[0];
            S->clip_hi = lh[1];
        }
        return 0;
    }
    if (!strcmp(op, "one_hot")) {
        S->kind = BS__PREP_ONEHOT;
        const cJSON *hu = member(st, "handle_unknown");
        if (hu && !cJSON_IsNull(hu)) {
            const char *h;
            snprintf(sub, sizeof sub, "%s.handle_unknown", fld);
            if ((rc = get_string(L, hu, sub, &h)))
                return rc;
            if (!strcmp(h, "ignore"))
                S->ignore_unknown = 1;
            else if (strcmp(h, "error"))
                return fail(L, sub, "%s is '%s', expected error or ignore", sub, h);
        }
        if (!(S->n_cat = xcalloc(L, (size_t)width, sizeof(int32_t), &rc)))
            return rc;
        long out = 0;
        for (int i = 0; i < width; i++) {
            const bs_ml_feature_t *f = &L->schema.features[p[i].src];
            if (!p[i].category)
                return fail(L, fld, "%s (one_hot) applies to '%s', which is not a category "
                                    "feature or was already encoded",
                            fld, f->name);
            S->n_cat[i] = f->n_categories;
            out += f->n_categories;
            if (out > MAX_WIDTH)
                return fail(L, fld, "%s (one_hot) produces more than %d columns", fld,
                            MAX_WIDTH);
            if (p[i].maybe_nan)
                L->nan_into_onehot[p[i].src] = 1;
            if (S->ignore_unknown)
                L->onehot_ignore[p[i].src] = 1;
            else
                L->onehot_error[p[i].src] = 1;
        }
        pos_t *np = xcalloc(L, (size_t)out, sizeof *np, &rc);
        if (!np)
            return rc;
        int k = 0;
        for (int i = 0; i < width; i++)
            for (int c = 0; c < S->n_cat[i]; c++)
                np[k++] = (pos_t){p[i].src, 0, 0};
        free(p);
        *pos = np;
        *w = (int)out;
        S->width_out = (int)out;
        return 0;
    }
    return fail(L, sub, "%s is '%s', expected impute, standard_scale, min_max_scale, one_hot, "
                        "passthrough or drop",
                sub, op);
}

static int parse_group(loader_t *L, const cJSON *grp, int g, bs__prep_group_t *G, pos_t **outpos,
                       int *outw)
{
    char fld[96];
    int rc, n;
    snprintf(fld, sizeof fld, "preprocess[%d]", g);
    if (!cJSON_IsObject(grp))
        return fail(L, fld, "%s must be an object, got %s", fld, type_name(grp));
    const cJSON *cols = member(grp, "columns");
    snprintf(fld, sizeof fld, "preprocess[%d].columns", g);
    if ((rc = get_array(L, cols, fld, 1, BS_ML_MAX_FEATURES, &n)))
        return rc;
    if (!(G->cols = xcalloc(L, (size_t)n, sizeof(int32_t), &rc)))
        return rc;
    pos_t *pos = xcalloc(L, (size_t)n, sizeof *pos, &rc);
    if (!pos)
        return rc;
    *outpos = pos;
    const cJSON *c;
    int i = 0;
    cJSON_ArrayForEach(c, cols)
    {
        char cf[112];
        const char *name;
        snprintf(cf, sizeof cf, "%s[%d]", fld, i);
        if ((rc = get_string(L, c, cf, &name)))
            return rc;
        int ix = find_input(L, name);
        if (ix < 0)
            return fail(L, cf, "%s names '%s', which is not an input", cf, name);
        G->cols[i] = ix;
        pos[i] = (pos_t){ix, L->schema.features[ix].type == BS_ML_CATEGORY, 1};
        G->n_cols = ++i;
    }
    int w = n, max_w = n, dropped = 0;
    const cJSON *steps = member(grp, "steps");
    snprintf(fld, sizeof fld, "preprocess[%d].steps", g);
    int ns = 0;
    if (steps && !cJSON_IsNull(steps) && (rc = get_array(L, steps, fld, 0, MAX_STEPS, &ns)))
        return rc;
    if (ns && !(G->steps = xcalloc(L, (size_t)ns, sizeof *G->steps, &rc)))
        return rc;
    const cJSON *st;
    int s = 0;
    cJSON_ArrayForEach(st, steps)
    {
        if (dropped)
            return fail(L, fld, "%s: drop must be the only step of its group", fld);
        bs__prep_step_t *S = &G->steps[G->n_steps];
        rc = parse_step(L, st, g, s, S, outpos, &w, &dropped);
        if (rc < 0) { /* the failed step is not counted yet: free what it holds */
            free(S->a);
            free(S->b);
            free(S->n_cat);
            memset(S, 0, sizeof *S);
            return rc;
        }
        if (rc == 0)
            G->n_steps++;
        else
            memset(S, 0, sizeof *S);
        if (dropped && s > 0)
            return fail(L, fld, "%s: drop must be the only step of its group", fld);
        if (w > max_w)
            max_w = w;
        s++;
    }
    if (dropped) {
        *outw = 0;
        G->width_out = 0;
        G->max_width = max_w;
        return 0;
    }
    for (i = 0; i < w; i++)
        if ((*outpos)[i].category)
            return fail(L, fld, "category feature '%s' reaches the estimator unencoded in "
                                "preprocess[%d]; add a one_hot step",
                        L->schema.features[(*outpos)[i].src].name, g);
    G->width_out = w;
    G->max_width = max_w;
    *outw = w;
    return 0;
}

static int parse_preprocess(loader_t *L, const cJSON *root)
{
    bs__prep_t *P = &L->pl->prep;
    int nin = L->schema.n_features, rc, n;
    P->n_inputs = nin;
    if (!(P->n_cat = xcalloc(L, (size_t)nin, sizeof(int32_t), &rc)) ||
        !(P->unknown_ok = xcalloc(L, (size_t)nin, 1, &rc)) ||
        !(L->onehot_ignore = xcalloc(L, (size_t)nin, 1, &rc)) ||
        !(L->onehot_error = xcalloc(L, (size_t)nin, 1, &rc)) ||
        !(L->nan_into_onehot = xcalloc(L, (size_t)nin, 1, &rc)))
        return rc;
    for (int i = 0; i < nin; i++)
        if (L->schema.features[i].type == BS_ML_CATEGORY)
            P->n_cat[i] = L->schema.features[i].n_categories;

    const cJSON *pre = member(root, "preprocess");
    if (!pre || cJSON_IsNull(pre)) {
        P->identity = 1;
        P->width_out = nin;
        for (int i = 0; i < nin; i++)
            if (L->schema.features[i].type == BS_ML_CATEGORY)
                return fail(L, "preprocess",
                            "input '%s' is a category feature, which needs a one_hot step in "
                            "preprocess",
                            L->schema.features[i].name);
        if (!(P->out_src = xcalloc(L, (size_t)nin, sizeof(int32_t), &rc)) ||
            !(L->nan_at_output = xcalloc(L, (size_t)nin, 1, &rc)))
            return rc;
        for (int i = 0; i < nin; i++) {
            P->out_src[i] = i;
            L->nan_at_output[i] = 1;
        }
        return 0;
    }
    if ((rc = get_array(L, pre, "preprocess", 1, MAX_GROUPS, &n)))
        return rc;
    if (!(P->groups = xcalloc(L, (size_t)n, sizeof *P->groups, &rc)))
        return rc;
    /* Group outputs are collected first, then flattened into out_src / nan_at_output. */
    pos_t **gpos = xcalloc(L, (size_t)n, sizeof *gpos, &rc);
    if (!gpos)
        return rc;
    const cJSON *grp;
    int g = 0;
    long total = 0;
    cJSON_ArrayForEach(grp, pre)
    {
        int w = 0;
        P->n_groups = g + 1;
        rc = parse_group(L, grp, g, &P->groups[g], &gpos[g], &w);
        if (rc)
            break;
        P->groups[g].out_offset = (int)total;
        total += w;
        if (total > MAX_WIDTH) {
            rc = fail(L, "preprocess", "preprocess produces more than %d columns", MAX_WIDTH);
            break;
        }
        if (P->groups[g].max_width > P->max_width)
            P->max_width = P->groups[g].max_width;
        g++;
    }
    if (!rc && total == 0)
        rc = fail(L, "preprocess", "preprocess produces no columns for the estimator");
    if (!rc) {
        P->width_out = (int)total;
        if ((P->out_src = xcalloc(L, (size_t)total, sizeof(int32_t), &rc)) &&
            (L->nan_at_output = xcalloc(L, (size_t)total, 1, &rc))) {
            for (g = 0; g < P->n_groups; g++)
                for (int i = 0; i < P->groups[g].width_out; i++) {
                    P->out_src[P->groups[g].out_offset + i] = gpos[g][i].src;
                    L->nan_at_output[P->groups[g].out_offset + i] = (uint8_t)gpos[g][i].maybe_nan;
                }
        }
    }
    for (g = 0; g < n; g++)
        free(gpos[g]);
    free(gpos);
    if (rc)
        return rc;
    for (int i = 0; i < nin; i++) {
        P->unknown_ok[i] = L->onehot_ignore[i] && !L->onehot_error[i];
        L->schema.features[i].accepts_unknown = P->unknown_ok[i];
    }
    return 0;
}

/* ---- estimators -------------------------------------------------------------------------- */

static int parse_linear(loader_t *L, const cJSON *est, int n_in)
{
    int rc, rows;
    const char *link = "identity";
    bs__linear_t *m = xcalloc(L, 1, sizeof *m, &rc);
    if (!m)
        return rc;
    L->pl->linear = m;
    m->n_in = n_in;
    const cJSON *lk = member(est, "link");
    if (lk && (rc = get_string(L, lk, "estimator.link", &link)))
        return rc;
    if (!strcmp(link, "identity"))
        m->link = BS__LINK_IDENTITY;
    else if (!strcmp(link, "logistic"))
        m->link = BS__LINK_LOGISTIC;
    else if (!strcmp(link, "softmax"))
        m->link = BS__LINK_SOFTMAX;
    else if (!strcmp(link, "ovr"))
        m->link = BS__LINK_OVR;
    else
        return fail(L, "estimator.link",
                    "estimator.link is '%s', expected identity, logistic, softmax or ovr", link);
    const cJSON *coef = member(est, "coef");
    if ((rc = get_array(L, coef, "estimator.coef", 1, BS_ML_MAX_OUTPUTS, &rows)))
        return rc;
    if (m->link == BS__LINK_LOGISTIC && rows != 1)
        return fail(L, "estimator.coef",
                    "estimator.coef has %d rows; link logistic (binary) takes exactly 1", rows);
    if ((m->link == BS__LINK_SOFTMAX || m->link == BS__LINK_OVR) && rows < 2)
        return fail(L, "estimator.coef", "estimator.coef has %d rows; link %s takes one per "
                                          "class (at least 2)",
                    rows, link);
    /* every row is checked against n_in before anything is allocated for it */
    const cJSON *row;
    int r = 0;
    cJSON_ArrayForEach(row, coef)
    {
        char f[64];
        snprintf(f, sizeof f, "estimator.coef[%d]", r++);
        if (!cJSON_IsArray(row))
            return fail(L, f, "%s must be an array, got %s", f, type_name(row));
        if (cJSON_GetArraySize(row) != n_in)
            return fail(L, f, "%s has %d values, expected %d (the estimator input width)", f,
                        cJSON_GetArraySize(row), n_in);
    }
    m->n_rows = rows;
    m->n_outputs = m->link == BS__LINK_LOGISTIC ? 2 : rows;
    if (!(m->coef = xcalloc(L, (size_t)rows * (size_t)n_in, sizeof(double), &rc)) ||
        !(m->intercept = xcalloc(L, (size_t)rows, sizeof(double), &rc)))
        return rc;
    r = 0;
    cJSON_ArrayForEach(row, coef)
    {
        char f[64];
        snprintf(f, sizeof f, "estimator.coef[%d]", r);
        if ((rc = get_numbers(L, row, f, n_in, m->coef + (size_t)r * (size_t)n_in)))
            return rc;
        r++;
    }
    return get_numbers(L, member(est, "intercept"), "estimator.intercept", rows, m->intercept);
}

static int parse_act(loader_t *L, const cJSON *v, const char *field, int output, bs__act_t *a)
{
    const char *s;
    int rc = get_string(L, v, field, &s);
    if (rc)
        return rc;
    if (!strcmp(s, "identity"))
        *a = BS__ACT_IDENTITY;
    else if (!strcmp(s, "logistic"))
        *a = BS__ACT_LOGISTIC;
    else if (!output && !strcmp(s, "relu"))
        *a = BS__ACT_RELU;
    else if (!output && !strcmp(s, "tanh"))
        *a = BS__ACT_TANH;
    else if (output && !strcmp(s, "softmax"))
        *a = BS__ACT_SOFTMAX;
    else
        return fail(L, field, "%s is '%s', expected %s", field, s,
                    output ? "identity, logistic or softmax" : "identity, relu, tanh or logistic");
    return 0;
}

static int parse_mlp(loader_t *L, const cJSON *est, int n_in)
{
    int rc, nl;
    bs__mlp_t *m = xcalloc(L, 1, sizeof *m, &rc);
    if (!m)
        return rc;
    L->pl->mlp = m;
    m->n_in = n_in;
    if ((rc = parse_act(L, member(est, "activation"), "estimator.activation", 0, &m->hidden)) ||
        (rc = parse_act(L, member(est, "output_activation"), "estimator.output_activation", 1,
                        &m->output)))
        return rc;
    const cJSON *layers = member(est, "layers");
    if ((rc = get_array(L, layers, "estimator.layers", 1, MAX_LAYERS, &nl)))
        return rc;
    if (!(m->layers = xcalloc(L, (size_t)nl, sizeof *m->layers, &rc)))
        return rc;
    m->max_width = n_in;
    int prev = n_in, l = 0;
    const cJSON *lay;
    cJSON_ArrayForEach(lay, layers)
    {
        char f[64], f2[96];
        int n_out, rows;
        snprintf(f, sizeof f, "estimator.layers[%d]", l);
        if (!cJSON_IsObject(lay))
            return fail(L, f, "%s must be an object, got %s", f, type_name(lay));
        bs__mlp_layer_t *Y = &m->layers[l];
        const cJSON *bias = member(lay, "bias"), *wts = member(lay, "weights");
        snprintf(f2, sizeof f2, "%s.bias", f);
        if ((rc = get_array(L, bias, f2, 1, BS_ML_MAX_LAYER_WIDTH, &n_out)))
            return rc;
        snprintf(f2, sizeof f2, "%s.weights", f);
        if ((rc = get_array(L, wts, f2, 0, BS_ML_MAX_FEATURES, &rows)))
            return rc;
        if (rows != prev)
            return fail(L, f2, "%s has %d rows, expected %d (the width of the layer's input)",
                        f2, rows, prev);
        const cJSON *row;
        int i = 0;
        cJSON_ArrayForEach(row, wts)
        {
            char f3[112];
            snprintf(f3, sizeof f3, "%s[%d]", f2, i++);
            if (!cJSON_IsArray(row))
                return fail(L, f3, "%s must be an array, got %s", f3, type_name(row));
            if (cJSON_GetArraySize(row) != n_out)
                return fail(L, f3, "%s has %d values, expected %d (the layer's bias length)",
                            f3, cJSON_GetArraySize(row), n_out);
        }
        Y->n_in = prev;
        Y->n_out = n_out;
        m->n_layers = l + 1;
        if (!(Y->w = xcalloc(L, (size_t)n_out * (size_t)prev, sizeof(double), &rc)) ||
            !(Y->b = xcalloc(L, (size_t)n_out, sizeof(double), &rc)))
            return rc;
        snprintf(f2, sizeof f2, "%s.bias", f);
        if ((rc = get_numbers(L, bias, f2, n_out, Y->b)))
            return rc;
        i = 0;
        cJSON_ArrayForEach(row, wts)
        {
            const cJSON *e;
            int j = 0;
            cJSON_ArrayForEach(e, row)
            {
                char f3[128];
                snprintf(f3, sizeof f3, "%s.weights[%d][%d]", f, i, j);
                /* stored input-major as scikit-learn's coefs_; kept unit-major */
                if ((rc = get_number(L, e, f3, &Y->w[(size_t)j * (size_t)prev + (size_t)i])))
                    return rc;
                j++;
            }
            i++;
        }
        if (n_out > m->max_width)
            m->max_width = n_out;
        prev = n_out;
        l++;
    }
    if (m->output == BS__ACT_LOGISTIC && prev != 1)
        return fail(L, "estimator.output_activation",
                    "estimator.output_activation logistic needs a last layer of 1 unit "
                    "(binary), got %d",
                    prev);
    if (m->output == BS__ACT_SOFTMAX && prev < 2)
        return fail(L, "estimator.output_activation",
                    "estimator.output_activation softmax needs a last layer of at least 2 units, "
                    "got %d",
                    prev);
    m->n_outputs = m->output == BS__ACT_LOGISTIC ? 2 : prev;
    return 0;
}

/* First pass over one tree: shapes and counts, nothing allocated. */
static int count_tree(loader_t *L, const cJSON *t, int ti, long *n_nodes, long *n_leaves)
{
    char f[64];
    int rc, n, m;
    snprintf(f, sizeof f, "estimator.trees[%d]", ti);
    if (!cJSON_IsObject(t))
        return fail(L, f, "%s must be an object, got %s", f, type_name(t));
    static const char *const arrays[] = {"left", "right", "feature", "threshold", "value"};
    snprintf(f, sizeof f, "estimator.trees[%d].left", ti);
    if ((rc = get_array(L, member(t, "left"), f, 1, BS_ML_MAX_NODES, &n)))
        return rc;
    for (size_t a = 1; a < sizeof arrays / sizeof *arrays; a++) {
        snprintf(f, sizeof f, "estimator.trees[%d].%s", ti, arrays[a]);
        if ((rc = get_array(L, member(t, arrays[a]), f, n, n, &m)))
            return rc;
    }
    const cJSON *ml = member(t, "missing_left");
    if (ml && !cJSON_IsNull(ml)) {
        snprintf(f, sizeof f, "estimator.trees[%d].missing_left", ti);
        if ((rc = get_array(L, ml, f, n, n, &m)))
            return rc;
    }
    *n_nodes += n;
    if (*n_nodes > BS_ML_MAX_NODES)
        return fail(L, "estimator.trees", "estimator.trees hold more than %d nodes in total",
                    BS_ML_MAX_NODES);
    const cJSON *e;
    cJSON_ArrayForEach(e, member(t, "left"))
    {
        if (cJSON_IsNumber(e) && e->valuedouble == -1)
            (*n_leaves)++;
    }
    return 0;
}

static int fill_tree(loader_t *L, const cJSON *t, int ti, bs__tree_ensemble_t *E, int64_t *node0,
                     int64_t *leaf0, int n_in)
{
    char f[96];
    int rc;
    int n = cJSON_GetArraySize(member(t, "left"));
    /* walk the parallel arrays together */
    const cJSON *lc = member(t, "left")->child, *rc_ = member(t, "right")->child,
                *fc = member(t, "feature")->child, *tc = member(t, "threshold")->child,
                *vc = member(t, "value")->child;
    const cJSON *ml = member(t, "missing_left");
    const cJSON *mc = (ml && cJSON_IsArray(ml)) ? ml->child : NULL;
    int64_t base = *node0;
    for (int i = 0; i < n; i++) {
        bs__tree_node_t *N = &E->nodes[base + i];
        long l, r;
        snprintf(f, sizeof f, "estimator.trees[%d].left[%d]", ti, i);
        if ((rc = get_int(L, lc, f, -1, n - 1, &l)))
            return rc;
        snprintf(f, sizeof f, "estimator.trees[%d].right[%d]", ti, i);
        if ((rc = get_int(L, rc_, f, -1, n - 1, &r)))
            return rc;
        if (l == -1 || r == -1) {
            if (l != r)
                return fail(L, f, "estimator.trees[%d] node %d has left %ld and right %ld; a "
                                  "leaf has both -1",
                            ti, i, l, r);
            snprintf(f, sizeof f, "estimator.trees[%d].value[%d]", ti, i);
            if (*leaf0 + E->leaf_width > (int64_t)UINT32_MAX)
                return fail(L, f, "estimator.trees hold more than %u leaf values", UINT32_MAX);
            if ((rc = get_numbers(L, vc, f, E->leaf_width, E->leaf_values + *leaf0)))
                return rc;
            N->feature = -1;
            N->left = N->right = -1;
            N->value_offset = (uint32_t)*leaf0;
            *leaf0 += E->leaf_width;
        } else {
            if (l <= i || r <= i)
                return fail(L, f, "estimator.trees[%d] node %d links to %ld and %ld; children "
                                  "must come after their parent (no cycles)",
                            ti, i, l, r);
            long feat;
            snprintf(f, sizeof f, "estimator.trees[%d].feature[%d]", ti, i);
            if ((rc = get_int(L, fc, f, 0, n_in - 1, &feat)))
                return rc;
            snprintf(f, sizeof f, "estimator.trees[%d].threshold[%d]", ti, i);
            if ((rc = get_number(L, tc, f, &N->threshold)))
                return rc;
            N->feature = (int32_t)feat;
            N->left = (int32_t)(base + l);
            N->right = (int32_t)(base + r);
            if (mc) {
                long d;
                snprintf(f, sizeof f, "estimator.trees[%d].missing_left[%d]", ti, i);
                if ((rc = get_int(L, mc, f, 0, 1, &d)))
                    return rc;
                N->default_left = (uint8_t)d;
            }
        }
        lc = lc->next;
        rc_ = rc_->next;
        fc = fc->next;
        tc = tc->next;
        vc = vc->next;
        if (mc)
            mc = mc->next;
    }
    *node0 += n;
    return 0;
}

static int parse_trees(loader_t *L, const cJSON *est, int n_in)
{
    int rc, n_groups, n_trees;
    double scale = 1.0;
    bs__tree_ensemble_t *E = xcalloc(L, 1, sizeof *E, &rc);
    if (!E)
        return rc;
    L->pl->trees = E;
    E->n_features = n_in;
    E->split_rule = BS__TREE_LE;
    const cJSON *base = member(est, "base");
    if ((rc = get_array(L, base, "estimator.base", 1, BS_ML_MAX_OUTPUTS, &n_groups)))
        return rc;
    E->n_groups = n_groups;
    if (!(E->base = xcalloc(L, (size_t)n_groups, sizeof(double), &rc)))
        return rc;
    if ((rc = get_numbers(L, base, "estimator.base", n_groups, E->base)))
        return rc;
    const cJSON *lw = member(est, "leaf_width");
    long leaf_width = 1;
    if (lw && (rc = get_int(L, lw, "estimator.leaf_width", 1, n_groups, &leaf_width)))
        return rc;
    if (leaf_width != 1 && leaf_width != n_groups)
        return fail(L, "estimator.leaf_width",
                    "estimator.leaf_width is %ld, expected 1 or %d (the length of base)",
                    leaf_width, n_groups);
    E->leaf_width = (int)leaf_width;
    const cJSON *sc = member(est, "scale");
    if (sc && (rc = get_number(L, sc, "estimator.scale", &scale)))
        return rc;
    E->scale = scale;
    const char *tr = "identity";
    const cJSON *trj = member(est, "transform");
    if (trj && (rc = get_string(L, trj, "estimator.transform", &tr)))
        return rc;
    if (!strcmp(tr, "identity")) {
        E->transform = BS__TREE_IDENTITY;
        E->n_outputs = n_groups;
    } else if (!strcmp(tr, "sigmoid")) {
        if (n_groups != 1)
            return fail(L, "estimator.transform",
                        "estimator.transform sigmoid needs 1 group (base), got %d", n_groups);
        E->transform = BS__TREE_SIGMOID;
        E->n_outputs = 2;
    } else if (!strcmp(tr, "softmax")) {
        if (n_groups < 2)
            return fail(L, "estimator.transform",
                        "estimator.transform softmax needs at least 2 groups (base), got %d",
                        n_groups);
        E->transform = BS__TREE_SOFTMAX;
        E->n_outputs = n_groups;
    } else {
        return fail(L, "estimator.transform",
                    "estimator.transform is '%s', expected identity, sigmoid or softmax", tr);
    }

    const cJSON *trees = member(est, "trees");
    if ((rc = get_array(L, trees, "estimator.trees", 1, BS_ML_MAX_TREES, &n_trees)))
        return rc;
    long n_nodes = 0, n_leaves = 0;
    const cJSON *t;
    int ti = 0;
    cJSON_ArrayForEach(t, trees)
    {
        if ((rc = count_tree(L, t, ti++, &n_nodes, &n_leaves)))
            return rc;
    }
    E->n_trees = n_trees;
    if (!(E->tree_root = xcalloc(L, (size_t)n_trees, sizeof(int32_t), &rc)) ||
        !(E->tree_group = xcalloc(L, (size_t)n_trees, sizeof(int32_t), &rc)) ||
        !(E->nodes = xcalloc(L, (size_t)n_nodes, sizeof(bs__tree_node_t), &rc)) ||
        !(E->leaf_values =
              xcalloc(L, (size_t)n_leaves * (size_t)leaf_width, sizeof(double), &rc)))
        return rc;
    int64_t node0 = 0, leaf0 = 0;
    ti = 0;
    cJSON_ArrayForEach(t, trees)
    {
        const cJSON *gj = member(t, "group");
        long grp = 0;
        char f[64];
        snprintf(f, sizeof f, "estimator.trees[%d].group", ti);
        if (gj && !cJSON_IsNull(gj) && (rc = get_int(L, gj, f, 0, n_groups - 1, &grp)))
            return rc;
        if (leaf_width == 1 && n_groups > 1 && (!gj || cJSON_IsNull(gj)))
            return fail(L, f, "%s is missing; with %d groups and leaf_width 1 every tree "
                              "names its group",
                        f, n_groups);
        E->tree_group[ti] = (int32_t)grp;
        E->tree_root[ti] = (int32_t)node0;
        if ((rc = fill_tree(L, t, ti, E, &node0, &leaf0, n_in)))
            return rc;
        ti++;
    }
    E->n_nodes = node0;
    E->n_leaf_values = leaf0;
    return bs__tree_ensemble_prepare(E, L->err);
}

static int parse_estimator(loader_t *L, const cJSON *root, int *n_out, int *is_prob)
{
    const cJSON *est = member(root, "estimator");
    const char *type;
    int rc, n_in = L->pl->prep.width_out;
    if (!cJSON_IsObject(est))
        return fail(L, "estimator", "estimator must be an object, got %s", type_name(est));
    if ((rc = get_string(L, member(est, "type"), "estimator.type", &type)))
        return rc;
    if (!strcmp(type, "linear")) {
        L->pl->est_kind = BS__EST_LINEAR;
        if ((rc = parse_linear(L, est, n_in)))
            return rc;
        *n_out = L->pl->linear->n_outputs;
        *is_prob = L->pl->linear->link != BS__LINK_IDENTITY;
    } else if (!strcmp(type, "trees")) {
        L->pl->est_kind = BS__EST_TREES;
        if ((rc = parse_trees(L, est, n_in)))
            return rc;
        *n_out = L->pl->trees->n_outputs;
        *is_prob = -1; /* identity trees may be a forest classifier or a regressor */
        if (L->pl->trees->transform != BS__TREE_IDENTITY)
            *is_prob = 1;
        L->pl->est_nan_ok = 1;
    } else if (!strcmp(type, "mlp")) {
        L->pl->est_kind = BS__EST_MLP;
        if ((rc = parse_mlp(L, est, n_in)))
            return rc;
        *n_out = L->pl->mlp->n_outputs;
        *is_prob = L->pl->mlp->output != BS__ACT_IDENTITY;
    } else {
        return fail(L, "estimator.type", "estimator.type is '%s', expected linear, trees or mlp",
                    type);
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static int parse_output(loader_t *L, const cJSON *root, int n_out, int is_prob)
{
    const cJSON *out = member(root, "output");
    const char *task;
    int rc, n;
    if (!cJSON_IsObject(out))
        return fail(L, "output", "output must be an object, got %s", type_name(out));
    if ((rc = get_string(L, member(out, "task"), "output.task", &task)))
        return rc;
    if (!strcmp(task, "regression")) {
        if (is_prob == 1)
            return fail(L, "output.task", "output.task is regression but the estimator ends in "
                                          "a probability link");
        const cJSON *no = member(out, "n_outputs");
        long k = n_out;
        if (no && (rc = get_int(L, no, "output.n_outputs", 1, BS_ML_MAX_OUTPUTS, &k)))
            return rc;
        if (k != n_out)
            return fail(L, "output.n_outputs",
                        "output.n_outputs is %ld but the estimator produces %d", k, n_out);
        L->schema.task = BS_ML_REGRESSION;
        L->schema.n_outputs = n_out;
        return 0;
    }
    if (strcmp(task, "classification"))
        return fail(L, "output.task", "output.task is '%s', expected regression or classification",
                    task);
    if (is_prob == 0)
        return fail(L, "output.task", "output.task is classification but the estimator has an "
                                      "identity output; use a logistic, softmax or ovr link");
    const cJSON *labels = member(out, "labels");
    if ((rc = get_array(L, labels, "output.labels", 2, BS_ML_MAX_OUTPUTS, &n)))
        return rc;
    if (n != n_out)
        return fail(L, "output.labels", "output.labels has %d labels but the estimator produces "
                                        "%d class probabilities",
                    n, n_out);
    if (!(L->schema.labels = xcalloc(L, (size_t)n, sizeof(char *), &rc)))
        return rc;
    L->schema.task = BS_ML_CLASSIFICATION;
    L->schema.n_outputs = n;
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, labels)
    {
        char f[64];
        const char *s;
        snprintf(f, sizeof f, "output.labels[%d]", i);
        if ((rc = get_string(L, e, f, &s)))
            return rc;
        if (!(L->schema.labels[i] = strdup(s)))
            return oom(L, strlen(s) + 1);
        i++;
    }
    return check_unique(L, L->schema.labels, n, "output.labels", "label");
}

/* ---- entry point ------------------------------------------------------------------------- */

static int load(loader_t *L, const cJSON *root)
{
    int rc, n_out = 0, is_prob = 0;
    if (!cJSON_IsObject(root))
        return fail(L, "basalt_model", "a basalt model must be a json object, got %s",
                    type_name(root));
    const cJSON *ver = member(root, "basalt_model");
    if (!ver)
        return fail(L, "basalt_model", "basalt_model is missing: not a basalt model file");
    if (!cJSON_IsNumber(ver))
        return fail(L, "basalt_model", "basalt_model must be the format version number 1, got %s",
                    type_name(ver));
    if (ver->valuedouble != 1)
        return fail(L, "basalt_model",
                    "basalt_model version %g is not supported (this build reads version 1)",
                    ver->valuedouble);
    if ((rc = parse_inputs(L, root)))
        return rc;
    if (!(L->pl = xcalloc(L, 1, sizeof *L->pl, &rc)))
        return rc;
    if ((rc = parse_preprocess(L, root)) || (rc = parse_estimator(L, root, &n_out, &is_prob)) ||
        (rc = parse_output(L, root, n_out, is_prob)))
        return rc;
    L->pl->n_outputs = n_out;
    return 0;
}

bs_ml_model_t *bs__ml_load_basalt_json(const void *bytes, size_t len, bs_err_t *err)
{
    loader_t L = {.err = err};
    const char *end = NULL;
    if (!bytes || len == 0) {
        bs_err_setf(err, BS_EINVAL, "basalt_model", "model json is empty");
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(bytes, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - (const char *)bytes) : 0;
        bs_err_setf(err, BS_EINVAL, "basalt_model",
                    "model json is malformed or truncated at byte %zu of %zu", at, len);
        return NULL;
    }
    int rc = load(&L, root);
    cJSON_Delete(root);
    free(L.by_name);
    free(L.onehot_ignore);
    free(L.onehot_error);
    /* An input takes missing values when no NaN from it can reach a one-hot step, nor an
     * estimator column unless the estimator copes with NaN (trees). */
    int handles_missing = 1;
    if (!rc) {
        const bs__prep_t *P = &L.pl->prep;
        for (int i = 0; i < L.schema.n_features; i++)
            L.schema.features[i].accepts_missing = !L.nan_into_onehot[i];
        if (!L.pl->est_nan_ok)
            for (int k = 0; k < P->width_out; k++)
                if (L.nan_at_output[k])
                    L.schema.features[P->out_src[k]].accepts_missing = 0;
        for (int i = 0; i < L.schema.n_features; i++)
            handles_missing &= L.schema.features[i].accepts_missing;
    }
    free(L.nan_into_onehot);
    free(L.nan_at_output);
    if (rc) {
        bs__pipeline_free(L.pl);
        bs_ml_schema_deinit(&L.schema);
        return NULL;
    }
    bs__pipeline_t *pl = L.pl;
    bs_ml_model_t *m =
        bs__ml_model_new(bs__pipeline_vtable(pl->est_kind, handles_missing), pl, &L.schema, err);
    if (m)
        pl->prep.features = bs_ml_model_schema(m)->features;
    return m;
}
