/* Signature building and rendering; see signature.h. */
#include "ml/signature.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *bs_ml_ftype_name(bs_ml_ftype_t t)
{
    switch (t) {
    case BS_ML_INT: return "int";
    case BS_ML_BOOL: return "bool";
    case BS_ML_CATEGORY: return "category";
    default: return "float";
    }
}

static int parse_ftype(const char *s)
{
    if (!strcmp(s, "float") || !strcmp(s, "double") || !strcmp(s, "number"))
        return BS_ML_FLOAT;
    if (!strcmp(s, "int") || !strcmp(s, "integer"))
        return BS_ML_INT;
    if (!strcmp(s, "bool") || !strcmp(s, "boolean"))
        return BS_ML_BOOL;
    if (!strcmp(s, "category") || !strcmp(s, "string"))
        return BS_ML_CATEGORY;
    return -1;
}

static char *dupstr(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Deep copy of a schema. */
static int copy_schema(const bs_ml_schema_t *src, bs_ml_schema_t *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->task = src->task;
    dst->n_outputs = src->n_outputs;
    dst->n_features = src->n_features;
    dst->features = calloc((size_t)src->n_features + 1, sizeof *dst->features);
    if (!dst->features)
        return BS_ENOMEM;
    for (int i = 0; i < src->n_features; i++) {
        const bs_ml_feature_t *f = &src->features[i];
        bs_ml_feature_t *g = &dst->features[i];
        *g = *f;
        g->name = dupstr(f->name);
        g->categories = NULL;
        if (f->n_categories) {
            g->categories = calloc((size_t)f->n_categories, sizeof(char *));
            if (!g->categories)
                return BS_ENOMEM;
            for (int k = 0; k < f->n_categories; k++)
                g->categories[k] = dupstr(f->categories[k]);
        }
    }
    if (src->labels) {
        dst->labels = calloc((size_t)src->n_outputs, sizeof(char *));
        if (!dst->labels)
            return BS_ENOMEM;
        for (int k = 0; k < src->n_outputs; k++)
            dst->labels[k] = dupstr(src->labels[k]);
    }
    return 0;
}

static int apply_feature(bs_ml_feature_t *f, const cJSON *o, int i, bs_err_t *err)
{
    char field[64];
    snprintf(field, sizeof field, "input_schema[%d]", i);
    if (!cJSON_IsObject(o))
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an object", field);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (name) {
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 256)
            return bs_err_setf(err, BS_EINVAL, field, "%s.name must be a string of 1-256 bytes", field);
        free(f->name);
        f->name = strdup(name->valuestring);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (type) {
        int t = cJSON_IsString(type) ? parse_ftype(type->valuestring) : -1;
        if (t < 0)
            return bs_err_setf(err, BS_EINVAL, field, "%s.type must be float, int, bool or category", field);
        if ((t == BS_ML_CATEGORY) != (f->type == BS_ML_CATEGORY))
            return bs_err_setf(err, BS_EINVAL, field,
                               "%s.type is %s but the model takes feature '%s' as %s", field,
                               bs_ml_ftype_name((bs_ml_ftype_t)t), f->name, bs_ml_ftype_name(f->type));
        f->type = (bs_ml_ftype_t)t;
    }
    const cJSON *cats = cJSON_GetObjectItemCaseSensitive(o, "categories");
    if (cats && f->type == BS_ML_CATEGORY) {
        int n = cJSON_GetArraySize(cats);
        int same = cJSON_IsArray(cats) && n == f->n_categories;
        for (int k = 0; same && k < n; k++) {
            const cJSON *c = cJSON_GetArrayItem(cats, k);
            same = cJSON_IsString(c) && strcmp(c->valuestring, f->categories[k]) == 0;
        }
        if (!same)
            return bs_err_setf(err, BS_EINVAL, field,
                               "%s.categories must equal the model's %d categories for '%s'", field,
                               f->n_categories, f->name);
    } else if (cats) {
        return bs_err_setf(err, BS_EINVAL, field, "%s.categories is only valid for category features",
                           field);
    }
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(o, "min");
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(o, "max");
    if (mn && !cJSON_IsNull(mn)) {
        if (!cJSON_IsNumber(mn) || !isfinite(mn->valuedouble))
            return bs_err_setf(err, BS_EINVAL, field, "%s.min must be a finite number", field);
        f->has_min = 1;
        f->min = mn->valuedouble;
    }
    if (mx && !cJSON_IsNull(mx)) {
        if (!cJSON_IsNumber(mx) || !isfinite(mx->valuedouble))
            return bs_err_setf(err, BS_EINVAL, field, "%s.max must be a finite number", field);
        f->has_max = 1;
        f->max = mx->valuedouble;
    }
    if (f->has_min && f->has_max && f->min > f->max)
        return bs_err_setf(err, BS_EINVAL, field, "%s.min is greater than max", field);
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(o, "required");
    if (req) {
        if (!cJSON_IsBool(req))
            return bs_err_setf(err, BS_EINVAL, field, "%s.required must be true or false", field);
        f->required = cJSON_IsTrue(req);
    }
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(o, "default");
    if (def && !cJSON_IsNull(def)) {
        double v;
        if (f->type == BS_ML_CATEGORY) {
            int idx = -1;
            for (int k = 0; cJSON_IsString(def) && k < f->n_categories; k++)
                if (strcmp(def->valuestring, f->categories[k]) == 0)
                    idx = k;
            if (idx < 0)
                return bs_err_setf(err, BS_EINVAL, field, "%s.default must be one of the categories", field);
            v = idx;
        } else if (cJSON_IsBool(def)) {
            v = cJSON_IsTrue(def);
        } else if (cJSON_IsNumber(def) && isfinite(def->valuedouble)) {
            v = def->valuedouble;
        } else {
            return bs_err_setf(err, BS_EINVAL, field, "%s.default must be a finite number", field);
        }
        f->has_default = 1;
        f->default_value = v;
        f->required = 0;
    }
    return 0;
}

int bs_ml_signature_build(const bs_ml_model_t *m, const cJSON *input, const cJSON *output,
                          bs_ml_schema_t *out, bs_err_t *err)
{
    const bs_ml_schema_t *ms = bs_ml_model_schema(m);
    if (copy_schema(ms, out) != 0) {
        bs_ml_schema_deinit(out);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    int rc = 0;
    if (input && !cJSON_IsNull(input)) {
        const cJSON *arr = cJSON_IsObject(input) ? cJSON_GetObjectItemCaseSensitive(input, "features")
                                                 : input;
        if (!cJSON_IsArray(arr)) {
            rc = bs_err_setf(err, BS_EINVAL, "input_schema",
                             "input_schema must be an array of features or {\"features\": [...]}");
            goto out;
        }
        int n = cJSON_GetArraySize(arr);
        if (n != ms->n_features) {
            rc = bs_err_setf(err, BS_EINVAL, "input_schema",
                             "input_schema has %d features, the model takes %d", n, ms->n_features);
            goto out;
        }
        int i = 0;
        for (const cJSON *o = arr->child; o; o = o->next, i++)
            if ((rc = apply_feature(&out->features[i], o, i, err)))
                goto out;
        for (int a = 0; a < out->n_features; a++)
            for (int b = a + 1; b < out->n_features; b++)
                if (strcmp(out->features[a].name, out->features[b].name) == 0) {
                    rc = bs_err_setf(err, BS_EINVAL, "input_schema",
                                     "feature name '%.64s' appears twice", out->features[a].name);
                    goto out;
                }
    }
    if (output && !cJSON_IsNull(output)) {
        if (!cJSON_IsObject(output)) {
            rc = bs_err_setf(err, BS_EINVAL, "output_schema", "output_schema must be an object");
            goto out;
        }
        const cJSON *task = cJSON_GetObjectItemCaseSensitive(output, "task");
        if (task) {
            const char *want = out->task == BS_ML_CLASSIFICATION ? "classification" : "regression";
            if (!cJSON_IsString(task) || strcmp(task->valuestring, want) != 0) {
                rc = bs_err_setf(err, BS_EINVAL, "output_schema.task",
                                 "output_schema.task must be '%s' for this model", want);
                goto out;
            }
        }
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(output, "labels");
        if (labels) {
            if (out->task != BS_ML_CLASSIFICATION || !cJSON_IsArray(labels) ||
                cJSON_GetArraySize(labels) != out->n_outputs) {
                rc = bs_err_setf(err, BS_EINVAL, "output_schema.labels",
                                 "output_schema.labels must list %d class labels for this %s model",
                                 out->n_outputs,
                                 out->task == BS_ML_CLASSIFICATION ? "classification" : "regression");
                goto out;
            }
            int k = 0;
            for (const cJSON *l = labels->child; l; l = l->next, k++) {
                char tmp[64];
                const char *v = NULL;
                if (cJSON_IsString(l))
                    v = l->valuestring;
                else if (cJSON_IsNumber(l)) {
                    snprintf(tmp, sizeof tmp, "%.17g", l->valuedouble);
                    v = tmp;
                }
                if (!v) {
                    rc = bs_err_setf(err, BS_EINVAL, "output_schema.labels",
                                     "class labels must be strings or numbers");
                    goto out;
                }
                free(out->labels[k]);
                out->labels[k] = strdup(v);
            }
        }
    }
out:
    if (rc)
        bs_ml_schema_deinit(out);
    return rc;
}

void bs_ml_signature_render(const bs_ml_schema_t *s, int handles_missing, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "inputs");
    bs_jw_arr_begin(b);
    for (int i = 0; i < s->n_features; i++) {
        const bs_ml_feature_t *f = &s->features[i];
        bs_jw_obj_begin(b);
        bs_jw_key(b, "name");
        bs_jw_str(b, f->name);
        bs_jw_key(b, "type");
        bs_jw_str(b, bs_ml_ftype_name(f->type));
        if (f->has_min) {
            bs_jw_key(b, "min");
            bs_jw_double(b, f->min);
        }
        if (f->has_max) {
            bs_jw_key(b, "max");
            bs_jw_double(b, f->max);
        }
        if (f->type == BS_ML_CATEGORY) {
            bs_jw_key(b, "categories");
            bs_jw_arr_begin(b);
            for (int k = 0; k < f->n_categories; k++)
                bs_jw_str(b, f->categories[k]);
            bs_jw_arr_end(b);
            bs_jw_key(b, "accepts_unknown");
            bs_jw_bool(b, f->accepts_unknown);
        }
        bs_jw_key(b, "required");
        bs_jw_bool(b, f->required);
        bs_jw_key(b, "accepts_missing");
        bs_jw_bool(b, f->accepts_missing);
        if (f->has_default) {
            bs_jw_key(b, "default");
            if (f->type == BS_ML_CATEGORY && f->default_value >= 0 &&
                f->default_value < f->n_categories)
                bs_jw_str(b, f->categories[(int)f->default_value]);
            else
                bs_jw_double(b, f->default_value);
        }
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
    bs_jw_key(b, "outputs");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "task");
    bs_jw_str(b, s->task == BS_ML_CLASSIFICATION ? "classification" : "regression");
    bs_jw_key(b, "n_outputs");
    bs_jw_int(b, s->n_outputs);
    if (s->labels) {
        bs_jw_key(b, "labels");
        bs_jw_arr_begin(b);
        for (int k = 0; k < s->n_outputs; k++)
            bs_jw_str(b, s->labels[k]);
        bs_jw_arr_end(b);
    }
    bs_jw_obj_end(b);
    bs_jw_key(b, "handles_missing");
    bs_jw_bool(b, handles_missing);
    bs_jw_obj_end(b);
}
