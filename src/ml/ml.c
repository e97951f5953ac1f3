/*
 * The model interface of ml.h: format dispatch for loading, the model wrapper
 * around a runtime vtable (ml_int.h), schema accessors and teardown, and a
 * format sniffer that reads only the top-level keys of a JSON object.
 *
 * A model is immutable once bs__ml_model_new returns it, so every accessor
 * and bs_ml_predict are safe from any number of threads.
 */
#include <stdlib.h>
#include <string.h>

#include "ml/ml_int.h"

bs_ml_model_t *bs_ml_load(const char *format, const void *bytes, size_t len, bs_err_t *err)
{
    if (!format)
        return bs_err_set(err, BS_EINVAL, "no model format given"), NULL;
    if (!bytes && len > 0)
        return bs_err_set(err, BS_EINVAL, "no model bytes given"), NULL;
    if (strcmp(format, BS_ML_FORMAT_XGBOOST_JSON) == 0)
        return bs__ml_load_xgboost_json(bytes, len, err);
    if (strcmp(format, BS_ML_FORMAT_BASALT_JSON) == 0)
        return bs__ml_load_basalt_json(bytes, len, err);
    bs_err_setf(err, BS_EINVAL, "format", "unknown model format '%.64s', expected %s or %s", format,
                BS_ML_FORMAT_XGBOOST_JSON, BS_ML_FORMAT_BASALT_JSON);
    return NULL;
}

void bs_ml_schema_deinit(bs_ml_schema_t *s)
{
    if (!s)
        return;
    for (int i = 0; s->features && i < s->n_features; i++) {
        bs_ml_feature_t *f = &s->features[i];
        free(f->name);
        for (int c = 0; f->categories && c < f->n_categories; c++)
            free(f->categories[c]);
        free(f->categories);
    }
    free(s->features);
    for (int i = 0; s->labels && i < s->n_outputs; i++)
        free(s->labels[i]);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

bs_ml_model_t *bs__ml_model_new(const bs__ml_vtable_t *vt, void *impl, bs_ml_schema_t *schema,
                                bs_err_t *err)
{
    bs_ml_model_t *m = NULL;
    if (!vt || !impl || !schema) {
        bs_err_set(err, BS_EINTERNAL, "model wrapper given no runtime or schema");
        goto fail;
    }
    if (vt->prepare) {
        int rc = vt->prepare(impl, err);
        if (rc)
            goto fail;
    }
    m = calloc(1, sizeof *m);
    if (!m) {
        bs_err_set(err, BS_ENOMEM, "out of memory for a model");
        goto fail;
    }
    m->vt = vt;
    m->impl = impl;
    m->schema = *schema;
    memset(schema, 0, sizeof *schema);
    return m;
fail:
    if (vt && impl)
        vt->free(impl);
    bs_ml_schema_deinit(schema);
    return NULL;
}

void bs_ml_model_free(bs_ml_model_t *m)
{
    if (!m)
        return;
    if (m->vt && m->impl)
        m->vt->free(m->impl);
    bs_ml_schema_deinit(&m->schema);
    free(m);
}

const bs_ml_schema_t *bs_ml_model_schema(const bs_ml_model_t *m)
{
    return m ? &m->schema : NULL;
}

int bs_ml_model_handles_missing(const bs_ml_model_t *m)
{
    return m ? m->vt->handles_missing : 0;
}

const char *bs_ml_model_kind(const bs_ml_model_t *m)
{
    return m ? m->vt->kind : "";
}

size_t bs_ml_model_memory(const bs_ml_model_t *m)
{
    if (!m)
        return 0;
    size_t bytes = sizeof *m + (size_t)m->schema.n_features * sizeof(bs_ml_feature_t);
    return bytes + (m->vt->memory ? m->vt->memory(m->impl) : 0);
}

int bs_ml_model_prefers_batching(const bs_ml_model_t *m)
{
    return m ? m->vt->prefers_batching : 0;
}

int bs_ml_predict(const bs_ml_model_t *m, const double *rows, size_t n_rows, double *out,
                  bs_err_t *err)
{
    if (!m)
        return bs_err_set(err, BS_EINVAL, "no model");
    if (n_rows == 0)
        return 0;
    if (!out || (!rows && m->schema.n_features > 0))
        return bs_err_set(err, BS_EINVAL, "predict needs input rows and an output buffer");
    return m->vt->predict(m->impl, rows, n_rows, out, err);
}

/* ---- format detection ------------------------------------------------------------------- */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] == '"': returns the index after the closing quote, or n if unterminated. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

/* Skips one value of any nesting depth; returns n on malformed input. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    size_t depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, i, n);
            if (depth == 0)
                return i;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return n;
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i; /* end of a scalar */
        }
        i++;
    }
    return depth == 0 ? i : n;
}

static int key_is(const char *s, size_t start, size_t end, const char *key)
{
    size_t k = strlen(key); /* start..end spans the quotes */
    return end - start == k + 2 && memcmp(s + start + 1, key, k) == 0;
}

const char *bs_ml_detect_format(const void *bytes, size_t len)
{
    const char *s = bytes;
    if (!s)
        return NULL;
    size_t i = 0;
    if (len >= 3 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF)
        i = 3; /* UTF-8 byte order mark */
    i = skip_ws(s, i, len);
    if (i >= len || s[i] != '{')
        return NULL;
    i++;
    for (;;) {
        i = skip_ws(s, i, len);
        if (i >= len || s[i] != '"')
            return NULL;
        size_t kstart = i;
        i = skip_string(s, i, len);
        if (i >= len)
            return NULL;
        if (key_is(s, kstart, i, "learner"))
            return BS_ML_FORMAT_XGBOOST_JSON;
        if (key_is(s, kstart, i, "basalt_model"))
            return BS_ML_FORMAT_BASALT_JSON;
        i = skip_ws(s, i, len);
        if (i >= len || s[i] != ':')
            return NULL;
        i = skip_ws(s, i + 1, len);
        i = skip_value(s, i, len);
        i = skip_ws(s, i, len);
        if (i >= len || s[i] != ',')
            return NULL;
        i++;
    }
}
