/* Request rows from JSON, validation against the signature, prediction,
 * rendering and per-version metrics; see serving.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/id.h"
#include "base/numfmt.h"
#include "serving/serving_int.h"

static const double buckets[BS__SERVING_BUCKETS] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                                    0.0005,  0.001,    0.0025,  0.005,  0.01,
                                                    0.025,   0.05,     0.1,     0.25,   0.5,
                                                    1,       5};

int bs_serving_encode_missing(const bs_model_handle_t *h, int i, double *out, const char *where,
                              bs_err_t *err)
{
    const bs_ml_feature_t *f = &h->sig.features[i];
    if (f->has_default) {
        *out = f->default_value;
        return 0;
    }
    if (f->required || !f->accepts_missing)
        return bs_err_setf(err, BS_EINVAL, f->name, "%s: required feature '%s' is missing", where,
                           f->name);
    *out = NAN;
    return 0;
}

int bs_serving_encode_value(const bs_model_handle_t *h, int i, const cJSON *v, double *out,
                            const char *where, bs_err_t *err)
{
    const bs_ml_feature_t *f = &h->sig.features[i];
    if (!v)
        return bs_serving_encode_missing(h, i, out, where, err);
    if (cJSON_IsNull(v)) {
        if (f->accepts_missing) {
            *out = NAN;
            return 0;
        }
        if (f->has_default) {
            *out = f->default_value;
            return 0;
        }
        return bs_err_setf(err, BS_EINVAL, f->name,
                           "%s: feature '%s' is null and the model cannot take a missing value there", where,
                           f->name);
    }
    double x;
    switch (f->type) {
    case BS_ML_CATEGORY: {
        char tmp[64];
        const char *s;
        if (cJSON_IsString(v)) {
            s = v->valuestring;
        } else if (cJSON_IsNumber(v)) {
            if (v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e15)
                snprintf(tmp, sizeof tmp, "%lld", (long long)v->valuedouble);
            else
                snprintf(tmp, sizeof tmp, "%.17g", v->valuedouble);
            s = tmp;
        } else {
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' must be a category string",
                               where, f->name);
        }
        for (int k = 0; k < f->n_categories; k++)
            if (strcmp(f->categories[k], s) == 0) {
                *out = k;
                return 0;
            }
        if (f->accepts_unknown) {
            *out = -1;
            return 0;
        }
        return bs_err_setf(err, BS_EINVAL, f->name,
                           "%s: feature '%s' has category '%.64s', which is not one of its %d categories",
                           where, f->name, s, f->n_categories);
    }
    case BS_ML_BOOL:
        if (cJSON_IsBool(v)) {
            *out = cJSON_IsTrue(v);
            return 0;
        }
        if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) {
            *out = v->valuedouble;
            return 0;
        }
        return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' must be true or false", where,
                           f->name);
    case BS_ML_INT:
    case BS_ML_FLOAT:
    default:
        if (!cJSON_IsNumber(v))
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' must be a number", where,
                               f->name);
        x = v->valuedouble;
        if (!isfinite(x))
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' must be finite", where,
                               f->name);
        if (f->type == BS_ML_INT && x != floor(x))
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' must be an integer, got %.17g",
                               where, f->name, x);
        if (f->has_min && x < f->min)
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' is %.17g, below its minimum %.17g",
                               where, f->name, x, f->min);
        if (f->has_max && x > f->max)
            return bs_err_setf(err, BS_EINVAL, f->name, "%s: feature '%s' is %.17g, above its maximum %.17g",
                               where, f->name, x, f->max);
        *out = x;
        return 0;
    }
}

static int named_row(const bs_model_handle_t *h, const cJSON *obj, int reject_unknown,
                     const char *skip, double *row, const char *where, bs_err_t *err)
{
    int nf = h->sig.n_features;
    /* Which features the row names (the rest get defaults or NaN). */
    unsigned char seen_small[256];
    unsigned char *seen = seen_small;
    if (nf <= 256)
        memset(seen_small, 0, (size_t)nf);
    else if (!(seen = calloc((size_t)nf, 1)))
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int rc = 0;
    for (const cJSON *c = obj->child; c && !rc; c = c->next) {
        int i = c->string ? bs_model_handle_feature(h, c->string, strlen(c->string)) : -1;
        if (i < 0) {
            if (reject_unknown && !(skip && c->string && !strcmp(c->string, skip)))
                rc = bs_err_setf(err, BS_EINVAL, c->string ? c->string : "",
                                 "%s: unknown feature '%.64s' (this model takes %d features)", where,
                                 c->string ? c->string : "", nf);
            continue;
        }
        if (seen[i]) {
            rc = bs_err_setf(err, BS_EINVAL, c->string, "%s: feature '%.64s' is given twice", where,
                             c->string);
            break;
        }
        seen[i] = 1;
        rc = bs_serving_encode_value(h, i, c, &row[i], where, err);
    }
    for (int i = 0; i < nf && !rc; i++)
        if (!seen[i])
            rc = bs_serving_encode_missing(h, i, &row[i], where, err);
    if (seen != seen_small)
        free(seen);
    return rc;
}

static int positional_row(const bs_model_handle_t *h, const cJSON *arr, double *row,
                          const char *where, bs_err_t *err)
{
    int nf = h->sig.n_features, n = cJSON_GetArraySize(arr);
    if (n != nf)
        return bs_err_setf(err, BS_EINVAL, "instances", "%s has %d values, the model takes %d", where,
                           n, nf);
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        int rc = bs_serving_encode_value(h, i, c, &row[i], where, err);
        if (rc)
            return rc;
    }
    return 0;
}

int bs_serving_parse_inputs(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *body,
                            bs_arena_t *a, double **rows_out, size_t *n_rows, bs_err_t *err)
{
    return bs_serving_parse_inputs_ex(s, h, body, NULL, a, rows_out, n_rows, err);
}

int bs_serving_parse_inputs_ex(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *body,
                               const char *skip, bs_arena_t *a, double **rows_out, size_t *n_rows,
                               bs_err_t *err)
{
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object with \"inputs\" or \"instances\"");
    const cJSON *inputs = NULL, *instances = NULL;
    for (const cJSON *c = body->child; c; c = c->next) {
        if (c->string && !strcmp(c->string, "inputs"))
            inputs = c;
        else if (c->string && !strcmp(c->string, "instances"))
            instances = c;
        else if (c->string && strcmp(c->string, "parameters") != 0 && strcmp(c->string, "id") != 0)
            return bs_err_setf(err, BS_EINVAL, c->string,
                               "unknown field '%.64s'; send \"inputs\" or \"instances\"", c->string);
    }
    if (!!inputs == !!instances)
        return bs_err_setf(err, BS_EINVAL, "inputs", "send exactly one of \"inputs\" or \"instances\"");
    const cJSON *src = inputs ? inputs : instances;
    int single = cJSON_IsObject(src);
    if (!single && !cJSON_IsArray(src))
        return bs_err_setf(err, BS_EINVAL, inputs ? "inputs" : "instances",
                           "\"%s\" must be an object or an array of rows", inputs ? "inputs" : "instances");
    if (instances && single)
        return bs_err_setf(err, BS_EINVAL, "instances", "\"instances\" must be an array of rows");
    size_t n = single ? 1 : (size_t)cJSON_GetArraySize(src);
    if (n == 0)
        return bs_err_setf(err, BS_EINVAL, inputs ? "inputs" : "instances", "no rows to predict");
    if (n > (size_t)s->o.max_rows)
        return bs_err_setf(err, BS_ETOOBIG, inputs ? "inputs" : "instances",
                           "%zu rows in one request, the limit is %d", n, s->o.max_rows);
    size_t nf = (size_t)h->sig.n_features;
    double *rows = bs_arena_calloc(a, n * nf + 1, sizeof(double));
    if (!rows)
        return bs_err_set(err, BS_ENOMEM, "out of memory for %zu rows", n);
    char where[48] = "inputs";
    if (single) {
        int rc = named_row(h, src, s->o.reject_unknown, skip, rows, where, err);
        if (rc)
            return rc;
    } else {
        size_t r = 0;
        for (const cJSON *row = src->child; row; row = row->next, r++) {
            snprintf(where, sizeof where, "%s[%zu]", inputs ? "inputs" : "instances", r);
            int rc;
            if (cJSON_IsObject(row))
                rc = named_row(h, row, s->o.reject_unknown, skip, rows + r * nf, where, err);
            else if (cJSON_IsArray(row) && instances)
                rc = positional_row(h, row, rows + r * nf, where, err);
            else
                rc = bs_err_setf(err, BS_EINVAL, inputs ? "inputs" : "instances",
                                 "%s must be %s", where,
                                 inputs ? "an object of feature values" : "an array or object of feature values");
            if (rc)
                return rc;
        }
    }
    *rows_out = rows;
    *n_rows = n;
    return 0;
}

int bs_serving_parse_row(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *obj,
                         int skip_unknown, double *row, bs_err_t *err)
{
    if (!cJSON_IsObject(obj))
        return bs_err_setf(err, BS_EINVAL, "inputs", "\"inputs\" must be an object of feature values");
    return named_row(h, obj, s->o.reject_unknown && !skip_unknown, NULL, row, "inputs", err);
}

int bs_serving_predict(bs_model_handle_t *h, const double *rows, size_t n, double *out, bs_err_t *err)
{
    int rc = bs_ml_predict(h->model, rows, n, out, err);
    if (rc)
        return rc;
    /* Finite inputs can still overflow (1e308 times a weight): JSON has no inf/NaN, and a
     * null where a number is promised is no answer, so such a row is the caller's error. */
    size_t k = (size_t)h->sig.n_outputs;
    for (size_t i = 0; i < n * k; i++)
        if (!isfinite(out[i]))
            return bs_err_setf(err, BS_EINVAL, "inputs",
                               "row %zu: the model's output is not finite for these inputs "
                               "(values far outside the training range?)",
                               i / (k ? k : 1));
    return 0;
}

void bs_serving_render_value(const bs_model_handle_t *h, const double *o, bs_buf_t *b)
{
    const bs_ml_schema_t *s = &h->sig;
    int k = s->n_outputs;
    if (s->task == BS_ML_CLASSIFICATION) {
        int best = 0;
        for (int j = 1; j < k; j++)
            if (o[j] > o[best])
                best = j;
        bs_jw_obj_begin(b);
        bs_jw_key(b, "label");
        bs_jw_str(b, s->labels ? s->labels[best] : "");
        bs_jw_key(b, "probabilities");
        bs_jw_obj_begin(b);
        for (int j = 0; j < k; j++) {
            bs_jw_key(b, s->labels ? s->labels[j] : "");
            bs_jw_double(b, o[j]);
        }
        bs_jw_obj_end(b);
        bs_jw_obj_end(b);
    } else if (k == 1) {
        bs_jw_double(b, o[0]);
    } else {
        bs_jw_arr_begin(b);
        for (int j = 0; j < k; j++)
            bs_jw_double(b, o[j]);
        bs_jw_arr_end(b);
    }
}

void bs_serving_render_ex(const bs_model_handle_t *h, const double *out, size_t n,
                          const char (*ids)[37], const char *const *members, bs_buf_t *b)
{
    int k = h->sig.n_outputs;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "model");
    bs_jw_str(b, h->slot->name);
    bs_jw_key(b, "version");
    bs_jw_int(b, h->slot->version);
    for (int m = 0; members && members[m]; m += 2) {
        bs_jw_key(b, members[m]);
        bs_jw_str(b, members[m + 1] ? members[m + 1] : "");
    }
    bs_jw_key(b, "predictions");
    bs_jw_arr_begin(b);
    for (size_t r = 0; r < n; r++)
        bs_serving_render_value(h, out + r * (size_t)k, b);
    bs_jw_arr_end(b);
    bs_jw_key(b, "prediction_ids");
    bs_jw_arr_begin(b);
    for (size_t r = 0; r < n; r++) {
        char fresh[37];
        if (!ids)
            bs_uuid7(fresh);
        bs_jw_strn(b, ids ? ids[r] : fresh, 36);
    }
    bs_jw_arr_end(b);
    bs_jw_obj_end(b);
}

void bs_serving_render(const bs_model_handle_t *h, const double *out, size_t n, bs_buf_t *b)
{
    bs_serving_render_ex(h, out, n, NULL, NULL, b);
}

/* The usual row (float features whose names are JSON literals, see BS__FAST_NAME_LITERAL)
 * written as one text into a stack buffer and appended at once: no per-key escape scan or
 * strlen, one comma decision. 0 when the row needs the general writer below. */
static int render_row_plain(const bs_model_handle_t *h, const double *row, bs_buf_t *b)
{
    const bs_ml_schema_t *s = &h->sig;
    char out[4096];
    size_t n = 0;
    out[n++] = '{';
    for (int i = 0; i < s->n_features; i++) {
        if (s->features[i].type == BS_ML_CATEGORY || !(h->fast[i] & BS__FAST_NAME_LITERAL))
            return 0;
        size_t len = h->name_len[i];
        if (n + len + 4 + 32 + 1 > sizeof out)
            return 0;
        if (i)
            out[n++] = ',';
        out[n++] = '"';
        memcpy(out + n, s->features[i].name, len);
        n += len;
        out[n++] = '"';
        out[n++] = ':';
        if (!isfinite(row[i])) { /* a missing value */
            memcpy(out + n, "null", 4);
            n += 4;
            continue;
        }
        int k = bs_fmt_json_double(row[i], out + n);
        if (!k)
            return 0;
        n += (size_t)k;
    }
    out[n++] = '}';
    bs_jw_raw(b, out, n);
    return 1;
}

void bs_serving_render_row(const bs_model_handle_t *h, const double *row, bs_buf_t *b)
{
    const bs_ml_schema_t *s = &h->sig;
    if (h->fast && h->name_len && render_row_plain(h, row, b))
        return;
    bs_jw_obj_begin(b);
    for (int i = 0; i < s->n_features; i++) {
        const bs_ml_feature_t *f = &s->features[i];
        double x = row[i];
        bs_jw_key(b, f->name);
        if (f->type == BS_ML_CATEGORY) {
            /* The encoded index; -1 (an unseen category the model takes) and NaN (missing)
             * have no string: null. */
            if (isfinite(x) && x >= 0 && x < f->n_categories && x == floor(x))
                bs_jw_str(b, f->categories[(int)x]);
            else
                bs_jw_null(b);
        } else {
            bs_jw_double(b, x); /* NaN (a missing value) is written as null */
        }
    }
    bs_jw_obj_end(b);
}

int bs__stat_shard(void)
{
    static atomic_int next;
    static _Thread_local int shard = -1;
    if (shard < 0)
        shard = atomic_fetch_add(&next, 1) % BS__STAT_SHARDS;
    return shard;
}

void bs_serving_record(bs_model_handle_t *h, size_t rows, uint64_t duration_ns, int code)
{
    if (!h->slot)
        return;
    bs__slot_stats_t *st = &h->slot->stats[bs__stat_shard()];
    atomic_fetch_add_explicit(&st->requests, 1, memory_order_relaxed);
    if (code) {
        int idx = bs_err_index(code);
        atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
        if (idx >= 0)
            atomic_fetch_add_explicit(&st->errors_by_code[idx], 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&st->rows, rows, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->sum_ns, duration_ns, memory_order_relaxed);
    double secs = (double)duration_ns / 1e9;
    int b = 0;
    while (b < BS__SERVING_BUCKETS && secs > buckets[b])
        b++;
    atomic_fetch_add_explicit(&st->hist[b], 1, memory_order_relaxed);
}

/* Sum of one counter over the shards. */
#define SUM(sl, field)                                                                             \
    ({                                                                                             \
        uint64_t sum_ = 0;                                                                         \
        for (int k_ = 0; k_ < BS__STAT_SHARDS; k_++)                                               \
            sum_ += atomic_load_explicit(&(sl)->stats[k_].field, memory_order_relaxed);            \
        sum_;                                                                                      \
    })

/* The per-version families, in the order they are printed. Prometheus' text format
 * wants each family as one block (HELP, TYPE, its samples; OpenMetrics requires it and
 * prometheus_client's parser splits a family that comes back later), so one pass over
 * the slots writes each family's samples into its own buffer and the blocks are joined
 * at the end. */
enum {
    FAM_LOADED,
    FAM_MEMORY,
    FAM_LOADS,
    FAM_LOAD_FAILURES,
    FAM_EVICTIONS,
    FAM_LOAD_REJECTIONS,
    FAM_PREDICTIONS,
    FAM_ROWS,
    FAM_ERRORS,
    FAM_DURATION,
    FAM_BATCHES,
    FAM_BATCHED_ROWS,
    N_FAMS
};

static const struct {
    const char *name, *type, *help;
} families[N_FAMS] = {
    [FAM_LOADED] = {"basalt_model_loaded", "gauge", "Whether the version is loaded in memory."},
    [FAM_MEMORY] = {"basalt_model_memory_bytes", "gauge", "Memory held by the loaded version."},
    [FAM_LOADS] = {"basalt_model_loads_total", "counter",
                   "Times the version was loaded (first use, alias, after eviction)."},
    [FAM_LOAD_FAILURES] = {"basalt_model_load_failures_total", "counter",
                           "Loads that failed (missing or corrupt artifact)."},
    [FAM_EVICTIONS] = {"basalt_model_evictions_total", "counter",
                       "Times the version was evicted to stay within model_memory_bytes."},
    [FAM_LOAD_REJECTIONS] = {"basalt_model_load_rejections_total", "counter",
                             "Requests answered 503 overloaded because the version was evicted "
                             "again before they could use it."},
    [FAM_PREDICTIONS] = {"basalt_predictions_total", "counter",
                         "Predict requests per model version."},
    [FAM_ROWS] = {"basalt_prediction_rows_total", "counter", "Rows predicted per model version."},
    [FAM_ERRORS] = {"basalt_prediction_errors_total", "counter",
                    "Failed predict requests by error code."},
    [FAM_DURATION] = {"basalt_prediction_duration_seconds", "histogram",
                      "Time to validate, predict and render."},
    [FAM_BATCHES] = {"basalt_prediction_batches_total", "counter",
                     "Batches the dynamic batcher ran."},
    [FAM_BATCHED_ROWS] = {"basalt_prediction_batched_rows_total", "counter",
                          "Rows that went through the batcher."},
};

void bs_serving_metrics(bs_serving_t *s, bs_buf_t *b)
{
    bs_buf_printf(
        b,
        "# HELP basalt_models_memory_bytes Memory held by all loaded versions.\n"
        "# TYPE basalt_models_memory_bytes gauge\n"
        "basalt_models_memory_bytes %zu\n"
        "# HELP basalt_models_memory_budget_bytes Loaded versions beyond this are evicted (LRU).\n"
        "# TYPE basalt_models_memory_budget_bytes gauge\n"
        "basalt_models_memory_budget_bytes %zu\n",
        atomic_load(&s->loaded_bytes), s->o.memory_budget);
    bs_buf_t fam[N_FAMS];
    for (int f = 0; f < N_FAMS; f++)
        bs_buf_init(&fam[f]);
    pthread_mutex_lock(&s->lock);
    bs_buf_printf(b,
                  "# HELP basalt_model_versions Model versions the server routes (every tenant).\n"
                  "# TYPE basalt_model_versions gauge\n"
                  "basalt_model_versions %zu\n",
                  s->n_slots);
    for (bs__slot_t *sl = s->slots; sl; sl = sl->next) {
        /* The list holds routed slots only: a deleted model's slots are unlinked at the
         * rebuild (serving.c slot_retire), so each (tenant, model, version) is one series. */
        uint64_t req = SUM(sl, requests);
        /* Read under QSBR like peek: an unpublished handle outlives this loop iteration. */
        const bs_model_handle_t *h = atomic_load(&sl->handle);
        int loaded = h != NULL;
        /* Tenant and model names are validated to [A-Za-z0-9._-]: nothing to escape. */
        char lbl[300];
        snprintf(lbl, sizeof lbl, "tenant=\"%s\",model=\"%s\",version=\"%d\"", sl->tenant, sl->name,
                 sl->version);
        uint64_t loads = atomic_load(&sl->loads), failures = atomic_load(&sl->load_failures);
        if (loaded || req || loads || failures) {
            bs_buf_printf(&fam[FAM_LOADED], "basalt_model_loaded{%s} %d\n", lbl, loaded);
            bs_buf_printf(&fam[FAM_MEMORY], "basalt_model_memory_bytes{%s} %zu\n", lbl,
                          h ? h->memory : 0);
            bs_buf_printf(&fam[FAM_LOADS], "basalt_model_loads_total{%s} %llu\n", lbl,
                          (unsigned long long)loads);
            bs_buf_printf(&fam[FAM_LOAD_FAILURES], "basalt_model_load_failures_total{%s} %llu\n",
                          lbl, (unsigned long long)failures);
            bs_buf_printf(&fam[FAM_EVICTIONS], "basalt_model_evictions_total{%s} %llu\n", lbl,
                          (unsigned long long)atomic_load(&sl->evictions));
            bs_buf_printf(&fam[FAM_LOAD_REJECTIONS],
                          "basalt_model_load_rejections_total{%s} %llu\n", lbl,
                          (unsigned long long)atomic_load(&sl->load_rejections));
        }
        if (!req)
            continue;
        bs_buf_printf(&fam[FAM_PREDICTIONS], "basalt_predictions_total{%s} %llu\n", lbl,
                      (unsigned long long)req);
        bs_buf_printf(&fam[FAM_ROWS], "basalt_prediction_rows_total{%s} %llu\n", lbl,
                      (unsigned long long)SUM(sl, rows));
        uint64_t batches = atomic_load(&sl->batches);
        if (batches) {
            bs_buf_printf(&fam[FAM_BATCHES], "basalt_prediction_batches_total{%s} %llu\n", lbl,
                          (unsigned long long)batches);
            bs_buf_printf(&fam[FAM_BATCHED_ROWS], "basalt_prediction_batched_rows_total{%s} %llu\n",
                          lbl, (unsigned long long)atomic_load(&sl->batched_rows));
        }
        for (int i = 0; i < BS_ERR_COUNT; i++) {
            uint64_t e = SUM(sl, errors_by_code[i]);
            if (e)
                bs_buf_printf(&fam[FAM_ERRORS],
                              "basalt_prediction_errors_total{%s,code=\"%s\"} %llu\n", lbl,
                              bs_err_name(i + BS_ERR_FIRST_ + 1), (unsigned long long)e);
        }
        bs_buf_t *d = &fam[FAM_DURATION];
        uint64_t cum = 0;
        for (int k = 0; k < BS__SERVING_BUCKETS; k++) {
            cum += SUM(sl, hist[k]);
            bs_buf_printf(d, "basalt_prediction_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", lbl,
                          buckets[k], (unsigned long long)cum);
        }
        cum += SUM(sl, hist[BS__SERVING_BUCKETS]);
        bs_buf_printf(d, "basalt_prediction_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", lbl,
                      (unsigned long long)cum);
        bs_buf_printf(d, "basalt_prediction_duration_seconds_sum{%s} %.9f\n", lbl,
                      (double)SUM(sl, sum_ns) / 1e9);
        bs_buf_printf(d, "basalt_prediction_duration_seconds_count{%s} %llu\n", lbl,
                      (unsigned long long)cum);
    }
    pthread_mutex_unlock(&s->lock);
    for (int f = 0; f < N_FAMS; f++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                      families[f].name, families[f].type);
        if (fam[f].oom)
            b->oom = 1;
        if (fam[f].len)
            bs_buf_append(b, fam[f].data, fam[f].len);
        bs_buf_free(&fam[f]);
    }
}
