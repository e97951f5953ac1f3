/*
 * Loader for XGBoost's JSON model format (`Booster.save_model("m.json")`),
 * as written by XGBoost 1.x (Debian 12 ships 1.7.4), into the flat-array tree
 * ensemble of trees.c.
 *
 * What is read (paths under "learner"):
 *   learner_model_param   num_feature, num_class, num_target, base_score
 *   objective.name        picks the output transform and the base margin
 *   gradient_booster      "gbtree" {model}, or "dart" {gbtree: {model}, weight_drop}
 *   model                 gbtree_model_param.num_trees, tree_info (group of
 *                         each tree), trees[] with tree_param.num_nodes and the
 *                         per-node arrays left_children, right_children,
 *                         split_indices, split_conditions, default_left,
 *                         split_type
 *   feature_names, feature_types (optional)
 * A node is a leaf when left_children is -1; its value is split_conditions.
 * Deleted nodes (pruned by the exact method) are unreachable leaves and are
 * kept as such.
 *
 * Arithmetic follows XGBoost's CPU predictor exactly (float32_sums): the sum
 * starts at the base margin — base_score turned into margin space by the
 * objective (logit for binary:logistic and reg:logistic, log for
 * count:poisson, reg:gamma and reg:tweedie, unchanged otherwise, including
 * binary:logitraw) — and adds each tree's float leaf in model order; DART
 * multiplies each leaf by its float weight_drop first.
 *
 * Outputs: binary objectives are classifiers with columns [P(0), P(1)]
 * (binary:logitraw too: its margin is turned into a probability, since the
 * schema promises probabilities); multi:softprob and multi:softmax give
 * num_class softmax probabilities; regression objectives give the
 * prediction XGBoost's predict() returns (one column per target).
 *
 * Hostile input: every size is checked against the BS_ML_MAX_* caps and
 * against the lengths of the arrays actually present before anything is
 * allocated, so memory is bounded by the input's own size; trees are then
 * checked again by bs__tree_ensemble_validate (forward-only children).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/ml_int.h"

typedef struct {
    bs_err_t *err;
    int num_feature;
} ctx_t;

/* ---- small JSON helpers ----------------------------------------------------------------- */

static const cJSON *get_item(ctx_t *c, const cJSON *obj, const char *key, const char *path,
                             int type_ok(const cJSON *), const char *type_name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        bs_err_set(c->err, BS_EINVAL, "xgboost model: missing %s.%s", path, key);
        return NULL;
    }
    if (!type_ok(it)) {
        bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be %s", path, key, type_name);
        return NULL;
    }
    return it;
}

static int is_object(const cJSON *it)
{
    return cJSON_IsObject(it);
}

static int is_array(const cJSON *it)
{
    return cJSON_IsArray(it);
}

static int is_string(const cJSON *it)
{
    return cJSON_IsString(it) && it->valuestring;
}

static const cJSON *get_object(ctx_t *c, const cJSON *obj, const char *key, const char *path)
{
    return get_item(c, obj, key, path, is_object, "an object");
}

static const cJSON *get_array(ctx_t *c, const cJSON *obj, const char *key, const char *path)
{
    return get_item(c, obj, key, path, is_array, "an array");
}

/*
 * An integer parameter. XGBoost writes parameters as strings ("7"); numbers
 * are accepted too. Missing: *out = dflt if has_dflt, else an error.
 */
static int get_int_param(ctx_t *c, const cJSON *obj, const char *key, const char *path,
                         long long lo, long long hi, int has_dflt, long long dflt, long long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        if (has_dflt) {
            *out = dflt;
            return 0;
        }
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: missing %s.%s", path, key);
    }
    long long v;
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (!(d >= -9e15 && d <= 9e15) || d != floor(d))
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be an integer", path,
                              key);
        v = (long long)d;
    } else if (is_string(it)) {
        const char *s = it->valuestring;
        char *end;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (end == s || *end != '\0' || errno == ERANGE)
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be an integer, got '%.32s'",
                              path, key, s);
    } else {
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be an integer", path, key);
    }
    if (v < lo || v > hi)
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s is %lld, expected %lld to %lld",
                          path, key, v, lo, hi);
    *out = v;
    return 0;
}

/* A float parameter written as a string ("5E-1", or "[5E-1]" by XGBoost 2). */
static int get_float_param(ctx_t *c, const cJSON *obj, const char *key, const char *path,
                           double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it)
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: missing %s.%s", path, key);
    double v;
    if (cJSON_IsNumber(it)) {
        v = it->valuedouble;
    } else if (is_string(it)) {
        const char *s = it->valuestring;
        size_t n = strlen(s);
        int bracket = n >= 2 && s[0] == '[' && s[n - 1] == ']';
        char buf[64];
        if (n - (bracket ? 2 : 0) >= sizeof buf)
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s is too long", path, key);
        memcpy(buf, s + bracket, n - (bracket ? 2 : 0));
        buf[n - (bracket ? 2 : 0)] = '\0';
        char *end;
        v = strtod(buf, &end);
        if (end == buf || *end != '\0')
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be a number, got '%.32s'",
                              path, key, s);
    } else {
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be a number", path, key);
    }
    if (!isfinite(v))
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s.%s must be finite", path, key);
    *out = v;
    return 0;
}

/* Checks that arr has exactly n elements (stops counting past n). */
static int check_len(ctx_t *c, const cJSON *arr, long long n, const char *what, int tree)
{
    long long k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (++k > n)
            break;
    }
    if (k != n && tree < 0)
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: %s has %s%lld entries, expected %lld",
                          what, k > n ? "more than " : "", k > n ? n : k, n);
    if (k != n)
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: tree %d: %s has %s%lld entries, expected %lld", tree, what,
                          k > n ? "more than " : "", k > n ? n : k, n);
    return 0;
}

/* Reads an array of n integers in [lo, hi] (length already checked). */
static int read_ints(ctx_t *c, const cJSON *arr, int32_t *out, long long lo, long long hi,
                     const char *what, int tree)
{
    long long i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        double d = it->valuedouble;
        if (cJSON_IsBool(it))
            d = cJSON_IsTrue(it) ? 1.0 : 0.0;
        else if (!cJSON_IsNumber(it) || d != floor(d) || !(d >= (double)lo && d <= (double)hi)) {
            if (tree < 0)
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: %s[%lld] must be an integer from %lld to %lld",
                                  what, i, lo, hi);
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: tree %d: %s[%lld] must be an integer from %lld to %lld",
                              tree, what, i, lo, hi);
        }
        out[i++] = (int32_t)d;
    }
    return 0;
}

static int read_floats(ctx_t *c, const cJSON *arr, float *out, const char *what, int tree)
{
    long long i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsNumber(it) || isnan(it->valuedouble))
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: tree %d: %s[%lld] must be a number",
                              tree, what, i);
        out[i++] = (float)it->valuedouble;
    }
    return 0;
}

/* ---- objective -------------------------------------------------------------------------- */

typedef enum { BASE_AS_IS, BASE_LOGIT, BASE_LOG } base_kind_t;

typedef struct {
    const char *name;
    bs_ml_task_t task;
    bs__tree_transform_t transform;
    base_kind_t base;
    int multiclass;
} objective_t;

static const objective_t objectives[] = {
    {"binary:logistic", BS_ML_CLASSIFICATION, BS__TREE_SIGMOID, BASE_LOGIT, 0},
    {"binary:logitraw", BS_ML_CLASSIFICATION, BS__TREE_SIGMOID, BASE_AS_IS, 0},
    {"reg:logistic", BS_ML_REGRESSION, BS__TREE_SIGMOID_RAW, BASE_LOGIT, 0},
    {"reg:squarederror", BS_ML_REGRESSION, BS__TREE_IDENTITY, BASE_AS_IS, 0},
    {"reg:linear", BS_ML_REGRESSION, BS__TREE_IDENTITY, BASE_AS_IS, 0},
    {"reg:squaredlogerror", BS_ML_REGRESSION, BS__TREE_IDENTITY, BASE_AS_IS, 0},
    {"reg:pseudohubererror", BS_ML_REGRESSION, BS__TREE_IDENTITY, BASE_AS_IS, 0},
    {"reg:absoluteerror", BS_ML_REGRESSION, BS__TREE_IDENTITY, BASE_AS_IS, 0},
    {"count:poisson", BS_ML_REGRESSION, BS__TREE_EXP, BASE_LOG, 0},
    {"reg:gamma", BS_ML_REGRESSION, BS__TREE_EXP, BASE_LOG, 0},
    {"reg:tweedie", BS_ML_REGRESSION, BS__TREE_EXP, BASE_LOG, 0},
    {"multi:softprob", BS_ML_CLASSIFICATION, BS__TREE_SOFTMAX, BASE_AS_IS, 1},
    {"multi:softmax", BS_ML_CLASSIFICATION, BS__TREE_SOFTMAX, BASE_AS_IS, 1},
};

/* base_score -> base margin, in float as XGBoost's ProbToMargin computes it. */
static int base_margin(ctx_t *c, const objective_t *o, double base_score, float *out)
{
    float p = (float)base_score;
    switch (o->base) {
    case BASE_LOGIT:
        if (!(p > 0.0f && p < 1.0f))
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: base_score %g must be in (0, 1) for %s", base_score,
                              o->name);
        *out = -logf(1.0f / p - 1.0f);
        return 0;
    case BASE_LOG:
        if (!(p > 0.0f))
            return bs_err_set(c->err, BS_EINVAL, "xgboost model: base_score %g must be > 0 for %s",
                              base_score, o->name);
        *out = logf(p);
        return 0;
    default:
        *out = p;
        return 0;
    }
}

/* ---- trees ------------------------------------------------------------------------------ */

typedef struct {
    const cJSON *left, *right, *split_index, *split_cond, *default_left, *split_type;
    long long n;
} tree_json_t;

static const char *const tree_path = "learner.gradient_booster.model.trees[]";

/* First pass over one tree: shape and array lengths, nothing allocated. */
static int scan_tree(ctx_t *c, const cJSON *tree, int t, tree_json_t *tj)
{
    if (!cJSON_IsObject(tree))
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: tree %d must be an object", t);
    const cJSON *tp = get_object(c, tree, "tree_param", tree_path);
    if (!tp)
        return c->err ? c->err->code : BS_EINVAL;
    long long n, slv, id;
    int rc = get_int_param(c, tp, "num_nodes", "tree_param", 1, BS_ML_MAX_NODES, 0, 0, &n);
    if (!rc)
        rc = get_int_param(c, tp, "size_leaf_vector", "tree_param", 0, BS_ML_MAX_OUTPUTS, 1, 0, &slv);
    if (!rc)
        rc = get_int_param(c, tree, "id", tree_path, 0, BS_ML_MAX_TREES, 1, t, &id);
    if (rc)
        return rc;
    if (slv > 1)
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: tree %d has vector leaves (size_leaf_vector %lld), not "
                          "supported",
                          t, slv);
    if (id != t)
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: tree %d has id %lld", t, id);
    tj->n = n;
    struct {
        const char *key;
        const cJSON **slot;
        int optional;
    } arrays[] = {
        {"left_children", &tj->left, 0},     {"right_children", &tj->right, 0},
        {"split_indices", &tj->split_index, 0}, {"split_conditions", &tj->split_cond, 0},
        {"default_left", &tj->default_left, 0}, {"split_type", &tj->split_type, 1},
    };
    for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
        if (arrays[k].optional && !cJSON_GetObjectItemCaseSensitive(tree, arrays[k].key)) {
            *arrays[k].slot = NULL;
            continue;
        }
        const cJSON *a = get_array(c, tree, arrays[k].key, tree_path);
        if (!a)
            return c->err ? c->err->code : BS_EINVAL;
        rc = check_len(c, a, n, arrays[k].key, t);
        if (rc)
            return rc;
        *arrays[k].slot = a;
    }
    return 0;
}

/*
 * Second pass: fills nodes [first, first + n) and one leaf value per node.
 * weight: DART weight_drop of the tree (1 for gbtree).
 */
static int fill_tree(ctx_t *c, const tree_json_t *tj, int t, float weight, int32_t *scratch,
                     float *fscratch, bs__tree_node_t *nodes, double *leaf_values, int64_t first)
{
    const long long n = tj->n;
    int32_t *left = scratch, *right = scratch + n, *sidx = scratch + 2 * n, *dl = scratch + 3 * n,
            *stype = scratch + 4 * n;
    int rc = read_ints(c, tj->left, left, -1, n - 1, "left_children", t);
    if (!rc)
        rc = read_ints(c, tj->right, right, -1, n - 1, "right_children", t);
    if (!rc)
        rc = read_ints(c, tj->split_index, sidx, INT32_MIN, INT32_MAX, "split_indices", t);
    if (!rc)
        rc = read_ints(c, tj->default_left, dl, 0, 1, "default_left", t);
    if (!rc && tj->split_type)
        rc = read_ints(c, tj->split_type, stype, 0, 1, "split_type", t);
    if (!rc)
        rc = read_floats(c, tj->split_cond, fscratch, "split_conditions", t);
    if (rc)
        return rc;
    for (long long i = 0; i < n; i++) {
        bs__tree_node_t *nd = &nodes[first + i];
        if (left[i] == -1) {
            if (right[i] != -1)
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: tree %d node %lld has no left child but right "
                                  "child %d",
                                  t, i, (int)right[i]);
            nd->feature = -1;
            nd->left = nd->right = -1;
            nd->value_offset = (uint32_t)(first + i);
            nd->threshold = 0.0;
            nd->default_left = 0;
            if (!isfinite(fscratch[i]))
                return bs_err_set(c->err, BS_EINVAL, "xgboost model: tree %d leaf %lld is not finite",
                                  t, i);
            leaf_values[first + i] = (double)(weight * fscratch[i]);
            continue;
        }
        if (right[i] <= i || left[i] <= i)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: tree %d node %lld has children %d and %d, they must "
                              "come after it (up to %lld)",
                              t, i, (int)left[i], (int)right[i], n - 1);
        if (tj->split_type && stype[i] != 0)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: categorical splits are not supported (tree %d node "
                              "%lld)",
                              t, i);
        if (sidx[i] < 0 || sidx[i] >= c->num_feature)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: tree %d node %lld splits on feature %d, model has %d",
                              t, i, (int)sidx[i], c->num_feature);
        nd->feature = sidx[i];
        nd->left = (int32_t)(first + left[i]);
        nd->right = (int32_t)(first + right[i]);
        nd->value_offset = 0;
        nd->threshold = (double)fscratch[i];
        nd->default_left = (uint8_t)dl[i];
        leaf_values[first + i] = 0.0;
    }
    return 0;
}

/* ---- schema ----------------------------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static int build_schema(ctx_t *c, const cJSON *learner, const objective_t *o, int n_groups,
                        bs_ml_schema_t *s)
{
    const int nf = c->num_feature;
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(learner, "feature_names");
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(learner, "feature_types");
    if (names && !cJSON_IsArray(names))
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: learner.feature_names must be an array");
    if (types && !cJSON_IsArray(types))
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: learner.feature_types must be an array");
    int n_names = names ? cJSON_GetArraySize(names) : 0;
    int n_types = types ? cJSON_GetArraySize(types) : 0;
    if (n_names != 0 && n_names != nf)
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: %d feature names for %d features (num_feature)", n_names,
                          nf);
    if (n_types != 0 && n_types != nf)
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: %d feature types for %d features (num_feature)", n_types,
                          nf);

    s->features = calloc((size_t)nf, sizeof *s->features);
    if (!s->features)
        return bs_err_set(c->err, BS_ENOMEM, "out of memory for %d features", nf);
    s->n_features = nf;
    const cJSON *name = names ? names->child : NULL;
    const cJSON *type = types ? types->child : NULL;
    for (int i = 0; i < nf; i++) {
        bs_ml_feature_t *f = &s->features[i];
        f->required = 1;
        f->accepts_missing = 1; /* every split has a default direction */
        f->type = BS_ML_FLOAT;
        if (n_names) {
            if (!is_string(name) || name->valuestring[0] == '\0')
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: feature_names[%d] must be a non-empty string", i);
            f->name = dup_str(name->valuestring);
            name = name->next;
        } else {
            char buf[16];
            snprintf(buf, sizeof buf, "f%d", i);
            f->name = dup_str(buf);
        }
        if (!f->name)
            return bs_err_set(c->err, BS_ENOMEM, "out of memory for feature names");
        if (n_types) {
            if (!is_string(type))
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: feature_types[%d] must be a string", i);
            const char *ty = type->valuestring;
            if (strcmp(ty, "q") == 0 || strcmp(ty, "float") == 0)
                f->type = BS_ML_FLOAT;
            else if (strcmp(ty, "int") == 0)
                f->type = BS_ML_INT;
            else if (strcmp(ty, "i") == 0)
                f->type = BS_ML_BOOL;
            else if (strcmp(ty, "c") == 0)
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: feature '%.64s' is categorical (type 'c'); "
                                  "categorical splits are not supported",
                                  f->name);
            else
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: feature '%.64s' has unknown type '%.16s', "
                                  "expected q, float, int or i",
                                  f->name, ty);
            type = type->next;
        }
    }
    if (n_names > 1) { /* names must be unique: rows are matched to features by name */
        char ***idx = malloc((size_t)nf * sizeof *idx);
        if (!idx)
            return bs_err_set(c->err, BS_ENOMEM, "out of memory checking feature names");
        for (int i = 0; i < nf; i++)
            idx[i] = &s->features[i].name;
        qsort(idx, (size_t)nf, sizeof *idx, cmp_names);
        for (int i = 1; i < nf; i++) {
            if (strcmp(*idx[i - 1], *idx[i]) == 0) {
                int rc = bs_err_set(c->err, BS_EINVAL,
                                    "xgboost model: feature name '%.64s' appears more than once",
                                    *idx[i]);
                free(idx);
                return rc;
            }
        }
        free(idx);
    }

    s->task = o->task;
    if (o->task == BS_ML_CLASSIFICATION) {
        int k = o->multiclass ? n_groups : 2;
        s->labels = calloc((size_t)k, sizeof *s->labels);
        if (!s->labels)
            return bs_err_set(c->err, BS_ENOMEM, "out of memory for %d labels", k);
        s->n_outputs = k;
        for (int i = 0; i < k; i++) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", i);
            if (!(s->labels[i] = dup_str(buf)))
                return bs_err_set(c->err, BS_ENOMEM, "out of memory for labels");
        }
    } else {
        s->n_outputs = n_groups;
    }
    return 0;
}

/* ---- loader ----------------------------------------------------------------------------- */

static int load(ctx_t *c, const cJSON *root, bs__tree_ensemble_t *e, bs_ml_schema_t *schema)
{
    int rc;
    if (!cJSON_IsObject(root))
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: top level must be a JSON object");
    const cJSON *learner = get_object(c, root, "learner", "model");
    if (!learner)
        return c->err ? c->err->code : BS_EINVAL;
    const cJSON *lmp = get_object(c, learner, "learner_model_param", "learner");
    const cJSON *obj = lmp ? get_object(c, learner, "objective", "learner") : NULL;
    const cJSON *gb = obj ? get_object(c, learner, "gradient_booster", "learner") : NULL;
    if (!gb)
        return c->err ? c->err->code : BS_EINVAL;

    long long nf = 0, num_class = 0, num_target = 1;
    double base_score = 0.0;
    const char *p = "learner.learner_model_param";
    if ((rc = get_int_param(c, lmp, "num_feature", p, 1, BS_ML_MAX_FEATURES, 0, 0, &nf)) ||
        (rc = get_int_param(c, lmp, "num_class", p, 0, BS_ML_MAX_OUTPUTS, 1, 0, &num_class)) ||
        (rc = get_int_param(c, lmp, "num_target", p, 1, BS_ML_MAX_OUTPUTS, 1, 1, &num_target)) ||
        (rc = get_float_param(c, lmp, "base_score", p, &base_score)))
        return rc;
    c->num_feature = (int)nf;

    const cJSON *oname = get_item(c, obj, "name", "learner.objective", is_string, "a string");
    if (!oname)
        return c->err ? c->err->code : BS_EINVAL;
    const objective_t *o = NULL;
    for (size_t i = 0; i < sizeof objectives / sizeof objectives[0]; i++)
        if (strcmp(objectives[i].name, oname->valuestring) == 0)
            o = &objectives[i];
    if (!o)
        return bs_err_set(c->err, BS_EINVAL, "xgboost model: objective '%.64s' is not supported",
                          oname->valuestring);

    int n_groups = 1;
    if (o->multiclass) {
        if (num_class < 2)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: %s needs num_class >= 2, got %lld", o->name,
                              num_class);
        const cJSON *smp = cJSON_GetObjectItemCaseSensitive(obj, "softmax_multiclass_param");
        if (smp) {
            long long nc2;
            if ((rc = get_int_param(c, smp, "num_class", "learner.objective.softmax_multiclass_param",
                                    0, BS_ML_MAX_OUTPUTS, 1, num_class, &nc2)))
                return rc;
            if (nc2 != num_class)
                return bs_err_set(c->err, BS_EINVAL,
                                  "xgboost model: objective has num_class %lld, model has %lld",
                                  nc2, num_class);
        }
        if (num_target != 1)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: num_target is %lld, multiclass expects 1", num_target);
        n_groups = (int)num_class;
    } else {
        if (num_class > 1)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: num_class is %lld but objective %s is not multiclass",
                              num_class, o->name);
        if (num_target > 1 && o->task == BS_ML_CLASSIFICATION)
            return bs_err_set(c->err, BS_EINVAL,
                              "xgboost model: num_target is %lld, %s expects 1", num_target, o->name);
        n_groups = (int)num_target;
    }

    /* booster: gbtree, or dart wrapping a gbtree with per-tree weights */
    const cJSON *gbname = get_item(c, gb, "name", "learner.gradient_booster", is_string, "a string");
    if (!gbname)
        return c->err ? c->err->code : BS_EINVAL;
    const cJSON *weight_drop = NULL, *model;
    if (strcmp(gbname->valuestring, "gbtree") == 0) {
        model = get_object(c, gb, "model", "learner.gradient_booster");
    } else if (strcmp(gbname->valuestring, "dart") == 0) {
        const cJSON *inner = get_object(c, gb, "gbtree", "learner.gradient_booster");
        model = inner ? get_object(c, inner, "model", "learner.gradient_booster.gbtree") : NULL;
        weight_drop = model ? get_array(c, gb, "weight_drop", "learner.gradient_booster") : NULL;
        if (!weight_drop)
            model = NULL;
    } else {
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: booster '%.32s' is not supported, expected gbtree or dart",
                          gbname->valuestring);
    }
    if (!model)
        return c->err ? c->err->code : BS_EINVAL;

    const char *mp = "learner.gradient_booster.model";
    const cJSON *gmp = get_object(c, model, "gbtree_model_param", mp);
    if (!gmp)
        return c->err ? c->err->code : BS_EINVAL;
    long long n_trees, slv;
    if ((rc = get_int_param(c, gmp, "num_trees", "gbtree_model_param", 0, BS_ML_MAX_TREES, 0, 0,
                            &n_trees)) ||
        (rc = get_int_param(c, gmp, "size_leaf_vector", "gbtree_model_param", 0,
                            BS_ML_MAX_OUTPUTS, 1, 0, &slv)))
        return rc;
    if (slv > 1)
        return bs_err_set(c->err, BS_EINVAL,
                          "xgboost model: vector leaves (size_leaf_vector %lld) are not supported",
                          slv);
    const cJSON *trees = get_array(c, model, "trees", mp);
    const cJSON *tree_info = trees ? get_array(c, model, "tree_info", mp) : NULL;
    if (!tree_info)
        return c->err ? c->err->code : BS_EINVAL;
    if ((rc = check_len(c, trees, n_trees, "model.trees", -1)) ||
        (rc = check_len(c, tree_info, n_trees, "model.tree_info", -1)) ||
        (weight_drop && (rc = check_len(c, weight_drop, n_trees, "weight_drop", -1))))
        return rc;

    /* first pass: shapes, total size */
    tree_json_t *tj = calloc((size_t)n_trees + 1, sizeof *tj);
    e->tree_root = calloc((size_t)n_trees + 1, sizeof *e->tree_root);
    e->tree_group = calloc((size_t)n_trees + 1, sizeof *e->tree_group);
    float *weights = calloc((size_t)n_trees + 1, sizeof *weights);
    int32_t *scratch = NULL;
    float *fscratch = NULL;
    if (!tj || !e->tree_root || !e->tree_group || !weights) {
        rc = bs_err_set(c->err, BS_ENOMEM, "out of memory for %lld trees", n_trees);
        goto done;
    }
    e->n_trees = (int)n_trees;
    if ((rc = read_ints(c, tree_info, e->tree_group, 0, n_groups - 1, "tree_info", -1)))
        goto done;
    if (weight_drop) {
        long long i = 0;
        const cJSON *w;
        cJSON_ArrayForEach(w, weight_drop)
        {
            if (!cJSON_IsNumber(w) || !isfinite(w->valuedouble)) {
                rc = bs_err_set(c->err, BS_EINVAL, "xgboost model: weight_drop[%lld] must be a number", i);
                goto done;
            }
            weights[i++] = (float)w->valuedouble;
        }
    } else {
        for (long long i = 0; i < n_trees; i++)
            weights[i] = 1.0f;
    }
    int64_t total = 0, widest = 0;
    {
        int t = 0;
        const cJSON *tree;
        cJSON_ArrayForEach(tree, trees)
        {
            if ((rc = scan_tree(c, tree, t, &tj[t])))
                goto done;
            e->tree_root[t] = (int32_t)total;
            total += tj[t].n;
            if (tj[t].n > widest)
                widest = tj[t].n;
            if (total > BS_ML_MAX_NODES) {
                rc = bs_err_set(c->err, BS_EINVAL,
                                "xgboost model: more than %d tree nodes in total (limit)",
                                BS_ML_MAX_NODES);
                goto done;
            }
            t++;
        }
    }

    /* second pass: fill */
    e->n_nodes = total;
    e->n_leaf_values = total;
    e->nodes = calloc((size_t)total + 1, sizeof *e->nodes);
    e->leaf_values = calloc((size_t)total + 1, sizeof *e->leaf_values);
    scratch = malloc(((size_t)widest * 5 + 1) * sizeof *scratch);
    fscratch = malloc(((size_t)widest + 1) * sizeof *fscratch);
    if (!e->nodes || !e->leaf_values || !scratch || !fscratch) {
        rc = bs_err_set(c->err, BS_ENOMEM, "out of memory for %lld tree nodes", (long long)total);
        goto done;
    }
    for (int t = 0; t < e->n_trees; t++)
        if ((rc = fill_tree(c, &tj[t], t, weights[t], scratch, fscratch, e->nodes, e->leaf_values,
                            e->tree_root[t])))
            goto done;

    e->n_features = c->num_feature;
    e->n_groups = n_groups;
    e->leaf_width = 1;
    e->n_outputs = o->transform == BS__TREE_SIGMOID ? 2 : n_groups;
    e->split_rule = BS__TREE_LT;
    e->transform = o->transform;
    e->scale = 1.0;
    e->float32_sums = 1;
    e->base = calloc((size_t)n_groups, sizeof *e->base);
    if (!e->base) {
        rc = bs_err_set(c->err, BS_ENOMEM, "out of memory for %d groups", n_groups);
        goto done;
    }
    float margin = 0.0f;
    if ((rc = base_margin(c, o, base_score, &margin)))
        goto done;
    for (int k = 0; k < n_groups; k++)
        e->base[k] = margin;
    rc = build_schema(c, learner, o, n_groups, schema);
done:
    free(tj);
    free(weights);
    free(scratch);
    free(fscratch);
    return rc;
}

bs_ml_model_t *bs__ml_load_xgboost_json(const void *bytes, size_t len, bs_err_t *err)
{
    ctx_t c = {.err = err};
    bs_ml_schema_t schema = {0};
    const char *end = NULL;
    if (!bytes || len == 0) {
        bs_err_set(err, BS_EINVAL, "xgboost model: empty input");
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(bytes, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - (const char *)bytes) : 0;
        bs_err_set(err, BS_EINVAL, "xgboost model: not valid JSON (error at byte %zu of %zu)", at,
                   len);
        return NULL;
    }
    for (const char *q = end; q && q < (const char *)bytes + len; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != '\0') {
            cJSON_Delete(root);
            bs_err_set(err, BS_EINVAL, "xgboost model: unexpected data after the JSON value at byte %zu",
                       (size_t)(q - (const char *)bytes));
            return NULL;
        }
    }
    bs__tree_ensemble_t *e = calloc(1, sizeof *e);
    if (!e) {
        cJSON_Delete(root);
        bs_err_set(err, BS_ENOMEM, "out of memory for a tree ensemble");
        return NULL;
    }
    int rc = load(&c, root, e, &schema);
    cJSON_Delete(root);
    if (rc) {
        if (err && err->code == 0)
            bs_err_set(err, rc, "xgboost model: invalid");
        bs__tree_ensemble_free(e);
        bs_ml_schema_deinit(&schema);
        return NULL;
    }
    return bs__ml_model_new(&bs__tree_vtable, e, &schema, err);
}
